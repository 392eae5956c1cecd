import { base64Bytes } from './base64.ts'
import { Base64 } from './common.ts'

/**
 * Which raw Ed25519 public keys deltaport refuses to trust, whatever WebCrypto would do with them.
 *
 * A public key of small order (one of the curve's eight torsion points) is no key at all: signatures
 * that verify under it can be made without any private key, and implementations differ on whether
 * they accept them (workerd verified an all-zero signature under the all-zero key). `deltaport keygen`
 * never makes one (a real key is a multiple of the base point, of prime order), so a config, a root or
 * MAINTAINER_KEYS naming one is either a mistake or an attack, and refusing it costs nothing. Encodings
 * of y at or above the field prime p = 2^255 − 19 are refused too: RFC 8032 §5.1.3 says decoding fails
 * for them, and two of them (p and p + 1) are small-order points in disguise.
 *
 * The check is libsodium's (ge25519_has_small_order): the 32 bytes with the sign bit of x cleared are
 * compared with the y of every torsion point, so both signs are caught. The list is checked against
 * @noble/curves' torsion subgroup and isSmallOrder in the test.
 */

/** Raw Ed25519 public keys have exactly this length (RFC 8032). */
export const ED25519_PUBLIC_KEY_BYTES = 32

/** y of the torsion points (little-endian, sign bit clear): 0 and 1, ±y of the order-8 points, p − 1. */
const SMALL_ORDER_Y = [
  '0000000000000000000000000000000000000000000000000000000000000000',
  '0100000000000000000000000000000000000000000000000000000000000000',
  '26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05',
  'c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a',
  'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
].map(hexBytes)

/** The field prime p = 2^255 − 19, little-endian: the first non-canonical y. */
const FIELD_PRIME = hexBytes('edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f')

/** Why a raw public key is refused, or null for a key `deltaport keygen` could have made. */
export function unusablePublicKeyProblem(raw: Uint8Array): string | null {
  if (raw.length !== ED25519_PUBLIC_KEY_BYTES)
    return `is ${raw.length} bytes, not a ${ED25519_PUBLIC_KEY_BYTES}-byte Ed25519 public key`
  const y = Uint8Array.from(raw)
  y[31] = (y[31] ?? 0) & 0x7f
  if (!lessThan(y, FIELD_PRIME)) return 'is not a canonical Ed25519 point encoding (y ≥ 2^255 − 19)'
  if (SMALL_ORDER_Y.some((bad) => bad.every((b, i) => b === y[i])))
    return 'is a small-order Ed25519 point: anyone can forge signatures that verify under it'
  return null
}

/** A public key as configs and roots carry it: base64 of raw 32 bytes, of a usable point. */
export const Ed25519PublicKey = Base64.superRefine((text, ctx) => {
  const raw = base64Bytes(text)
  const problem = raw ? unusablePublicKeyProblem(raw) : 'is not base64'
  if (problem) ctx.addIssue({ code: 'custom', message: `public key ${problem}` })
})

/** a < b for little-endian numbers of equal length. */
function lessThan(a: Uint8Array, b: Uint8Array): boolean {
  for (let i = a.length - 1; i >= 0; i--) {
    const x = a[i] ?? 0
    const y = b[i] ?? 0
    if (x !== y) return x < y
  }
  return false
}

function hexBytes(hex: string): Uint8Array {
  return Uint8Array.from(hex.match(/../g) ?? [], (pair) => Number.parseInt(pair, 16))
}
