import { expect, it } from 'vitest'
import { fuzzVcdiff } from './fuzz.ts'

// Bounded smoke run; `fuzzVcdiff(seconds)` is the long-running entry point for `npm run fuzz`.
it('survives 2 s of mutated and random deltas', async () => {
  const report = await fuzzVcdiff(2, 0x5eed)
  expect(report.iterations).toBeGreaterThan(100)
  expect(report.rejected).toBeGreaterThan(0)
  expect(report.decoded).toBeGreaterThan(0)
})
