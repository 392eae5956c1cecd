/**
 * LSB-first bit packing as DEFLATE does it: a growable writer for the encoder, and copying or
 * comparing a bit range of a byte array (a dynamic block's header as sent).
 */
import type { HeaderBits } from './parse-types.ts'

/**
 * Writes bits least significant first. Fewer than 16 bits stay pending, so one put of up to 16 bits
 * keeps the buffer below 2^31 (a small integer for V8). The encoder's hot loop copies the fields into
 * locals and back (see encode.ts); everything else calls put.
 */
export class BitWriter {
  bytes: Uint8Array
  pos = 0
  buf = 0
  cnt = 0

  constructor(capacity: number) {
    this.bytes = new Uint8Array(capacity)
  }

  /** Makes room for `n` more bytes beyond the pending bits, growing geometrically. */
  ensure(n: number): void {
    const need = this.pos + n + 4
    if (need <= this.bytes.length) return
    const grown = new Uint8Array(Math.max(need, this.bytes.length * 2))
    grown.set(this.bytes.subarray(0, this.pos))
    this.bytes = grown
  }

  /** Appends the low `n` (0..16) bits of `value` (which must have no higher bits set). */
  put(value: number, n: number): void {
    this.buf |= value << this.cnt
    this.cnt += n
    if (this.cnt >= 16) {
      this.bytes[this.pos++] = this.buf & 255
      this.bytes[this.pos++] = (this.buf >>> 8) & 255
      this.buf >>>= 16
      this.cnt -= 16
    }
  }

  /** Pads with zero bits to the next byte boundary. */
  align(): void {
    if (this.cnt > 8) {
      this.bytes[this.pos++] = this.buf & 255
      this.bytes[this.pos++] = (this.buf >>> 8) & 255
    } else if (this.cnt > 0) this.bytes[this.pos++] = this.buf & 255
    this.buf = 0
    this.cnt = 0
  }

  /** Appends bits [0, bitLength) of `bytes`. */
  putBits(bytes: Uint8Array, bitLength: number): void {
    const whole = bitLength >>> 3
    for (let i = 0; i < whole; i++) this.put(bytes[i]!, 8)
    const rest = bitLength & 7
    if (rest > 0) this.put(bytes[whole]! & ((1 << rest) - 1), rest)
  }

  /** Bits written so far. */
  bitLength(): number {
    return this.pos * 8 + this.cnt
  }
}

/** The 8 bits of `bytes` starting at bit `bit` (zeros past the end). */
function byteAt(bytes: Uint8Array, bit: number): number {
  const i = bit >>> 3
  const shift = bit & 7
  if (shift === 0) return bytes[i] ?? 0
  return (((bytes[i] ?? 0) | ((bytes[i + 1] ?? 0) << 8)) >>> shift) & 255
}

/** Copies bits [start, end) of `bytes` into a new HeaderBits (unused high bits of the last byte zero). */
export function sliceBits(bytes: Uint8Array, start: number, end: number): HeaderBits {
  const bitLength = end - start
  const out = new Uint8Array((bitLength + 7) >>> 3)
  for (let k = 0; k < out.length; k++) out[k] = byteAt(bytes, start + 8 * k)
  const rest = bitLength & 7
  if (rest > 0) out[out.length - 1]! &= (1 << rest) - 1
  return { bytes: out, bitLength }
}

/** Whether bits [start, end) of `bytes` are exactly `header`'s bits. */
export function sameBits(bytes: Uint8Array, start: number, end: number, header: HeaderBits): boolean {
  const bitLength = end - start
  if (bitLength !== header.bitLength) return false
  const whole = bitLength >>> 3
  for (let k = 0; k < whole; k++) if (byteAt(bytes, start + 8 * k) !== header.bytes[k]) return false
  const rest = bitLength & 7
  if (rest === 0) return true
  const mask = (1 << rest) - 1
  return (byteAt(bytes, start + 8 * whole) & mask) === (header.bytes[whole]! & mask)
}
