// xdelta3's window checksum (Win_Indicator bit 0x04). Sums are reduced every 5552 bytes, the
// largest run that cannot overflow 32 bits, so the inner loop needs no modulo.
const MOD = 65521
const NMAX = 5552

export function adler32(data: Uint8Array, start = 0, end = data.length): number {
  let a = 1
  let b = 0
  let i = start
  while (i < end) {
    const stop = Math.min(end, i + NMAX)
    for (; i < stop; i++) {
      a += data[i]!
      b += a
    }
    a %= MOD
    b %= MOD
  }
  return ((b << 16) | a) >>> 0
}
