import { DEVICE_CREDENTIAL_PATTERN } from '../../schemas/devices.ts'

/**
 * Device credentials (ADR 0026): `dp1.<deviceId>.<codeId>.<issuedAt>.<expiresAt>.<mac>`, where `mac` is
 * the base64url HMAC-SHA256 under DEVICE_TOKEN_SECRET of everything before it. Checking one costs an
 * HMAC and no storage read; the secret never leaves the edge, so only the edge can mint them.
 *
 * DEVICE_TOKEN_SECRET is a key ring: one key, or several separated by whitespace. The first signs, every
 * one verifies, so the secret can be rotated without un-enrolling the fleet: put `<new> <old>`, let the
 * devices renew (the edge asks them to, see authenticate.ts), then put `<new>` alone.
 */

const PREFIX = 'dp1'
const encoder = new TextEncoder()

export interface CredentialClaims {
  deviceId: string
  codeId: string
  /** Epoch seconds. */
  issuedAt: number
  /** Epoch seconds. */
  expiresAt: number
}

export type CredentialCheck =
  /** `retiredKey`: verified by a key other than the signing one, so the device should renew. */
  | { ok: true; claims: CredentialClaims; retiredKey: boolean }
  | { ok: false; reason: 'malformed' | 'bad-signature' | 'expired'; claims?: CredentialClaims }

/** Imported HMAC keys by secret: importKey per request would cost more than the HMAC itself. */
const keys = new Map<string, Promise<CryptoKey>>()

function hmacKey(secret: string): Promise<CryptoKey> {
  let key = keys.get(secret)
  if (key === undefined) {
    key = crypto.subtle.importKey('raw', encoder.encode(secret), { name: 'HMAC', hash: 'SHA-256' }, false, [
      'sign',
      'verify',
    ])
    keys.set(secret, key)
  }
  return key
}

function toBase64Url(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes))
    .replace(/\+/g, '-')
    .replace(/\//g, '_')
    .replace(/=+$/, '')
}

function fromBase64Url(text: string): Uint8Array<ArrayBuffer> {
  const binary = atob(text.replace(/-/g, '+').replace(/_/g, '/'))
  const out = new Uint8Array(binary.length)
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i)
  return out
}

function payload(claims: CredentialClaims): string {
  return [PREFIX, claims.deviceId, claims.codeId, claims.issuedAt, claims.expiresAt].join('.')
}

/** The keys of a DEVICE_TOKEN_SECRET, the signing one first; none for an empty or blank secret. */
export function credentialKeys(secret: string | undefined): string[] {
  return (secret ?? '').split(/\s+/).filter((key) => key.length > 0)
}

/** Signs with the ring's first key. */
export async function signCredential(secret: string, claims: CredentialClaims): Promise<string> {
  const [signing] = credentialKeys(secret)
  if (signing === undefined) throw new Error('DEVICE_TOKEN_SECRET holds no key')
  const body = payload(claims)
  const mac = await crypto.subtle.sign('HMAC', await hmacKey(signing), encoder.encode(body))
  return `${body}.${toBase64Url(new Uint8Array(mac))}`
}

/**
 * Parses and verifies a credential against each key of the ring in turn (constant-time MAC checks by
 * WebCrypto). An expired one still reports its claims so enrollment can renew the same device id.
 */
export async function verifyCredential(
  secret: string,
  credential: string,
  nowMs = Date.now(),
): Promise<CredentialCheck> {
  const match = credential.length <= 160 ? DEVICE_CREDENTIAL_PATTERN.exec(credential) : null
  const [, deviceId, codeId, issued, expires, mac] = match ?? []
  if (!deviceId || !codeId || !issued || !expires || !mac) return { ok: false, reason: 'malformed' }
  const claims: CredentialClaims = { deviceId, codeId, issuedAt: Number(issued), expiresAt: Number(expires) }
  let signature: Uint8Array<ArrayBuffer>
  try {
    signature = fromBase64Url(mac)
  } catch {
    return { ok: false, reason: 'malformed' }
  }
  const signed = encoder.encode(payload(claims))
  const keys = credentialKeys(secret)
  let keyIndex = -1
  for (let i = 0; i < keys.length && keyIndex < 0; i++) {
    if (await crypto.subtle.verify('HMAC', await hmacKey(keys[i]!), signature, signed)) keyIndex = i
  }
  if (keyIndex < 0) return { ok: false, reason: 'bad-signature' }
  if (claims.expiresAt * 1000 <= nowMs) return { ok: false, reason: 'expired', claims }
  return { ok: true, claims, retiredKey: keyIndex > 0 }
}

/** SHA-256 hex of an enrollment code: all the registry ever stores of it. */
export async function hashEnrollmentCode(code: string): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', encoder.encode(code)))
  return [...digest].map((b) => b.toString(16).padStart(2, '0')).join('')
}

/** A new enrollment code: 24 random bytes, base64url. */
export function newEnrollmentCode(): string {
  return `dpe1_${toBase64Url(crypto.getRandomValues(new Uint8Array(24)))}`
}
