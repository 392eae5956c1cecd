import { check, DeltaFormatError } from '../errors.ts'
import { E, NeedMore } from './errors.ts'

/** A read cursor over one contiguous buffer; `end` lets a section be read without copying it out. */
export interface Cursor {
  buf: Uint8Array
  pos: number
  end: number
}

export function cursor(buf: Uint8Array, pos = 0, end = buf.length): Cursor {
  return { buf, pos, end }
}

// RFC 3284 integers are base-128 big-endian. We cap them at 2^53 so every value stays an exact
// JS number; 8 continuation groups already exceed that, so longer encodings are rejected outright.
const MAX_GROUPS = 8

/**
 * Reads one RFC 3284 integer. Running off `end` throws NeedMore when `streaming` (the caller can
 * fetch more), otherwise a truncation error for `what`.
 */
export function readVarint(c: Cursor, what: string, streaming = false): number {
  let value = 0
  for (let i = 0; i < MAX_GROUPS; i++) {
    if (c.pos >= c.end) {
      if (streaming) throw new NeedMore(c.pos + 1)
      check(false, E.truncated, `vcdiff: input ends inside ${what}`)
    }
    const b = c.buf[c.pos++]!
    value = value * 128 + (b & 0x7f)
    if (b < 0x80) {
      // Plain if, not check(): a template message would be built for every integer decoded.
      if (!Number.isSafeInteger(value))
        throw new DeltaFormatError(E.varint, `vcdiff: ${what} does not fit in 53 bits`)
      return value
    }
  }
  check(false, E.varint, `vcdiff: ${what} is longer than ${MAX_GROUPS} bytes`)
}

export function readByte(c: Cursor, what: string, streaming = false): number {
  if (c.pos >= c.end) {
    if (streaming) throw new NeedMore(c.pos + 1)
    check(false, E.truncated, `vcdiff: input ends inside ${what}`)
  }
  return c.buf[c.pos++]!
}

export function varintLength(value: number): number {
  let n = 1
  while (value >= 128) {
    value = Math.floor(value / 128)
    n++
  }
  return n
}

/** Growable output buffer; doubling keeps appends amortised O(1) without per-byte allocation. */
export class ByteWriter {
  buf: Uint8Array
  length = 0

  constructor(initial = 1024) {
    this.buf = new Uint8Array(Math.max(16, initial))
  }

  private reserve(extra: number): void {
    const need = this.length + extra
    if (need <= this.buf.length) return
    let size = this.buf.length * 2
    while (size < need) size *= 2
    const next = new Uint8Array(size)
    next.set(this.buf.subarray(0, this.length))
    this.buf = next
  }

  byte(b: number): void {
    this.reserve(1)
    this.buf[this.length++] = b
  }

  varint(value: number): void {
    const n = varintLength(value)
    this.reserve(n)
    let at = this.length + n - 1
    this.buf[at] = value % 128
    value = Math.floor(value / 128)
    while (value > 0) {
      at--
      this.buf[at] = (value % 128) | 0x80
      value = Math.floor(value / 128)
    }
    this.length += n
  }

  bytes(src: Uint8Array, from = 0, to = src.length): void {
    const n = to - from
    this.reserve(n)
    if (n < 16) {
      for (let i = 0; i < n; i++) this.buf[this.length + i] = src[from + i]!
    } else {
      this.buf.set(src.subarray(from, to), this.length)
    }
    this.length += n
  }

  u32be(v: number): void {
    this.reserve(4)
    const b = this.buf
    const at = this.length
    b[at] = v >>> 24
    b[at + 1] = (v >>> 16) & 0xff
    b[at + 2] = (v >>> 8) & 0xff
    b[at + 3] = v & 0xff
    this.length += 4
  }

  view(): Uint8Array {
    return this.buf.subarray(0, this.length)
  }

  reset(): void {
    this.length = 0
  }
}
