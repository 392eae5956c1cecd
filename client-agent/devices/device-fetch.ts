import { CREDENTIAL_RENEW_HEADER } from '../../schemas/devices.ts'
import { ProblemDetails } from '../../schemas/problem.ts'
import type { AgentConfig } from '../config.ts'
import { JSON_LIMITS, readTextBounded } from '../transfer/read-json.ts'
import { deviceSession, type EnrollWait } from './session.ts'

/** The routes whose reports the edge counts per device (workers/devices/authenticate.ts). */
const DEVICE_ROUTES = [/^\/v1\/telemetry$/, /^\/v1\/prefetch$/, /^\/v1\/rollouts\/[^/]+\/[^/]+\/outcomes$/]
/** 401s after which enrolling again can help. */
const RENEWABLE = new Set([
  'device-credential-invalid',
  'device-credential-expired',
  'device-credential-revoked',
  'device-credential-required',
])

function urlOf(input: string | URL | Request): URL | null {
  try {
    return new URL(input instanceof Request ? input.url : input)
  } catch {
    return null
  }
}

function replayable(body: RequestInit['body']): boolean {
  return body === undefined || body === null || typeof body === 'string' || body instanceof Uint8Array
}

function withCredential(init: RequestInit | undefined, credential: string | undefined): RequestInit {
  const headers = new Headers(init?.headers)
  if (credential !== undefined) headers.set('authorization', `Device ${credential}`)
  return { ...init, headers }
}

/** The slug of a problem+json answer (`https://deltaport.dev/problems/<slug>`), or null. */
async function problemSlug(response: Response): Promise<string | null> {
  try {
    const { text } = await readTextBounded(response, JSON_LIMITS.error)
    const parsed = ProblemDetails.safeParse(JSON.parse(text))
    return parsed.success ? (parsed.data.type.split('/').at(-1) ?? null) : null
  } catch {
    return null
  }
}

/**
 * A fetch that sends the device credential (`Authorization: Device …`) on telemetry, prefetch and
 * rollout-outcome requests to the configured edge, enrolling on first need; on a 401 that a new
 * credential can fix it enrolls again (once per process) and repeats the request once; when the edge
 * asks for a renewal (CREDENTIAL_RENEW_HEADER: a key rotation), the next request renews first. Without an
 * enrollment code in the config it is `base` itself. Every other request passes through untouched.
 * `wait`: how long an enrollment it starts may wait for the edge (a rollback's ROLLBACK_EDGE_STALL_MS).
 */
export function deviceFetch(
  config: AgentConfig,
  base: typeof fetch = fetch,
  wait: EnrollWait = {},
): typeof fetch {
  const session = deviceSession(config, base)
  if (session === null) return base
  const edge = urlOf(config.edgeUrl)
  // An edge behind a rewriting proxy has a path of its own (`https://proxy/deltaport`): its routes
  // follow it, as EdgeClient builds them.
  const prefix = edge?.pathname.replace(/\/+$/, '') ?? ''
  const isDeviceRoute = (url: URL) =>
    url.origin === edge?.origin &&
    url.pathname.startsWith(prefix) &&
    DEVICE_ROUTES.some((r) => r.test(url.pathname.slice(prefix.length)))
  return async (input, init) => {
    const url = urlOf(input)
    if (url === null || !isDeviceRoute(url)) return base(input, init)
    const first = await session.current(wait)
    const response = await base(input, withCredential(init, first?.credential))
    if (first !== null && response.headers.get(CREDENTIAL_RENEW_HEADER) === 'renew') session.requestRenewal()
    if (response.status !== 401 || !replayable(init?.body)) return response
    const slug = await problemSlug(response.clone())
    if (slug === null || !RENEWABLE.has(slug)) return response
    const renewed = await session.reenroll(first, wait)
    if (renewed === null) return response
    await response.body?.cancel()
    return base(input, withCredential(init, renewed.credential))
  }
}
