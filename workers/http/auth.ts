import type { Context, MiddlewareHandler } from 'hono'
import { timingSafeEqual } from 'hono/utils/buffer'
import type { AppEnv } from '../app-env.ts'
import { addressLimitKey } from './client-address.ts'
import { countWrongToken, refuseLockedOut } from './maintainer-lockout.ts'
import { Problem } from './problem.ts'

/**
 * The token of an `Authorization: Bearer <token>` header (the scheme is case-insensitive, RFC 9110
 * §11.1), or undefined: visible ASCII, at most 512 characters.
 */
export function bearerToken(header: string | undefined): string | undefined {
  return /^bearer +([\x21-\x7e]{1,512})$/i.exec(header ?? '')?.[1]
}

/**
 * Requests whose maintainer token was already checked. Every router under /v1/publish guards itself
 * with requireMaintainer, and Hono runs a router's `use('*')` for every request under its mount path,
 * the other routers' included: a re-sign or a yank was checked three times (three lockout-store reads
 * and token comparisons). Checked once, a request (its one context) is passed on by the later guards.
 */
const checked = new WeakSet<Context<AppEnv>>()

/**
 * Maintainer endpoints (publish, rollout control) need the bearer token held as the Worker secret
 * PUBLISH_TOKEN. The comparison is constant-time so the token cannot be guessed byte by byte, and
 * wrong tokens lock their address out for a minute (maintainer-lockout.ts) so it cannot be guessed whole.
 */
export const requireMaintainer: MiddlewareHandler<AppEnv> = async (c, next) => {
  if (checked.has(c)) return next()
  const token = bearerToken(c.req.header('authorization'))
  const expected = c.env.PUBLISH_TOKEN
  if (!expected) throw new Problem(500, 'internal', 'PUBLISH_TOKEN is not configured on this edge')
  // Counted per /64 over IPv6 (addressLimitKey): a host may use any address of its /64 per guess.
  const connecting = c.req.header('cf-connecting-ip')
  const address = connecting === undefined ? undefined : addressLimitKey(connecting)
  await refuseLockedOut(c.env, address)
  if (!token || !(await timingSafeEqual(token, expected))) {
    await countWrongToken(c.env, address)
    throw new Problem(401, 'unauthorized', 'a valid maintainer bearer token (PUBLISH_TOKEN) is required', {
      headers: { 'www-authenticate': 'Bearer realm="deltaport"' },
    })
  }
  checked.add(c)
  await next()
}
