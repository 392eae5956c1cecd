/**
 * CRC32C (Castagnoli, reflected polynomial 0x82F63B78), table-driven slicing-by-8 so checksumming
 * every block stays well ahead of the network. Pure: no platform CRC is available in workerd.
 */

const POLY = 0x82f63b78
const TABLES = new Uint32Array(8 * 256)

for (let n = 0; n < 256; n++) {
  let c = n
  for (let b = 0; b < 8; b++) c = c & 1 ? (c >>> 1) ^ POLY : c >>> 1
  TABLES[n] = c
}
for (let t = 1; t < 8; t++) {
  for (let n = 0; n < 256; n++) {
    const prev = TABLES[(t - 1) * 256 + n]!
    TABLES[t * 256 + n] = (prev >>> 8) ^ TABLES[prev & 0xff]!
  }
}

/** Continues `crc` (the value returned by a previous call, 0 to start) over `bytes`. */
export function crc32c(bytes: Uint8Array, crc = 0): number {
  let c = ~crc >>> 0
  const n = bytes.length
  let i = 0
  const T = TABLES
  for (; i + 8 <= n; i += 8) {
    const lo = (c ^ (bytes[i]! | (bytes[i + 1]! << 8) | (bytes[i + 2]! << 16) | (bytes[i + 3]! << 24))) >>> 0
    c =
      T[7 * 256 + (lo & 0xff)]! ^
      T[6 * 256 + ((lo >>> 8) & 0xff)]! ^
      T[5 * 256 + ((lo >>> 16) & 0xff)]! ^
      T[4 * 256 + (lo >>> 24)]! ^
      T[3 * 256 + bytes[i + 4]!]! ^
      T[2 * 256 + bytes[i + 5]!]! ^
      T[256 + bytes[i + 6]!]! ^
      T[bytes[i + 7]!]!
  }
  for (; i < n; i++) c = (c >>> 8) ^ T[(c ^ bytes[i]!) & 0xff]!
  return ~c >>> 0
}
