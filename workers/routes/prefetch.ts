import { Hono } from 'hono'
import { PrefetchQuery } from '../../schemas/aggregation.ts'
import type { ServedPrefetchQueue } from '../../schemas/prefetch.ts'
import type { AppEnv } from '../app-env.ts'
import { getRuntimeConfig } from '../config/runtime-config.ts'
import { anonymousClient, authenticateDevice } from '../devices/authenticate.ts'
import { rateLimited } from '../http/problem.ts'
import { valid } from '../http/validate.ts'
import { explicitRegion, REGION_HEADER, resolveRegion } from '../region.ts'
import { signPrefetchPlan } from '../signing/index-statement.ts'

/**
 * The longest a queue's statement is valid (ADR 0034, amended 2026-11-26). The daemon acts on a queue
 * the moment it arrives and never keeps one longer than an hour (it polls again by then, whatever
 * `validUntil` says; the edge caches a queue for at most `prefetchCacheMs`, an hour), so a longer
 * lifetime would only let an old queue be replayed longer. An hour is also the clock skew the agent
 * tolerates the other way (a statement issued up to an hour ahead of its clock).
 */
export const MAX_PLAN_TTL_SECONDS = 3600

/**
 * GET /v1/prefetch?client=&region=&installed=name@ver,…&channel=&budget= : what this client should stage
 * while idle, computed by its region's RegionAggregator (which caches it briefly and rate-limits new
 * plans per client: 429 + Retry-After). With INDEX_SIGNING_KEY the queue carries `statement`, signed
 * for the client and region it was planned for (ADR 0034, amended): devices pinning the key refuse any
 * other.
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
  const clientId = deviceId ?? anonymousClient(query.client)
  const result = await stub.prefetch({
    region,
    clientId,
    channel: query.channel,
    budgetBytes: query.budget,
    plansPerMinute: config.limits.prefetchPlansPerClientPerMinute,
    ...(query.installed === undefined ? {} : { installed: query.installed }),
  })
  if (result.status === 'rate-limited') {
    throw rateLimited('prefetch planning rate limit for this client exceeded', result.retryAfterSeconds)
  }
  // Signed afresh on every answer, a cached plan too: the statement's lifetime starts when it is served.
  const ttl = Math.min(config.index.statementTtlSeconds, MAX_PLAN_TTL_SECONDS)
  const statement = await signPrefetchPlan(c.env, result.queue, { client: clientId, region }, ttl)
  const served: ServedPrefetchQueue = statement ? { ...result.queue, statement } : result.queue
  c.header('cache-control', 'private, max-age=30')
  // Every answer names both headers, anonymous ones included: a cache that kept an anonymous queue
  // without them would serve it to the same URL asked with a credential, or for another region.
  c.header('vary', `authorization, ${REGION_HEADER}`)
  return c.json(served)
})
