/**
 * Where the blocks of a raw deflate stream end: the input (raw) offset and the bit offset of every
 * block boundary, from pako's inflate stopping at each end-of-block (Z_BLOCK). Checkpoints restart
 * deflate at them (checkpoints.ts); the parameter proof compares a prefix deflate up to one
 * (recompress.ts).
 */
import { Z_BLOCK, Z_OK, ZStream, zlibInflate, zlibInflateInit2 } from 'pako'

export interface BlockBoundary {
  raw: number
  bit: number
}

/**
 * Every block boundary of `compressed`, whose inflated length is `rawLength`, in stream order. With
 * `untilRaw`, inflates only that much and returns the boundaries up to it; with `maxCount`, stops after
 * that many.
 */
export function blockBoundaries(
  compressed: Uint8Array,
  rawLength: number,
  untilRaw = rawLength,
  maxCount = Number.POSITIVE_INFINITY,
): BlockBoundary[] {
  const s = new ZStream()
  if (zlibInflateInit2(s, -15) !== Z_OK) return []
  const room = Math.min(rawLength, Math.max(0, untilRaw)) + 1
  s.input = compressed
  s.next_in = 0
  s.avail_in = compressed.length
  s.output = new Uint8Array(room)
  s.next_out = 0
  s.avail_out = room
  const out: BlockBoundary[] = []
  for (;;) {
    if (zlibInflate(s, Z_BLOCK) !== Z_OK) break
    // 128: stopped right after an end-of-block code; the low 3 bits are unused bits of the last byte.
    if (s.data_type & 128) {
      if (s.next_out > untilRaw) break
      out.push({ raw: s.next_out, bit: s.next_in * 8 - (s.data_type & 7) })
      if (out.length >= maxCount) break
    }
    // Out of room mid-block: everything up to untilRaw has been seen.
    if (s.avail_out === 0) break
  }
  return out
}
