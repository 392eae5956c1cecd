/**
 * CRC-32 (IEEE 802.3, the polynomial gzip and zip use). delta/stream has CRC-32C, which is a different
 * polynomial, so gzip trailers and zip headers cannot be checked with it.
 */
const TABLE = (() => {
  const table = new Uint32Array(256)
  for (let n = 0; n < 256; n++) {
    let c = n
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1
    table[n] = c >>> 0
  }
  return table
})()

/** Continues a running CRC (start from 0); returns the updated CRC as an unsigned 32-bit number. */
export function crc32Update(crc: number, bytes: Uint8Array): number {
  let c = ~crc >>> 0
  for (let i = 0; i < bytes.length; i++) c = TABLE[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8)
  return ~c >>> 0
}

export function crc32(bytes: Uint8Array): number {
  return crc32Update(0, bytes)
}
