/**
 * Puffing one deflate stream for the expanded form (expand.ts), and rebuilding it on apply: the two
 * ends of a token segment.
 */
import { encodeDeflate } from '../deflate/encode.ts'
import { parseDeflate } from '../deflate/parse.ts'
import { DeltaFormatError } from '../errors.ts'
import { sameBytes } from './bytes.ts'
import { puff, unpuff } from './puff.ts'

function tryPuff(raw: Uint8Array, compressed: Uint8Array): Uint8Array | null {
  try {
    return puff(parseDeflate(compressed, raw.length, 'archive-stream'))
  } catch (err) {
    // A stream using something a token list cannot express (see delta/deflate/parse.ts).
    if (err instanceof DeltaFormatError) return null
    throw err
  }
}

/** Source side: the puffed form, or null when the stream cannot be taken apart. */
export function puffReference(raw: Uint8Array, compressed: Uint8Array): Uint8Array | null {
  return tryPuff(raw, compressed)
}

/**
 * Target side: the puffed form only if it re-encodes to exactly `compressed` — the same decode and
 * encode the client will run, so a stream accepted here rebuilds bit for bit there.
 */
export function puffTarget(raw: Uint8Array, compressed: Uint8Array): Uint8Array | null {
  const puffed = tryPuff(raw, compressed)
  return puffed !== null && sameBytes(rebuildPuffed(puffed), compressed) ? puffed : null
}

/** Re-encodes a puffed stream (untrusted bytes from the inner delta: every failure is a DeltaFormatError). */
export function rebuildPuffed(puffed: Uint8Array): Uint8Array {
  return encodeDeflate(unpuff(puffed))
}
