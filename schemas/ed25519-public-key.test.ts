import { ED25519_TORSION_SUBGROUP, ed25519 } from '@noble/curves/ed25519.js'
import { describe, expect, it } from 'vitest'
import { generateKeyPair } from '../client-agent/signing.ts'
import { base64Bytes, bytesBase64 } from './base64.ts'
import { Ed25519PublicKey, unusablePublicKeyProblem } from './ed25519-public-key.ts'
import { canonicalJson, meetsThreshold, verifyEnvelope } from './signed-envelope.ts'

const hexBytes = (hex: string) => Uint8Array.from(hex.match(/../g) ?? [], (pair) => Number.parseInt(pair, 16))
const withSignBit = (raw: Uint8Array) => Uint8Array.from(raw, (b, i) => (i === 31 ? b ^ 0x80 : b))

/** p + k, little-endian, for the non-canonical encodings y = p … 2^255 − 1. */
function primePlus(k: number): Uint8Array {
  const raw = hexBytes('edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f')
  raw[0] = (raw[0] ?? 0) + k
  return raw
}

describe('unusable Ed25519 public keys', () => {
  it('refuses all eight torsion points, with either sign bit', () => {
    expect(ED25519_TORSION_SUBGROUP).toHaveLength(8)
    for (const hex of ED25519_TORSION_SUBGROUP) {
      const raw = hexBytes(hex)
      expect(ed25519.Point.fromBytes(raw).isSmallOrder()).toBe(true)
      expect(unusablePublicKeyProblem(raw)).toContain('small-order')
      expect(unusablePublicKeyProblem(withSignBit(raw))).not.toBeNull()
    }
  })

  it('refuses every y from the field prime up (non-canonical; p and p + 1 are torsion points)', () => {
    for (let k = 0; k < 19; k++) {
      expect(unusablePublicKeyProblem(primePlus(k))).toContain('not a canonical')
      expect(unusablePublicKeyProblem(withSignBit(primePlus(k)))).toContain('not a canonical')
    }
  })

  it('accepts the keys deltaport keygen makes, and every other point near the refused ones', async () => {
    for (let i = 0; i < 64; i++) {
      const raw = base64Bytes((await generateKeyPair()).publicKey)
      expect(raw && unusablePublicKeyProblem(raw)).toBeNull()
    }
    // One step either side of each refused y: a point there (if any) has large order, so it is accepted.
    let decoded = 0
    for (const hex of ED25519_TORSION_SUBGROUP) {
      for (const step of [-1, 1]) {
        const raw = hexBytes(hex)
        raw[0] = ((raw[0] ?? 0) + step) & 0xff
        let point: ReturnType<typeof ed25519.Point.fromBytes> | null = null
        try {
          point = ed25519.Point.fromBytes(raw)
        } catch {
          point = null
        }
        if (!point) continue
        decoded++
        expect(unusablePublicKeyProblem(raw) === null).toBe(!point.isSmallOrder())
      }
    }
    expect(decoded).toBeGreaterThan(0)
  })

  it('the config and root schema refuse them, naming why; wrong lengths and non-base64 too', () => {
    const identity = bytesBase64(hexBytes(ED25519_TORSION_SUBGROUP[0] ?? ''))
    const refused = Ed25519PublicKey.safeParse(identity)
    expect(refused.success).toBe(false)
    expect(refused.error?.issues[0]?.message).toMatch(/small-order/)
    expect(
      Ed25519PublicKey.safeParse(bytesBase64(new Uint8Array(31).fill(7))).error?.issues[0]?.message,
    ).toMatch(/31 bytes/)
    expect(Ed25519PublicKey.safeParse('not base64!').success).toBe(false)
  })

  it('never lets a small-order key verify, though WebCrypto accepts forgeries under it', async () => {
    // Under the identity point, R = identity and S = 0 satisfy Ed25519's equation for every message.
    const identity = hexBytes('0100000000000000000000000000000000000000000000000000000000000000')
    const forged = new Uint8Array(64)
    forged[0] = 1
    const body = { _type: 'anything', version: 1 }
    const key = await crypto.subtle.importKey('raw', identity, { name: 'Ed25519' }, false, ['verify'])
    const message = new TextEncoder().encode(canonicalJson(body))
    expect(await crypto.subtle.verify({ name: 'Ed25519' }, key, forged, message)).toBe(true)

    const keyid = 'a'.repeat(64)
    const envelope = { signed: body, signatures: [{ keyid, sig: bytesBase64(forged) }] }
    const trusted = [{ keyid, publicKey: bytesBase64(identity) }]
    expect(await verifyEnvelope(envelope, trusted)).toBe(false)
    expect(await meetsThreshold(envelope, trusted, 1)).toBe(false)
  })
})
