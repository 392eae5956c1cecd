/** Bounds-checked little-endian readers and a growable writer for the container and the parsers. */
import { check, DeltaFormatError } from '../errors.ts'

export class ByteReader {
  readonly bytes: Uint8Array
  pos: number
  /** Error code used for every out-of-bounds read, so each format reports its own kind of damage. */
  readonly code: string

  constructor(bytes: Uint8Array, code: string, pos = 0) {
    this.bytes = bytes
    this.code = code
    this.pos = pos
  }

  get remaining(): number {
    return this.bytes.length - this.pos
  }

  need(n: number, what: string): void {
    check(n >= 0 && this.pos + n <= this.bytes.length, this.code, `truncated ${what}`)
  }

  u8(what = 'byte'): number {
    this.need(1, what)
    return this.bytes[this.pos++]!
  }

  u16(what = 'u16'): number {
    this.need(2, what)
    const b = this.bytes
    const v = b[this.pos]! | (b[this.pos + 1]! << 8)
    this.pos += 2
    return v
  }

  u32(what = 'u32'): number {
    this.need(4, what)
    const v = readU32(this.bytes, this.pos)
    this.pos += 4
    return v
  }

  take(n: number, what: string): Uint8Array {
    this.need(n, what)
    const out = this.bytes.subarray(this.pos, this.pos + n)
    this.pos += n
    return out
  }

  /** Unsigned LEB128, capped at 2^53 so every value is an exact JS number. */
  varint(what = 'varint'): number {
    let value = 0
    let scale = 1
    for (let i = 0; i < 8; i++) {
      const b = this.u8(what)
      value += (b & 0x7f) * scale
      check(value <= Number.MAX_SAFE_INTEGER, this.code, `${what} too large`)
      if ((b & 0x80) === 0) return value
      scale *= 128
    }
    throw new DeltaFormatError(this.code, `${what} varint too long`)
  }
  /** A zigzag varint (ByteWriter.svarint). */
  svarint(what = 'svarint'): number {
    const u = this.varint(what)
    return u % 2 === 0 ? u / 2 : -(u + 1) / 2
  }
}

export function readU32(b: Uint8Array, at: number): number {
  return (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0
}

export function readU16(b: Uint8Array, at: number): number {
  return b[at]! | (b[at + 1]! << 8)
}

export class ByteWriter {
  private buf = new Uint8Array(256)
  length = 0

  private reserve(n: number): void {
    if (this.length + n <= this.buf.length) return
    let size = this.buf.length * 2
    while (size < this.length + n) size *= 2
    const next = new Uint8Array(size)
    next.set(this.buf.subarray(0, this.length))
    this.buf = next
  }

  u8(v: number): void {
    this.reserve(1)
    this.buf[this.length++] = v & 0xff
  }

  u32(v: number): void {
    this.reserve(4)
    for (let i = 0; i < 4; i++) this.buf[this.length++] = (v >>> (8 * i)) & 0xff
  }

  varint(v: number): void {
    if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`varint out of range: ${v}`)
    while (v >= 0x80) {
      this.u8((v % 128) | 0x80)
      v = Math.floor(v / 128)
    }
    this.u8(v)
  }
  /** Zigzag: small signed numbers as small varints (0, -1, 1, -2 … → 0, 1, 2, 3 …). */
  svarint(v: number): void {
    this.varint(v >= 0 ? v * 2 : -v * 2 - 1)
  }

  bytes(b: Uint8Array): void {
    this.reserve(b.length)
    this.buf.set(b, this.length)
    this.length += b.length
  }

  finish(): Uint8Array {
    return this.buf.slice(0, this.length)
  }
}

export { concatBytes, sameBytes } from '../io.ts'
