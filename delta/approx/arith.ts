/**
 * The diff between a copied source range and its target bytes. Plain bytewise subtraction (bsdiff's)
 * turns one relocated pointer into different byte patterns depending on whether a carry happened, so
 * the same address shift looks different at each site. We subtract with carry instead, as if the bytes
 * were one little-endian number, but only let a carry cross a byte that actually changed: carries then
 * stay inside the relocated field and never ripple through equal bytes. Measured on esbuild 0.24.0→1
 * this shrinks the compressed diff stream by ~10%.
 *
 * The decoder knows every byte before the current one, so the rule is replayable; carry state starts
 * fresh at every copy piece.
 */

/** diff[at..] = target[t..t+len) − source[s..s+len) under the carry rule above. */
export function subtractWithCarry(
  target: Uint8Array,
  t: number,
  source: Uint8Array,
  s: number,
  len: number,
  diff: Uint8Array,
  at: number,
): void {
  let carry = 0
  for (let j = 0; j < len; j++) {
    const sb = source[s + j]!
    const tb = target[t + j]!
    const v = (tb - sb - carry) & 0xff
    diff[at + j] = v
    carry = tb !== sb && sb + v + carry > 0xff ? 1 : 0
  }
}

/** out[outAt..] = src + diff[diffAt..] under the same rule; the inverse of subtractWithCarry. */
export function addWithCarry(
  src: Uint8Array,
  diff: Uint8Array,
  diffAt: number,
  out: Uint8Array,
  outAt: number,
) {
  let carry = 0
  for (let j = 0; j < src.length; j++) {
    const sb = src[j]!
    const sum = sb + diff[diffAt + j]! + carry
    const tb = sum & 0xff
    out[outAt + j] = tb
    carry = tb !== sb && sum > 0xff ? 1 : 0
  }
}
