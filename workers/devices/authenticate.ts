import type { Context } from 'hono'
import { type CodeState, deviceRegistry } from '../../durable-objects/device-registry.ts'
import { CREDENTIAL_RENEW_HEADER, DeviceId } from '../../schemas/devices.ts'
import type { RuntimeConfig } from '../../schemas/runtime-config.ts'
import type { AppEnv } from '../app-env.ts'
import { Problem } from '../http/problem.ts'
import { credentialKeys, verifyCredential } from './credential.ts'

/** What a route asks for: reports (telemetry, rollout outcomes) or a prefetch query. */
export type DeviceRouteKind = 'report' | 'prefetch'

const CHALLENGE = { 'www-authenticate': 'Device realm="deltaport"' }

interface CachedCode {
  state: CodeState
  /** The code's devices revoked one by one whose credentials may still be valid (a few at most). */
  revokedDevices: ReadonlySet<string>
  expires: number
}

/**
 * Code states by code id, per isolate: revocation (of a code, or of single devices, fetched with their
 * code's state) is the only per-request fact that needs storage, and one registry call per code per
 * `cacheTtlSeconds` keeps the single registry object off the hot path. Per-device entries would cost a
 * call per device instead; the registry bounds the revoked ids (MAX_LIVE_REVOCATIONS), so per code is
 * enough.
 */
const codeStates = new Map<string, CachedCode>()
const MAX_CACHED_CODES = 4096

/**
 * The revoke routes (code or device) forget their own isolate's entry of the code at once; other
 * isolates follow within the cache period.
 */
export function forgetCodeState(codeId: string): void {
  codeStates.delete(codeId)
}

/** Tests: forget every cached code state. */
export function clearCodeStateCache(): void {
  codeStates.clear()
}

async function codeState(env: Env, codeId: string, ttlSeconds: number): Promise<CachedCode> {
  const now = Date.now()
  const cached = codeStates.get(codeId)
  if (cached !== undefined && cached.expires > now) return cached
  const answer = await deviceRegistry(env).credentialState(codeId)
  const entry: CachedCode = {
    state: answer.code,
    revokedDevices: new Set(answer.revokedDevices),
    expires: now + ttlSeconds * 1000,
  }
  if (codeStates.size >= MAX_CACHED_CODES) codeStates.clear()
  codeStates.set(codeId, entry)
  return entry
}

function refused(slug: string, detail: string): Problem {
  return new Problem(401, slug, detail, { headers: CHALLENGE })
}

/**
 * The enrolled device behind a request, or null for an anonymous one the config still accepts.
 * `Authorization: Device <credential>`: a forged, garbled, expired or revoked credential is a 401
 * whatever the config says (a device that sends one expects to be counted as itself). Without one,
 * `devices.requireCredential` decides: `reports` refuses anonymous reports, `all` prefetch queries too.
 */
export async function authenticateDevice(
  c: Context<AppEnv>,
  config: RuntimeConfig,
  kind: DeviceRouteKind,
): Promise<string | null> {
  const header = c.req.header('authorization')
  const scheme = header === undefined ? null : /^Device(?: (.*))?$/i.exec(header)
  if (scheme === null) {
    const required = config.devices.requireCredential
    if (required === 'all' || (required === 'reports' && kind === 'report'))
      throw refused(
        'device-credential-required',
        'this edge accepts reports only from enrolled devices: send Authorization: Device <credential> (POST /v1/devices/enroll)',
      )
    return null
  }
  const secret = c.env.DEVICE_TOKEN_SECRET
  if (credentialKeys(secret).length === 0)
    throw new Problem(500, 'internal', 'DEVICE_TOKEN_SECRET is not configured on this edge')
  const check = await verifyCredential(secret, (scheme[1] ?? '').trim())
  if (!check.ok) {
    if (check.reason === 'expired')
      throw refused('device-credential-expired', 'the device credential expired: enroll again to renew it')
    throw refused('device-credential-invalid', 'the device credential is not one this edge issued')
  }
  const code = await codeState(c.env, check.claims.codeId, config.cacheTtlSeconds)
  if (code.state === 'revoked')
    throw refused('device-credential-revoked', 'the enrollment code of this device was revoked')
  if (code.state === 'unknown')
    throw refused(
      'device-credential-invalid',
      'the device credential names an enrollment code this edge does not know',
    )
  if (code.revokedDevices.has(check.claims.deviceId))
    throw refused('device-credential-revoked', 'this device was revoked by the operator')
  // Signed with a key on its way out of the ring: accepted, and the agent renews at once.
  if (check.retiredKey) c.header(CREDENTIAL_RENEW_HEADER, 'renew')
  return check.claims.deviceId
}

/**
 * The client id an anonymous request (no credential, accepted by the config) is counted under. Not an
 * enrolled device's id: the edge keeps per-client state under it (the telemetry replay guard, the one
 * rollout sample, the prefetch plan rate), so a request naming it would act as that device — a batch
 * numbered 2^53 − 1 would make every later batch of the device a "duplicate". Device ids have a shape of
 * their own (`d` + 20), which the agent's random client ids (16 characters) never take.
 */
export function anonymousClient(claimed: string): string {
  if (DeviceId.safeParse(claimed).success)
    throw refused(
      'device-credential-required',
      `client id ${claimed} is an enrolled device id: only that device, with its credential, reports as it`,
    )
  return claimed
}
