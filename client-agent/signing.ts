import type { ArtifactManifest, SignedManifest } from '../schemas/manifest.ts'

/**
 * Ed25519 through WebCrypto (the same API the edge has), over the canonical JSON of the manifest:
 * keys sorted, no whitespace, so signer and verifier hash identical bytes whatever the transport did.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value)
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`
}

export interface KeyPairFiles {
  /** Raw 32-byte public key, base64. */
  publicKey: string
  keyid: string
  /** PKCS#8 private key, base64. Stays on the maintainer's machine. */
  privateKey: string
}

const ED25519 = { name: 'Ed25519' } as const

export async function generateKeyPair(): Promise<KeyPairFiles> {
  const pair = await crypto.subtle.generateKey(ED25519, true, ['sign', 'verify'])
  if (!('publicKey' in pair)) throw new Error('Ed25519 generateKey returned a single key')
  const publicRaw = new Uint8Array(await crypto.subtle.exportKey('raw', pair.publicKey))
  const privatePkcs8 = new Uint8Array(await crypto.subtle.exportKey('pkcs8', pair.privateKey))
  return {
    publicKey: toBase64(publicRaw),
    keyid: await keyIdOf(publicRaw),
    privateKey: toBase64(privatePkcs8),
  }
}

export async function keyIdOf(publicRaw: Uint8Array): Promise<string> {
  return toHex(new Uint8Array(await crypto.subtle.digest('SHA-256', publicRaw)))
}

export function signManifest(manifest: ArtifactManifest, key: KeyPairFiles): Promise<SignedManifest> {
  return signDocument(manifest, key)
}

/** A signed envelope: the body plus detached signatures over its canonical JSON. */
export interface Envelope<Body> {
  signed: Body
  signatures: Array<{ keyid: string; sig: string }>
}

/**
 * Signs any document (manifests, yank statements). Each document kind carries fields of its own (a
 * yank statement its `_type`), so a signature over one kind never parses as another.
 */
export async function signDocument<Body>(body: Body, key: KeyPairFiles): Promise<Envelope<Body>> {
  const privateKey = await crypto.subtle.importKey('pkcs8', fromBase64(key.privateKey), ED25519, false, [
    'sign',
  ])
  const message = new TextEncoder().encode(canonicalJson(body))
  const sig = new Uint8Array(await crypto.subtle.sign(ED25519, privateKey, message))
  return { signed: body, signatures: [{ keyid: key.keyid, sig: toBase64(sig) }] }
}

/** True if any signature verifies under a pinned key with the same keyid. */
export async function verifyEnvelope(
  envelope: Envelope<unknown>,
  trusted: ReadonlyArray<{ keyid: string; publicKey: string }>,
): Promise<boolean> {
  const message = new TextEncoder().encode(canonicalJson(envelope.signed))
  for (const signature of envelope.signatures) {
    const key = trusted.find((k) => k.keyid === signature.keyid)
    if (!key) continue
    const publicKey = await crypto.subtle.importKey('raw', fromBase64(key.publicKey), ED25519, false, [
      'verify',
    ])
    const sig = fromBase64(signature.sig)
    if (sig.length === 64 && (await crypto.subtle.verify(ED25519, publicKey, sig, message))) return true
  }
  return false
}

export function toBase64(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('base64')
}

export function fromBase64(text: string): Uint8Array<ArrayBuffer> {
  return new Uint8Array(Buffer.from(text, 'base64'))
}

export function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('hex')
}
