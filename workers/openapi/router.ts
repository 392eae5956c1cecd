import { Hono } from 'hono'
import type { AppEnv } from '../app-env.ts'
import { buildOpenApiDocument } from './document.ts'

let cached: string | null = null

/** GET /openapi.json: built once per isolate (the routes and schemas are static). */
export const openapiRouter = new Hono<AppEnv>().get('/', (c) => {
  cached ??= JSON.stringify(buildOpenApiDocument())
  c.header('cache-control', 'public, max-age=300')
  c.header('content-type', 'application/json')
  return c.body(cached)
})
