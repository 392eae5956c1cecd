import { Hono } from 'hono'
import { z } from 'zod'
import { decimalParam } from '../../schemas/common.ts'
import type { AppEnv } from '../app-env.ts'
import { requireMaintainer } from '../http/auth.ts'
import { Problem } from '../http/problem.ts'
import { etagListMatches } from '../http/range.ts'
import { valid } from '../http/validate.ts'

export const MetricsQuery = z.object({ window: decimalParam(1, 672).default(24) })
export const MigrationsQuery = z.object({ limit: decimalParam(1, 1000).default(200) })

const planner = (env: Env) => env.SHARD_PLANNER.get(env.SHARD_PLANNER.idFromName('global'))

/**
 * Dependency sharding across zones (durable-objects/shard-planner.ts). The plan is public: it names only
 * published artifact versions and zones, and tools may use it to predict where bytes come from. Metrics,
 * migrations and re-planning are operator business: maintainer token only.
 */
export const shardsRouter = new Hono<AppEnv>()
  .get('/', async (c) => {
    const plan = await planner(c.env).plan()
    if (plan === null) {
      throw new Problem(
        404,
        'not-found',
        'no shard plan yet: the planner runs every zones.replanIntervalMs (default 1 h) and has not run yet; POST /v1/shards/replan with the maintainer token runs it now',
      )
    }
    // A version is saved once and never rewritten (a change is a new version), so it is the validator.
    const etag = `"shard-plan-${plan.version}"`
    c.header('cache-control', 'public, max-age=30')
    c.header('etag', etag)
    const ifNoneMatch = c.req.header('if-none-match')
    if (ifNoneMatch !== undefined && etagListMatches(ifNoneMatch, etag)) return c.body(null, 304)
    return c.json(plan)
  })
  .get('/metrics', requireMaintainer, valid('query', MetricsQuery), async (c) => {
    const { window } = c.req.valid('query')
    c.header('cache-control', 'private, no-store')
    return c.json(await planner(c.env).metrics(window))
  })
  .get('/migrations', requireMaintainer, valid('query', MigrationsQuery), async (c) => {
    const { limit } = c.req.valid('query')
    c.header('cache-control', 'private, no-store')
    return c.json({ migrations: await planner(c.env).migrations(limit) })
  })
  .post('/replan', requireMaintainer, async (c) => c.json(await planner(c.env).replan()))
