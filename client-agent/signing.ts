import { bytesBase64 } from '../schemas/base64.ts'
import type { ArtifactManifest, SignedManifest } from '../schemas/manifest.ts'
import { ED25519, type Envelope, keyIdOf, signEnvelope } from '../schemas/signed-envelope.ts'

/**
 * The maintainer's side of signatures: key generation and key files, through WebCrypto. What a
 * signature covers, how it is made and how it is verified is schemas/signed-envelope.ts.
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
    publicKey: bytesBase64(publicRaw),
    keyid: await keyIdOf(publicRaw),
    privateKey: bytesBase64(privatePkcs8),
  }
}

export function signManifest(
  manifest: ArtifactManifest,
  keys: KeyPairFiles | readonly KeyPairFiles[],
): Promise<SignedManifest> {
  return signDocumentByAll(manifest, Array.isArray(keys) ? keys : [keys])
}

/**
 * Signs any document (manifests, yank statements). Each document kind carries fields of its own (a
 * yank statement its `_type`), so a signature over one kind never parses as another.
 */
export async function signDocument<Body>(body: Body, key: KeyPairFiles): Promise<Envelope<Body>> {
  const privateKey = await crypto.subtle.importKey('pkcs8', fromBase64(key.privateKey), ED25519, false, [
    'sign',
  ])
  return signEnvelope(body, key.keyid, privateKey)
}

/**
 * `body` signed by each key: where the maintainers' role needs several distinct signatures (config
 * maintainerThreshold or a root's threshold, ADR 0035), one command makes them all.
 */
export async function signDocumentByAll<Body>(
  body: Body,
  keys: readonly KeyPairFiles[],
): Promise<Envelope<Body>> {
  const envelopes = await Promise.all(keys.map((key) => signDocument(body, key)))
  return { signed: body, signatures: envelopes.flatMap((e) => e.signatures) }
}

function fromBase64(text: string): Uint8Array<ArrayBuffer> {
  return new Uint8Array(Buffer.from(text, 'base64'))
}
