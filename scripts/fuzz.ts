/**
 * `npm run fuzz [seconds-per-decoder]`: the longer fuzz run (CI runs ~2 s per decoder inside the tests).
 * Every decoder (the three delta containers, the framed delta stream, the chunk index) gets random and mutated input; only correct output or DeltaFormatError is allowed, and
 * the run fails on anything else.
 */
import { fuzzApprox } from '../delta/approx/fuzz.ts'
import { fuzzArchive } from '../delta/archive/fuzz.ts'
import { fuzzChunkIndex } from '../delta/chunking/fuzz.ts'
import { fuzzDeltaStream } from '../delta/stream/fuzz.ts'
import { fuzzVcdiff } from '../delta/vcdiff/fuzz.ts'

const seconds = Number(process.argv[2] ?? 60)
if (!Number.isFinite(seconds) || seconds <= 0 || seconds > 86_400) {
  console.error('usage: npm run fuzz -- [seconds per decoder, 1..86400]')
  process.exit(2)
}
const seed = Date.now() >>> 0
for (const [name, run] of [
  ['vcdiff', fuzzVcdiff],
  ['approx', fuzzApprox],
  ['archive', fuzzArchive],
  ['delta-stream', fuzzDeltaStream],
  ['chunk-index', fuzzChunkIndex],
] as const) {
  const report = await run(seconds, seed)
  console.log(`${name}: ${JSON.stringify(report)} (seed ${seed})`)
  // The archive fuzzer collects failures instead of throwing on the first.
  if ('failures' in report && report.failures.length > 0) process.exitCode = 1
}
