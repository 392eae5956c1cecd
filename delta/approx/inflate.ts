/**
 * Inflates one stream into a buffer of exactly the size the block header promised. fflate's one-shot
 * inflate silently drops output past a caller-supplied buffer while still decoding the rest, so hostile
 * input could burn ~1000x its size in CPU; feeding the streaming inflater small slices and checking
 * the running total after each caps both the waste and the transient allocation.
 */
import { Inflate } from 'fflate'
import { check, DeltaFormatError } from '../errors.ts'

/** At most ~1032x expansion per slice: a few MiB of transient output before an overrun is noticed. */
const SLICE = 4096

export function inflateExact(compressed: Uint8Array, rawLength: number, what: string): Uint8Array {
  const out = new Uint8Array(rawLength)
  if (rawLength === 0) return out
  let written = 0
  const inflater = new Inflate((chunk) => {
    check(written + chunk.length <= rawLength, 'bad-stream', `${what} stream inflates past its declared size`)
    out.set(chunk, written)
    written += chunk.length
  })
  try {
    for (let at = 0; at < compressed.length; at += SLICE) {
      const end = Math.min(at + SLICE, compressed.length)
      inflater.push(compressed.subarray(at, end), end === compressed.length)
    }
  } catch (e) {
    if (e instanceof DeltaFormatError) throw e
    throw new DeltaFormatError('bad-stream', `${what} stream is not valid DEFLATE: ${String(e)}`)
  }
  check(written === rawLength, 'bad-stream', `${what} stream inflates to ${written}, expected ${rawLength}`)
  return out
}
