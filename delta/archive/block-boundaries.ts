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
  const room = Math.min(rawLength, Math.max(0, untilRaw)) + 1
  const s = rawInflater(compressed, room, room)
  if (!s) return []
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

/**
 * The block boundary a prefix proof settles on (recompress.ts, enginePrefixVerdict), in one inflate:
 * the last boundary at or before `until` (`within`), or when there is none, the first one at or
 * before `reach`. The same answers as `blockBoundaries(…, until).at(-1)` and then
 * `blockBoundaries(…, reach, 1)[0]`, without inflating the first `until` bytes twice when no block
 * ends that early (level-6 text: lodash's blocks hold ≈ 230 KB).
 */
export function settlingBoundary(
  compressed: Uint8Array,
  rawLength: number,
  until: number,
  reach: number,
): { boundary: BlockBoundary; within: boolean } | undefined {
  const first = Math.min(rawLength, Math.max(0, until)) + 1
  const room = Math.max(first, Math.min(rawLength, Math.max(0, reach)) + 1)
  // Output stops after `until` first, as blockBoundaries(…, until) does; more room only if needed.
  const s = rawInflater(compressed, room, first)
  if (!s) return undefined
  let within: BlockBoundary | undefined
  let extended = false
  for (;;) {
    if (zlibInflate(s, Z_BLOCK) !== Z_OK) break
    if (s.data_type & 128) {
      const boundary = { raw: s.next_out, bit: s.next_in * 8 - (s.data_type & 7) }
      if (boundary.raw <= until && !extended) within = boundary
      else if (within) break
      else return boundary.raw <= reach ? { boundary, within: false } : undefined
    }
    if (s.avail_out === 0) {
      if (within || extended || room === first) break
      extended = true
      s.avail_out = room - s.next_out
    }
  }
  return within ? { boundary: within, within: true } : undefined
}

/** A raw inflate of `compressed` into `room` bytes of output, `avail` of them open for now; null if init fails. */
function rawInflater(compressed: Uint8Array, room: number, avail: number): ZStream | null {
  const s = new ZStream()
  if (zlibInflateInit2(s, -15) !== Z_OK) return null
  s.input = compressed
  s.next_in = 0
  s.avail_in = compressed.length
  s.output = new Uint8Array(room)
  s.next_out = 0
  s.avail_out = avail
  return s
}
