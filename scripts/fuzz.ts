/**
 * `npm run fuzz [seconds-per-decoder] [seed]`: the longer fuzz run (CI runs ~2 s per decoder inside the tests).
 * Every decoder (the three delta containers, the framed delta stream, the chunk index, and the
 * streaming front door with misbehaving source readers) gets random and mutated input; only correct
 * output or DeltaFormatError is allowed, and the run fails on anything else. A failing decoder does not
 * stop the others. Here, unlike in the pure delta/ tests, the archive and front-door fuzzers also
 * rebuild with the agent's native DeflateEngine (Node's zlib), as the agent does.
 */
import { nativeDeflateEngine } from '../client-agent/codec/native-deflate.ts'
import { fuzzApprox } from '../delta/approx/fuzz.ts'
import { fuzzArchive } from '../delta/archive/fuzz.ts'
import { fuzzChunkIndex } from '../delta/chunking/fuzz.ts'
import { fuzzApplyStream } from '../delta/fuzz.ts'
import { fuzzDeltaStream } from '../delta/stream/fuzz.ts'
import { fuzzVcdiff } from '../delta/vcdiff/fuzz.ts'

const seconds = Number(process.argv[2] ?? 60)
const seed = process.argv[3] === undefined ? Date.now() >>> 0 : Number(process.argv[3])
if (!Number.isFinite(seconds) || seconds <= 0 || seconds > 86_400 || !Number.isSafeInteger(seed)) {
  console.error('usage: npm run fuzz -- [seconds per decoder, 1..86400] [seed]')
  process.exit(2)
}
console.log(`fuzzing ${seconds} s per decoder, seed ${seed}`)
const runs: [string, () => Promise<object>][] = [
  ['vcdiff', () => fuzzVcdiff(seconds, seed)],
  ['approx', () => fuzzApprox(seconds, seed)],
  ['archive', () => fuzzArchive(seconds, seed, nativeDeflateEngine)],
  ['delta-stream', () => fuzzDeltaStream(seconds, seed)],
  ['chunk-index', () => fuzzChunkIndex(seconds, seed)],
  ['apply-stream', () => fuzzApplyStream(seconds, seed, nativeDeflateEngine)],
]
for (const [name, run] of runs) {
  try {
    const report = await run()
    console.log(`${name}: ${JSON.stringify(report)} (seed ${seed})`)
    // The archive fuzzer collects failures instead of throwing on the first.
    if ('failures' in report && Array.isArray(report.failures) && report.failures.length > 0)
      process.exitCode = 1
  } catch (error) {
    console.log(`${name}: FAILED (seed ${seed}): ${error instanceof Error ? error.message : String(error)}`)
    process.exitCode = 1
  }
}
