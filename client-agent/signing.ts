import type { ArtifactManifest, SignedManifest } from '../schemas/manifest.ts'
import { canonicalJson, ED25519, type Envelope, keyIdOf } from '../schemas/signed-envelope.ts'

/**
 * The maintainer's side of signatures: key generation and signing, through WebCrypto. What a
 * signature covers and how it is verified (by agents and the edge) is schemas/signed-envelope.ts.
 */
export interface KeyPairFiles {
  /** Raw 32-byte public key, base64. */
  publicKey: string
  keyid: string
  /** PKCS#8 private key, base64. Stays on the maintainer's machine. */
  privateKey: string
}

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

export function signManifest(manifest: ArtifactManifest, key: KeyPairFiles): Promise<SignedManifest> {
  return signDocument(manifest, key)
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

function toBase64(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('base64')
}

function fromBase64(text: string): Uint8Array<ArrayBuffer> {
  return new Uint8Array(Buffer.from(text, 'base64'))
}
