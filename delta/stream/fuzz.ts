import { DeltaFormatError } from '../errors.ts'
import { mutateBytes, randomBytes, rng } from '../fuzz-input.ts'
import { collectingSink, sameBytes } from '../io.ts'
import { frameStream } from './frame.ts'
import { StreamReassembler } from './reassembler.ts'

export interface DeltaStreamFuzzReport {
  iterations: number
  /** Streams that verified (undamaged, or repaired by the erasure code). */
  verified: number
  rejected: number
}

/**
 * Frames random payloads, damages the wire bytes and pushes them to a reassembler in random pieces and
 * shuffled order (ranges arrive out of order on a device) for `seconds`. Allowed outcomes: a
 * DeltaFormatError, an unverified report, or a verified payload identical to the one framed; a
 * verified wrong payload or any other exception throws with the seed that reproduces it.
 */
export async function fuzzDeltaStream(seconds: number, seed = Date.now()): Promise<DeltaStreamFuzzReport> {
  const report: DeltaStreamFuzzReport = { iterations: 0, verified: 0, rejected: 0 }
  const deadline = Date.now() + seconds * 1000
  while (Date.now() < deadline) {
    const iterSeed = (seed + report.iterations * 0x632be5ab) | 0
    const r = rng(iterSeed)
    const payload = randomBytes(r, Math.floor(r() * 40_000))
    const blockSize = 512 * (1 + Math.floor(r() * 4))
    const k = 1 + Math.floor(r() * 6)
    const m = Math.floor(r() * 3)
    const wire = await frameStream(
      payload,
      { artifact: 'fuzz', fromVersion: '1.0.0', toVersion: '1.0.1', method: 'vcdiff', blockSize },
      { k, m },
    )
    const damaged = r() < 0.1 ? wire : mutateBytes(r, wire)
    const sink = collectingSink()
    const reassembler = new StreamReassembler(sink)
    try {
      const pieces: Array<[number, Uint8Array]> = []
      for (let at = 0; at < damaged.length; ) {
        const size = 1 + Math.floor(r() * 3000)
        pieces.push([at, damaged.subarray(at, at + size)])
        at += size
      }
      for (let j = pieces.length - 1; j > 0; j--) {
        const other = Math.floor(r() * (j + 1))
        const swap = pieces[j] as [number, Uint8Array]
        pieces[j] = pieces[other] as [number, Uint8Array]
        pieces[other] = swap
      }
      for (const [offset, bytes] of pieces) await reassembler.push(offset, bytes)
      if ((await reassembler.report()).payloadVerified) {
        if (!sameBytes(sink.bytes(), payload)) {
          throw new Error(`delta stream fuzz (seed ${iterSeed}): a wrong payload was reported as verified`)
        }
        report.verified++
      }
    } catch (error) {
      if (!(error instanceof DeltaFormatError)) {
        throw new Error(`delta stream fuzz (seed ${iterSeed}): ${String(error)}`)
      }
      report.rejected++
    }
    report.iterations++
  }
  return report
}
