/**
 * The 256-entry gear table of random 32-bit words. It is part of the chunk-index format: a different
 * table cuts different chunks, so it is derived from a fixed seed (splitmix32) rather than shipped as
 * a literal, and a golden test pins it.
 */
export const GEAR = new Int32Array(256)

{
  let state = 0x9e3779b9
  for (let i = 0; i < 256; i++) {
    state = (state + 0x9e3779b9) | 0
    let z = state
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b)
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35)
    GEAR[i] = z ^ (z >>> 16)
  }
}
