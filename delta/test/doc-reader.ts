/**
 * What the independent readers of docs/formats (the `*-doc.test.ts` files) share: a CRC computed bit
 * by bit from the parameters a document states, and a little-endian byte reader. Nothing here comes
 * from the codec, so those readers still check the documents against the code, not the code against
 * itself.
 */

/** A reflected CRC-32 with init and final xor 0xFFFFFFFF: 0xEDB88320 (CRC-32), 0x82F63B78 (CRC32C). */
export function bitwiseCrc32(bytes: Uint8Array, reflectedPolynomial: number): number {
  let crc = 0xffffffff
  for (const b of bytes) {
    crc ^= b
    for (let i = 0; i < 8; i++) crc = crc & 1 ? (crc >>> 1) ^ reflectedPolynomial : crc >>> 1
  }
  return (crc ^ 0xffffffff) >>> 0
}

export const CRC32 = 0xedb88320
export const CRC32C = 0x82f63b78

/** Little-endian fields and LEB128 varints of at most `maxVarintBytes` bytes, as a document defines them. */
export class DocReader {
  at = 0
  readonly b: Uint8Array
  private readonly maxVarintBytes: number
  constructor(b: Uint8Array, maxVarintBytes: number) {
    this.b = b
    this.maxVarintBytes = maxVarintBytes
  }
  get left(): number {
    return this.b.length - this.at
  }
  u8(): number {
    if (this.at >= this.b.length) throw new Error('truncated')
    return this.b[this.at++]!
  }
  u32(): number {
    let v = 0
    for (let i = 0; i < 4; i++) v += this.u8() * 2 ** (8 * i)
    return v
  }
  u64(): number {
    const lo = this.u32()
    const hi = this.u32()
    if (hi >= 2 ** 21) throw new Error('u64 >= 2^53')
    return hi * 2 ** 32 + lo
  }
  varint(): number {
    let v = 0
    for (let i = 0; i < this.maxVarintBytes; i++) {
      const byte = this.u8()
      v += (byte & 0x7f) * 2 ** (7 * i)
      if (v > Number.MAX_SAFE_INTEGER) throw new Error('varint too large')
      if (byte < 0x80) return v
    }
    throw new Error(`varint longer than ${this.maxVarintBytes} bytes`)
  }
  /** Zigzag: 0, -1, 1, -2, … */
  svarint(): number {
    const u = this.varint()
    return u % 2 === 0 ? u / 2 : -(u + 1) / 2
  }
  take(n: number): Uint8Array {
    if (n > this.left) throw new Error('truncated')
    this.at += n
    return this.b.slice(this.at - n, this.at)
  }
}
