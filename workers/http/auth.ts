import type { MiddlewareHandler } from 'hono'
import { timingSafeEqual } from 'hono/utils/buffer'
import type { AppEnv } from '../app-env.ts'
import { Problem } from './problem.ts'

/**
 * Maintainer endpoints (publish, rollout control) need the bearer token held as the Worker secret
 * PUBLISH_TOKEN. The comparison is constant-time so the token cannot be guessed byte by byte.
 */
export const requireMaintainer: MiddlewareHandler<AppEnv> = async (c, next) => {
  const header = c.req.header('authorization') ?? ''
  const match = /^Bearer ([\x21-\x7e]{1,512})$/.exec(header)
  const expected = c.env.PUBLISH_TOKEN
  if (!expected) throw new Problem(500, 'internal', 'PUBLISH_TOKEN is not configured on this edge')
  if (!match?.[1] || !(await timingSafeEqual(match[1], expected))) {
    throw new Problem(401, 'unauthorized', 'a valid maintainer bearer token is required', {
      headers: { 'www-authenticate': 'Bearer realm="deltaport"' },
    })
  }
  await next()
}
