/** Deterministic pseudo-random bytes (a 32-bit LCG's top byte): test data that is the same on every run. */
export function seededBytes(n: number, seed = 1): Uint8Array {
  const out = new Uint8Array(n)
  let s = seed
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0
    out[i] = s >>> 24
  }
  return out
}
