/**
 * Puffing one deflate stream for the expanded form (expand.ts), and rebuilding it on apply: the two
 * ends of a token segment.
 */
import { encodeDeflate } from '../deflate/encode.ts'
import { tryParseDeflate } from '../deflate/parse.ts'
import type { DeflateParse } from '../deflate/parse-types.ts'
import { sameBytes } from './bytes.ts'
import { puff, unpuff } from './puff.ts'

/** Source side: the puffed form, or null when the stream cannot be taken apart. */
export function puffReference(raw: Uint8Array, compressed: Uint8Array): Uint8Array | null {
  const parsed = tryParseDeflate(compressed, raw.length, 'archive-stream')
  return parsed && puff(parsed)
}

/**
 * Target side: the puffed form of `compressed`'s parse, only if it re-encodes to exactly
 * `compressed` — the same decode and encode the client will run, so a stream accepted here rebuilds
 * bit for bit there.
 */
export function puffTarget(parsed: DeflateParse, compressed: Uint8Array): Uint8Array | null {
  const puffed = puff(parsed)
  return sameBytes(rebuildPuffed(puffed), compressed) ? puffed : null
}

/** Re-encodes a puffed stream (untrusted bytes from the inner delta: every failure is a DeltaFormatError). */
export function rebuildPuffed(puffed: Uint8Array): Uint8Array {
  return encodeDeflate(unpuff(puffed))
}
