import { expect, it } from 'vitest'
import { fuzzDeltaStream } from './fuzz.ts'

// Bounded smoke run; `fuzzDeltaStream(seconds)` is the long-running entry point for `npm run fuzz`.
it('survives 2 s of damaged delta streams pushed out of order', async () => {
  const report = await fuzzDeltaStream(2, 0x5eed)
  expect(report.iterations).toBeGreaterThan(10)
  // Some streams verify (undamaged or repaired by FEC) and some are refused: both paths ran.
  expect(report.verified).toBeGreaterThan(0)
  expect(report.rejected).toBeGreaterThan(0)
})
