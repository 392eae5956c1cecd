/**
 * What a signature in an envelope (SignedManifest, SignedYankStatement, SignedIndexStatement) covers,
 * how it is made and how it is checked:
 * Ed25519 over the canonical JSON of `signed`, keys sorted and no whitespace, so signer and verifier
 * hash identical bytes whatever the transport did. WebCrypto only (no Node or Workers imports): the
 * agent verifies every envelope it uses, and the edge checks what maintainers upload against
 * MAINTAINER_KEYS (workers/publish/maintainer-keys.ts) with this same code.
 */

import { base64Bytes, bytesBase64 } from './base64.ts'
import { unusablePublicKeyProblem } from './ed25519-public-key.ts'

export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value)
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`
}

/** A signed envelope: the body plus detached signatures over its canonical JSON. */
export interface Envelope<Body> {
  signed: Body
  signatures: Array<{ keyid: string; sig: string }>
}

/** A public key a verifier accepts: raw 32-byte Ed25519 key (base64) and its keyid. */
export interface TrustedKey {
  keyid: string
  publicKey: string
}

export const ED25519 = { name: 'Ed25519' } as const
/** Raw Ed25519 signatures have exactly this length (RFC 8032). */
const ED25519_SIGNATURE_BYTES = 64

/** A key's id: sha256 (hex) of its raw 32 bytes. */
export function keyIdOf(publicRaw: Uint8Array<ArrayBuffer>): Promise<string> {
  return sha256Hex(publicRaw)
}

/** sha256 of `bytes` as lowercase hex: key ids and index digests. */
export async function sha256Hex(bytes: Parameters<typeof crypto.subtle.digest>[1]): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes))
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('')
}

/** A WebCrypto private key, named through `sign` so Node's and the Workers' typings both accept it. */
type SigningKey = Parameters<typeof crypto.subtle.sign>[1]

/**
 * The envelope verifyEnvelope checks: `body` signed with one key (Ed25519 over its canonical JSON).
 * Maintainers sign manifests and yank statements with it (client-agent/signing.ts), the edge its index
 * statements (workers/signing/index-statement.ts).
 */
export async function signEnvelope<Body>(
  body: Body,
  keyid: string,
  privateKey: SigningKey,
): Promise<Envelope<Body>> {
  const message = new TextEncoder().encode(canonicalJson(body))
  const sig = new Uint8Array(await crypto.subtle.sign(ED25519, privateKey, message))
  return { signed: body, signatures: [{ keyid, sig: bytesBase64(sig) }] }
}

/**
 * True if any signature verifies under a trusted key with the same keyid. A malformed or small-order key
 * (ed25519-public-key.ts) or a malformed signature counts as not verifying: the caller decides what an
 * unsigned document means.
 */
export async function verifyEnvelope(
  envelope: Envelope<unknown>,
  trusted: ReadonlyArray<TrustedKey>,
): Promise<boolean> {
  return meetsThreshold(envelope, trusted, 1)
}

/**
 * True if at least `threshold` distinct trusted keys each have a valid signature on the envelope
 * (root metadata's roles, ADR 0035). The same key signing twice counts once, so one stolen key cannot
 * stand in for two: keys are told apart by their public bytes, not by the keyid a list files them
 * under, so a key listed twice under two ids (a config's copy-paste slip; roots refuse it) still
 * counts once.
 */
export async function meetsThreshold(
  envelope: Envelope<unknown>,
  trusted: ReadonlyArray<TrustedKey>,
  threshold: number,
): Promise<boolean> {
  const message = new TextEncoder().encode(canonicalJson(envelope.signed))
  const verifiedIds = new Set<string>()
  const verifiedKeys = new Set<string>()
  for (const signature of envelope.signatures) {
    if (verifiedIds.has(signature.keyid)) continue
    const key = trusted.find((k) => k.keyid === signature.keyid)
    const raw = key ? base64Bytes(key.publicKey) : null
    const sig = base64Bytes(signature.sig)
    // A small-order key verifies forgeries, so it never counts, even where input checks missed it.
    if (!raw || unusablePublicKeyProblem(raw) !== null || sig?.length !== ED25519_SIGNATURE_BYTES) continue
    const publicKey = await crypto.subtle.importKey('raw', raw, ED25519, false, ['verify'])
    if (await crypto.subtle.verify(ED25519, publicKey, sig, message)) {
      verifiedIds.add(signature.keyid)
      // Re-encoded from the bytes: two spellings of one key's base64 are still one key.
      verifiedKeys.add(bytesBase64(raw))
    }
    if (verifiedKeys.size >= threshold) return true
  }
  return false
}
