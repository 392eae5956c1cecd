import type { Context, MiddlewareHandler } from 'hono'
import { deleteCookie, getSignedCookie, setSignedCookie } from 'hono/cookie'
import { timingSafeEqual } from 'hono/utils/buffer'
import type { AppEnv } from '../app-env.ts'
import { bearerToken } from '../http/auth.ts'
import { addressLimitKey } from '../http/client-address.ts'
import { Problem, rateLimited } from '../http/problem.ts'
import { TRANSIENT_RETRY_AFTER_SECONDS } from '../http/transient.ts'

/** The session cookie of the dashboard; scoped to its paths so no API route ever receives it. */
export const SESSION_COOKIE = 'deltaport_operator'
export const SESSION_PATH = '/dashboard'
/** How long a browser login lasts; the cookie carries the expiry, signed. */
export const SESSION_SECONDS = 8 * 60 * 60
/**
 * Domain separation: the HMAC input can never be mistaken for any other value signed with the token.
 * v2 added the session id (v1 cookies, which logout could not revoke, are no longer accepted).
 */
const SESSION_PREFIX = 'dashboard-session-v2:'
/** Revoked session ids live in AUTH_LOCKOUTS under this prefix until the session would have expired. */
const REVOKED_PREFIX = 'dashboard-session-revoked/'
/** KV's shortest expiry: a revocation is kept at least this long, even for a session about to expire. */
const MIN_REVOCATION_SECONDS = 60

export type OperatorAuth = { via: 'bearer' } | { via: 'session'; expiresAt: number }

function operatorToken(c: Context<AppEnv>): string {
  const token = c.env.OPERATOR_TOKEN
  if (!token) throw new Problem(500, 'internal', 'OPERATOR_TOKEN is not configured on this edge')
  return token
}

/**
 * Every presented OPERATOR_TOKEN counts against OPERATOR_AUTH_RATE_LIMITER per client address (60 a
 * minute per Cloudflare location, wrangler.toml), success or not: the token doubles as the dashboard's
 * login password, and a limiter that counted only failures would still answer every guess. An IPv6
 * client counts by its /64 (client-address.ts), not by the address it picks per request. Session
 * cookies are HMACs of the token and do not count. Cloudflare sets cf-connecting-ip on every request;
 * without it (local runs only) there is no address to count.
 */
async function limitOperatorAttempts(c: Context<AppEnv>): Promise<void> {
  const address = c.req.header('cf-connecting-ip')
  if (address === undefined) return
  const { success } = await c.env.OPERATOR_AUTH_RATE_LIMITER.limit({ key: addressLimitKey(address) })
  if (!success) throw rateLimited('too many operator token attempts from this address; retry in a minute', 60)
}

/**
 * Constant-time comparison of a presented token with OPERATOR_TOKEN (bounded length, printable ASCII),
 * after the per-address limit (429 problem when it is spent).
 */
export async function isOperatorToken(c: Context<AppEnv>, presented: string): Promise<boolean> {
  const expected = operatorToken(c)
  await limitOperatorAttempts(c)
  if (!/^[\x21-\x7e]{1,512}$/.test(presented)) return false
  return timingSafeEqual(presented, expected)
}

/** A signed, unexpired session read from the cookie (not yet checked against revocations). */
interface Session {
  id: string
  /** Epoch seconds. */
  expiresAt: number
}

/**
 * Issues the browser session: the cookie value is the expiry (epoch seconds) and a random 128-bit
 * session id, with an HMAC-SHA256 of both keyed by OPERATOR_TOKEN (Hono's signed cookies). Nothing is
 * stored at login; logout stores the id as revoked (endSession). Rotating the token logs every browser out.
 */
export async function startSession(c: Context<AppEnv>, now = Date.now()): Promise<void> {
  const expiresAt = Math.floor(now / 1000) + SESSION_SECONDS
  const id = Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) =>
    b.toString(16).padStart(2, '0'),
  ).join('')
  await setSignedCookie(c, SESSION_COOKIE, `${SESSION_PREFIX}${expiresAt}:${id}`, operatorToken(c), {
    path: SESSION_PATH,
    httpOnly: true,
    sameSite: 'Strict',
    secure: new URL(c.req.url).protocol === 'https:',
    maxAge: SESSION_SECONDS,
  })
}

