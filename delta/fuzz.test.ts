import { expect, it } from 'vitest'
import { fuzzApplyStream } from './fuzz.ts'

// Bounded smoke run; `npm run fuzz` runs fuzzApplyStream for longer.
it('applyDeltaStream survives 2 s of damaged deltas and misbehaving source readers', async () => {
  const report = await fuzzApplyStream(2, 0x5eed)
  expect(report.iterations).toBeGreaterThan(100)
  expect(report.applied).toBeGreaterThan(0)
  expect(report.rejected).toBeGreaterThan(0)
})
