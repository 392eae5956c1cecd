import { Hono } from 'hono'
import type { AppEnv } from '../app-env.ts'
import { runtimeConfigStatus } from '../config/runtime-config.ts'
import { requireMaintainer } from '../http/auth.ts'

/** Operator view of the runtime config this isolate is using (same token as publish). */
export const configRouter = new Hono<AppEnv>().use('*', requireMaintainer).get('/', async (c) => {
  c.header('cache-control', 'no-store')
  return c.json(await runtimeConfigStatus(c.env))
})
