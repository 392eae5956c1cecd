import type { Context } from 'hono'
import { type CodeState, deviceRegistry } from '../../durable-objects/device-registry.ts'
import type { RuntimeConfig } from '../../schemas/runtime-config.ts'
import type { AppEnv } from '../app-env.ts'
import { Problem } from '../http/problem.ts'
import { verifyCredential } from './credential.ts'

/** What a route asks for: reports (telemetry, rollout outcomes) or a prefetch query. */
export type DeviceRouteKind = 'report' | 'prefetch'

const CHALLENGE = { 'www-authenticate': 'Device realm="deltaport"' }

/**
 * Code states by code id, per isolate: revocation is the only per-request fact that needs storage, and
 * one registry call per code per `cacheTtlSeconds` keeps the single registry object off the hot path.
 */
const codeStates = new Map<string, { state: CodeState; expires: number }>()
const MAX_CACHED_CODES = 4096

/** The revoke route forgets its own isolate's entry at once; others follow within the cache period. */
export function forgetCodeState(codeId: string): void {
  codeStates.delete(codeId)
}

/** Tests: forget every cached code state. */
export function clearCodeStateCache(): void {
  codeStates.clear()
}

async function codeState(env: Env, codeId: string, ttlSeconds: number): Promise<CodeState> {
  const now = Date.now()
  const cached = codeStates.get(codeId)
  if (cached !== undefined && cached.expires > now) return cached.state
  const state = await deviceRegistry(env).codeState(codeId)
  if (codeStates.size >= MAX_CACHED_CODES) codeStates.clear()
  codeStates.set(codeId, { state, expires: now + ttlSeconds * 1000 })
  return state
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
  if (!secret) throw new Problem(500, 'internal', 'DEVICE_TOKEN_SECRET is not configured on this edge')
  const check = await verifyCredential(secret, (scheme[1] ?? '').trim())
  if (!check.ok) {
    if (check.reason === 'expired')
      throw refused('device-credential-expired', 'the device credential expired: enroll again to renew it')
    throw refused('device-credential-invalid', 'the device credential is not one this edge issued')
  }
  const state = await codeState(c.env, check.claims.codeId, config.cacheTtlSeconds)
  if (state === 'revoked')
    throw refused('device-credential-revoked', 'the enrollment code of this device was revoked')
  if (state === 'unknown')
    throw refused(
      'device-credential-invalid',
      'the device credential names an enrollment code this edge does not know',
    )
  return check.claims.deviceId
}