/** The cookie's session when its signature verifies and it has not expired; null otherwise. */
async function signedSession(c: Context<AppEnv>, now: number): Promise<Session | null> {
  const signed = await getSignedCookie(c, operatorToken(c), SESSION_COOKIE)
  if (typeof signed !== 'string' || !signed.startsWith(SESSION_PREFIX)) return null
  const fields = /^(\d{1,12}):([0-9a-f]{32})$/.exec(signed.slice(SESSION_PREFIX.length))
  if (fields === null) return null
  const [, expiry = '', id = ''] = fields
  const expiresAtMs = Number(expiry) * 1000
  // Also refuse an expiry further out than a session can last (a cookie signed under other rules).
  if (expiresAtMs <= now || expiresAtMs > now + SESSION_SECONDS * 1000 + 60_000) return null
  return { id, expiresAt: Number(expiry) }
}

/**
 * Whether logout revoked this session. When the store cannot be read nobody can tell, and waving a
 * possibly revoked cookie through would defeat logout: a 503 to retry (the bearer token still works).
 */
async function isRevoked(c: Context<AppEnv>, session: Session): Promise<boolean> {
  try {
    return (await c.env.AUTH_LOCKOUTS.get(REVOKED_PREFIX + session.id)) !== null
  } catch (error) {
    console.log(
      JSON.stringify({ level: 'warn', msg: 'session revocations unreadable', error: String(error) }),
    )
    throw new Problem(503, 'unavailable', 'a backing service is temporarily unavailable; retry shortly', {
      headers: { 'retry-after': String(TRANSIENT_RETRY_AFTER_SECONDS) },
    })
  }
}

/**
 * Logout: the session id is recorded as revoked until the session would have expired anyway, so a
 * copy of the cookie (another browser, a leaked header) stops working too, and the browser's cookie is
 * cleared. The record is written before the answer; if it cannot be written the logout fails (503)
 * rather than telling the operator they are signed out while the cookie still opens the dashboard.
 */
export async function endSession(c: Context<AppEnv>, now = Date.now()): Promise<void> {
  const session = await signedSession(c, now)
  if (session !== null) {
    const nowSeconds = Math.floor(now / 1000)
    try {
      await c.env.AUTH_LOCKOUTS.put(REVOKED_PREFIX + session.id, String(nowSeconds), {
        expiration: Math.max(session.expiresAt, nowSeconds + MIN_REVOCATION_SECONDS),
      })
    } catch (error) {
      console.log(
        JSON.stringify({ level: 'warn', msg: 'session revocation not stored', error: String(error) }),
      )
      throw new Problem(503, 'unavailable', 'the session could not be revoked; retry the logout shortly', {
        headers: { 'retry-after': String(TRANSIENT_RETRY_AFTER_SECONDS) },
      })
    }
  }
  deleteCookie(c, SESSION_COOKIE, {
    path: SESSION_PATH,
    secure: new URL(c.req.url).protocol === 'https:',
  })
}

/**
 * The operator behind a request, or null: a bearer token first, then a signed, unexpired session
 * cookie whose session logout has not revoked.
 */
export async function authenticateOperator(
  c: Context<AppEnv>,
  now = Date.now(),
): Promise<OperatorAuth | null> {
  const header = c.req.header('authorization')
  if (header !== undefined) {
    const token = bearerToken(header)
    // A wrong bearer token is a failed login, not a reason to fall back to the cookie.
    return token && (await isOperatorToken(c, token)) ? { via: 'bearer' } : null
  }
  const session = await signedSession(c, now)
  if (session === null || (await isRevoked(c, session))) return null
  return { via: 'session', expiresAt: session.expiresAt * 1000 }
}

/** Browsers (and anything else asking for HTML) get the login page; API clients get problem+json. */
export function wantsHtml(c: Context<AppEnv>): boolean {
  return (c.req.header('accept') ?? '').includes('text/html')
}

/**
 * Gate for the dashboard's data routes. `onHtml` renders the login page for browsers; everyone else
 * gets a 401 problem+json with a Bearer challenge.
 */
export function requireOperator(
  onHtml: (c: Context<AppEnv>) => Response | Promise<Response>,
): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    if ((await authenticateOperator(c)) !== null) return next()
    if (wantsHtml(c)) return onHtml(c)
    throw new Problem(401, 'unauthorized', 'a valid operator bearer token or dashboard session is required', {
      headers: { 'www-authenticate': 'Bearer realm="deltaport-operator"' },
    })
  }
}
