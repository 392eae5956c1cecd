import { check } from '../errors.ts'
import type { ByteSource } from '../io.ts'
import { GEAR } from './gear.ts'

/**
 * FastCDC content-defined chunking: a gear rolling hash cuts where its top bits are zero, so cut
 * points follow content and an insertion only moves the cuts near it. Normalized chunking uses a
 * harder mask before `avgSize` and an easier one after, pulling sizes toward the average.
 */

export interface ChunkerOptions {
  minSize: number
  avgSize: number
  maxSize: number
}

export const DEFAULT_CHUNKER: ChunkerOptions = { minSize: 2 * 1024, avgSize: 8 * 1024, maxSize: 64 * 1024 }

interface Params extends ChunkerOptions {
  maskS: number
  maskL: number
}

/** The top `bits` bits: with a left-shifting gear hash they depend on the last 32 bytes, the widest window. */
function topBits(bits: number): number {
  return bits <= 0 ? 0 : (~0 << (32 - Math.min(bits, 32))) | 0
}

export function validateChunker(o: ChunkerOptions): ChunkerOptions {
  const ok = (v: number) => Number.isInteger(v) && v >= 64 && v <= 1 << 30
  check(
    ok(o.minSize) && ok(o.avgSize) && ok(o.maxSize),
    'chunking.bad-params',
    'sizes must be integers in 64..2^30',
  )
  check(
    o.minSize <= o.avgSize && o.avgSize <= o.maxSize,
    'chunking.bad-params',
    'need minSize <= avgSize <= maxSize',
  )
  return { minSize: o.minSize, avgSize: o.avgSize, maxSize: o.maxSize }
}

function params(o: ChunkerOptions): Params {
  const bits = Math.round(Math.log2(validateChunker(o).avgSize))
  return { ...o, maskS: topBits(bits + 2), maskL: topBits(bits - 2) }
}

/** Length of the chunk starting at `start` in bytes[start, end); `end` is the data known so far. */
function cutLength(bytes: Uint8Array, start: number, end: number, p: Params): number {
  const n = end - start
  if (n <= p.minSize) return n
  const limit = Math.min(n, p.maxSize)
  const normal = Math.min(p.avgSize, limit)
  let h = 0
  let i = p.minSize
  for (; i < normal; i++) {
    h = ((h << 1) + GEAR[bytes[start + i]!]!) | 0
    if ((h & p.maskS) === 0) return i + 1
  }
  for (; i < limit; i++) {
    h = ((h << 1) + GEAR[bytes[start + i]!]!) | 0
    if ((h & p.maskL) === 0) return i + 1
  }
  return limit
}

/** Chunk lengths of a whole buffer, in order. */
export function chunkLengths(bytes: Uint8Array, options: ChunkerOptions = DEFAULT_CHUNKER): number[] {
  const p = params(options)
  const out: number[] = []
  for (let at = 0; at < bytes.length; ) {
    const n = cutLength(bytes, at, bytes.length, p)
    out.push(n)
    at += n
  }
  return out
}

/**
 * Chunks a source front to back, holding at most 2 × maxSize bytes. A cut is final once maxSize bytes
 * past the chunk start are known, so results equal `chunkLengths` on the concatenated input.
 * Each yielded `bytes` is a fresh copy.
 */
export async function* chunkSource(
  source: ByteSource,
  options: ChunkerOptions = DEFAULT_CHUNKER,
): AsyncGenerator<{ offset: number; bytes: Uint8Array }> {
  const p = params(options)
  const buf = new Uint8Array(2 * p.maxSize)
  let len = 0
  let offset = 0
  for await (const chunk of source) {
    for (let at = 0; at < chunk.length; ) {
      const n = Math.min(buf.length - len, chunk.length - at)
      buf.set(chunk.subarray(at, at + n), len)
      len += n
      at += n
      let start = 0
      while (len - start >= p.maxSize) {
        const c = cutLength(buf, start, len, p)
        yield { offset, bytes: buf.slice(start, start + c) }
        offset += c
        start += c
      }
      buf.copyWithin(0, start, len)
      len -= start
    }
  }
  for (let start = 0; start < len; ) {
    const c = cutLength(buf, start, len, p)
    yield { offset, bytes: buf.slice(start, start + c) }
    offset += c
    start += c
  }
}
