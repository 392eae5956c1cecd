import { Hono } from 'hono'
import { PrefetchQuery } from '../../schemas/aggregation.ts'
import type { AppEnv } from '../app-env.ts'
import { getRuntimeConfig } from '../config/runtime-config.ts'
import { anonymousClient, authenticateDevice } from '../devices/authenticate.ts'
import { rateLimited } from '../http/problem.ts'
import { valid } from '../http/validate.ts'
import { explicitRegion, REGION_HEADER, resolveRegion } from '../region.ts'

/**
 * GET /v1/prefetch?client=&region=&installed=name@ver,…&channel=&budget= : what this client should stage
 * while idle, computed by its region's RegionAggregator (which caches it briefly and rate-limits new
 * plans per client: 429 + Retry-After).
 */
export const prefetchRouter = new Hono<AppEnv>().get('/', valid('query', PrefetchQuery), async (c) => {
  const query = c.req.valid('query')
  const config = await getRuntimeConfig(c.env)
  // An enrolled device gets the queue of its device id, the id its telemetry is counted under.
  const deviceId = await authenticateDevice(c, config, 'prefetch')
  const region =
    query.region === undefined
      ? resolveRegion(c.req.raw, config)
      : explicitRegion(query.region, config, 'region')
  const stub = c.env.REGION_AGGREGATOR.get(c.env.REGION_AGGREGATOR.idFromName(region))
  const result = await stub.prefetch({
    region,
    clientId: deviceId ?? anonymousClient(query.client),
    channel: query.channel,
    budgetBytes: query.budget,
    plansPerMinute: config.limits.prefetchPlansPerClientPerMinute,
    ...(query.installed === undefined ? {} : { installed: query.installed }),
  })
  if (result.status === 'rate-limited') {
    throw rateLimited('prefetch planning rate limit for this client exceeded', result.retryAfterSeconds)
  }
  c.header('cache-control', 'private, max-age=30')
  // Every answer names both headers, anonymous ones included: a cache that kept an anonymous queue
  // without them would serve it to the same URL asked with a credential, or for another region.
  c.header('vary', `authorization, ${REGION_HEADER}`)
  return c.json(result.queue)
})
