import { expect, it } from 'vitest'
import { fuzzChunkIndex } from './fuzz.ts'

// Bounded smoke run; `fuzzChunkIndex(seconds)` is the long-running entry point for `npm run fuzz`.
it('survives 2 s of damaged and random chunk indexes', async () => {
  const report = await fuzzChunkIndex(2, 0x5eed)
  expect(report.iterations).toBeGreaterThan(1)
  expect(report.rejected).toBeGreaterThan(report.iterations * 40)
})
