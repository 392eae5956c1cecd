/**
 * Little-endian integers and LEB128 varints for the container. Readers bounds-check every byte and
 * throw DeltaFormatError, never RangeError, because the bytes come from the network.
 */
import { check, DeltaFormatError } from '../errors.ts'

/** Varints stop at 7 bytes (49 bits): every length and position we store fits, and no loop runs long. */
const MAX_VARINT_BYTES = 7

export class ByteWriter {
  private buf = new Uint8Array(256)
  private len = 0

  get length(): number {
    return this.len
  }

  private reserve(extra: number): void {
    if (this.len + extra <= this.buf.length) return
    const next = new Uint8Array(Math.max(this.buf.length * 2, this.len + extra))
    next.set(this.buf.subarray(0, this.len))
    this.buf = next
  }

  u8(v: number): void {
    this.reserve(1)
    this.buf[this.len++] = v
  }

  u32(v: number): void {
    this.reserve(4)
    writeU32(this.buf, this.len, v)
    this.len += 4
  }

  /** Unsigned 64-bit, written as two u32 halves; values stay below 2^53. */
  u64(v: number): void {
    this.u32(v % 0x1_0000_0000)
    this.u32(Math.floor(v / 0x1_0000_0000))
  }

  varint(v: number): void {
    this.reserve(MAX_VARINT_BYTES)
    while (v >= 0x80) {
      this.buf[this.len++] = (v % 0x80) | 0x80
      v = Math.floor(v / 0x80)
    }
    this.buf[this.len++] = v
  }

  /** Signed varint via zigzag, so small seeks in either direction stay one or two bytes. */
  svarint(v: number): void {
    this.varint(v >= 0 ? v * 2 : -v * 2 - 1)
  }

  bytes(b: Uint8Array): void {
    this.reserve(b.length)
    this.buf.set(b, this.len)
    this.len += b.length
  }

  finish(): Uint8Array {
    return this.buf.slice(0, this.len)
  }
}

export function writeU32(buf: Uint8Array, at: number, v: number): void {
  buf[at] = v & 0xff
  buf[at + 1] = (v >>> 8) & 0xff
  buf[at + 2] = (v >>> 16) & 0xff
  buf[at + 3] = (v >>> 24) & 0xff
}

export class ByteReader {
  pos = 0
  readonly buf: Uint8Array

  constructor(buf: Uint8Array) {
    this.buf = buf
  }

  get remaining(): number {
    return this.buf.length - this.pos
  }

  private need(n: number): void {
    // Not check(): its message would be formatted on every call, and this runs per byte.
    if (this.pos + n > this.buf.length) {
      throw new DeltaFormatError('truncated', `needs ${n} more bytes at offset ${this.pos}`)
    }
  }

  u8(): number {
    this.need(1)
    return this.buf[this.pos++]!
  }

  u32(): number {
    this.need(4)
    const b = this.buf
    const p = this.pos
    this.pos += 4
    return (b[p]! | (b[p + 1]! << 8) | (b[p + 2]! << 16) | (b[p + 3]! << 24)) >>> 0
  }

  /** Rejects anything at or above 2^53 so arithmetic on it stays exact. */
  u64(): number {
    const lo = this.u32()
    const hi = this.u32()
    // No file is 2^53 bytes long: damage, not a limit (too-large is for ApproxLimits).
    check(hi < 0x20_0000, 'bad-header', '64-bit field exceeds 2^53')
    return hi * 0x1_0000_0000 + lo
  }

  varint(): number {
    let v = 0
    let scale = 1
    for (let i = 0; i < MAX_VARINT_BYTES; i++) {
      const b = this.u8()
      v += (b & 0x7f) * scale
      if (b < 0x80) return v
      scale *= 0x80
    }
    throw new DeltaFormatError(
      'bad-varint',
      `varint longer than ${MAX_VARINT_BYTES} bytes at offset ${this.pos}`,
    )
  }

  svarint(): number {
    const u = this.varint()
    return u % 2 === 0 ? u / 2 : -(u + 1) / 2
  }
}
