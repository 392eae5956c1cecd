import { DeltaFormatError } from '../errors.ts'
import { mutateBytes, randomBytes, rng } from '../fuzz-input.ts'
import { sameBytes } from '../io.ts'
import { buildChunkIndex, decodeChunkIndex, encodeChunkIndex } from './chunk-index.ts'

export interface ChunkIndexFuzzReport {
  iterations: number
  /** Damaged copies that still decoded: allowed only when they re-encode to the same bytes. */
  decoded: number
  rejected: number
}

/**
 * Feeds damaged chunk indexes and random bytes to the decoder for `seconds`. Allowed outcomes: a
 * DeltaFormatError, or a decode whose re-encoding is byte-identical to the input (the CRC32C held);
 * anything else throws with the seed that reproduces it.
 */
export async function fuzzChunkIndex(seconds: number, seed = Date.now()): Promise<ChunkIndexFuzzReport> {
  const report: ChunkIndexFuzzReport = { iterations: 0, decoded: 0, rejected: 0 }
  const deadline = Date.now() + seconds * 1000
  while (Date.now() < deadline) {
    const iterSeed = (seed + report.iterations * 0x632be5ab) | 0
    const r = rng(iterSeed)
    const valid = encodeChunkIndex(await buildChunkIndex(randomBytes(r, Math.floor(r() * 100_000))))
    for (let i = 0; i < 50; i++) {
      const input = r() < 0.1 ? randomBytes(r, Math.floor(r() * 300)) : mutateBytes(r, valid)
      try {
        const decoded = decodeChunkIndex(input)
        if (!sameBytes(encodeChunkIndex(decoded), input)) {
          throw new Error(
            `chunk index fuzz (seed ${iterSeed}, case ${i}): damaged bytes decoded to another index`,
          )
        }
        report.decoded++
      } catch (error) {
        if (!(error instanceof DeltaFormatError)) {
          throw new Error(`chunk index fuzz (seed ${iterSeed}, case ${i}): ${String(error)}`)
        }
        report.rejected++
      }
    }
    report.iterations++
  }
  return report
}
