/**
 * GF(2^8) arithmetic with the polynomial x^8+x^4+x^3+x^2+1 (0x11d) and generator 2, the field most
 * Reed-Solomon erasure codes use. Log/exp tables give O(1) multiply/divide; the full 64 KiB product
 * table lets the encoder multiply a whole block by a constant with one lookup per byte.
 */

const POLY = 0x11d

/** EXP is doubled so `EXP[log a + log b]` never needs a modulo. */
export const EXP = new Uint8Array(512)
export const LOG = new Uint8Array(256)

{
  let x = 1
  for (let i = 0; i < 255; i++) {
    EXP[i] = x
    LOG[x] = i
    x <<= 1
    if (x & 0x100) x ^= POLY
  }
  for (let i = 255; i < 512; i++) EXP[i] = EXP[i - 255]!
}

/** MUL[c * 256 + x] = c·x; `mulRow(c)` is the 256-byte slice for one constant. */
const MUL = new Uint8Array(256 * 256)
for (let c = 1; c < 256; c++) {
  const logC = LOG[c]!
  for (let x = 1; x < 256; x++) MUL[c * 256 + x] = EXP[logC + LOG[x]!]!
}

export function mulRow(c: number): Uint8Array {
  return MUL.subarray(c * 256, c * 256 + 256)
}

export function gfMul(a: number, b: number): number {
  if (a === 0 || b === 0) return 0
  return EXP[LOG[a]! + LOG[b]!]!
}

export function gfInv(a: number): number {
  if (a === 0) throw new RangeError('0 has no inverse in GF(256)')
  return EXP[255 - LOG[a]!]!
}

/** dst ^= c·src over the first `dst.length` bytes; the hot loop of both encode and reconstruct. */
export function mulAddInto(dst: Uint8Array, src: Uint8Array, c: number): void {
  const n = dst.length
  if (c === 0) return
  if (c === 1) {
    for (let i = 0; i < n; i++) dst[i]! ^= src[i]!
    return
  }
  const row = mulRow(c)
  for (let i = 0; i < n; i++) dst[i]! ^= row[src[i]!]!
}
