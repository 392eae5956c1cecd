import { type Context, Hono } from 'hono'
import { HTTPException } from 'hono/http-exception'
import type { ContentfulStatusCode } from 'hono/utils/http-status'
import type { AppEnv } from './app-env.ts'
import { allowedMethods } from './http/allowed-methods.ts'
import { Problem, problemResponse } from './http/problem.ts'
import { transientProblem } from './http/transient.ts'
import { openapiRouter } from './openapi/router.ts'
import { artifactsRouter } from './routes/artifacts.ts'
import { configRouter } from './routes/config.ts'
import { dashboardRouter } from './routes/dashboard.ts'
import { deltasRouter } from './routes/deltas.ts'
import { devicesRouter } from './routes/devices.ts'
import { planRouter } from './routes/plan.ts'
import { prefetchRouter } from './routes/prefetch.ts'
import { publishRouter } from './routes/publish.ts'
import { publishAttachmentsRouter } from './routes/publish-attachments.ts'
import { resignRouter } from './routes/resign.ts'
import { rolloutsRouter } from './routes/rollouts.ts'
import { rootsRouter } from './routes/roots.ts'
import { shardsRouter } from './routes/shards.ts'
import { telemetryRouter } from './routes/telemetry.ts'
import { yankRouter } from './routes/yank.ts'
import { ManifestBeingRepaired } from './storage/artifact-store.ts'
import { guardStorage } from './storage/guarded-bucket.ts'
import { repairOnRead } from './storage/repair-on-read.ts'

/** Problem types for statuses Hono's own middleware raises (bad JSON, csrf() refusing a cross-site form). */
const HTTP_EXCEPTION_TYPES: Partial<Record<number, string>> = { 400: 'bad-request', 403: 'forbidden' }

/** The deltaport edge: one typed Hono app, routers mounted by area, one error shape. */
export const app = new Hono<AppEnv>()

// R2 faults anywhere below become 503 problem+json with Retry-After (workers/storage/guarded-bucket.ts).
app.use('*', guardStorage)

app.get('/', (c) => c.json({ service: 'deltaport-edge', api: '/v1' }))
app.route('/v1/artifacts', artifactsRouter)
app.route('/v1/publish', publishRouter)
app.route('/v1/publish', publishAttachmentsRouter)
app.route('/v1/publish', resignRouter)
app.route('/v1/publish', yankRouter)
app.route('/v1/deltas', deltasRouter)
app.route('/v1/plan', planRouter)
app.route('/v1/config', configRouter)
app.route('/v1/telemetry', telemetryRouter)
app.route('/v1/prefetch', prefetchRouter)
app.route('/v1/rollouts', rolloutsRouter)
app.route('/v1/roots', rootsRouter)
app.route('/v1/devices', devicesRouter)
app.route('/v1/shards', shardsRouter)
app.route('/openapi.json', openapiRouter)
app.route('/dashboard', dashboardRouter)

app.notFound((c) => {
  const allowed = allowedMethods(c.req.path)
  if (allowed.length === 0)
    return problemResponse(c, new Problem(404, 'not-found', `no route for ${c.req.method} ${c.req.path}`))
  return problemResponse(
    c,
    new Problem(
      405,
      'method-not-allowed',
      `${c.req.path} answers ${allowed.join(', ')}, not ${c.req.method}`,
      {
        headers: { allow: allowed.join(', ') },
      },
    ),
  )
})

/**
 * A listed version answered 503 `manifest-being-repaired` (from any route that finds it through
 * requirePublished): its repair starts after the answer (repair-on-read.ts), at most one per version per
 * claim interval, so the version is servable again within seconds of its commit being dead, not at the
 * next retention pass.
 */
function repairInBackground(c: Context<AppEnv>, problem: ManifestBeingRepaired): void {
  let ctx: Context<AppEnv>['executionCtx']
  try {
    ctx = c.executionCtx
  } catch {
    return // Called without an execution context (a test calling the app bare): nothing runs after.
  }
  ctx.waitUntil(repairOnRead(c.env.ARTIFACTS, problem.artifact, problem.version))
}

app.onError((error, c) => {
  if (error instanceof ManifestBeingRepaired) repairInBackground(c, error)
  if (error instanceof Problem) return problemResponse(c, error)
  if (error instanceof HTTPException) {
    // Raised by Hono's own middleware (malformed JSON bodies and the like).
    const status = error.status as ContentfulStatusCode
    return problemResponse(
      c,
      new Problem(status, HTTP_EXCEPTION_TYPES[status] ?? 'unprocessable', error.message),
    )
  }
  // Durable Object faults the platform marks retryable/overloaded: 503 + Retry-After (workers/http/transient.ts).
  const transient = transientProblem(error)
  if (transient) return problemResponse(c, transient)
  console.log(JSON.stringify({ level: 'error', msg: 'unhandled', path: c.req.path, error: String(error) }))
  return problemResponse(c, new Problem(500, 'internal', 'unexpected error; see edge logs'))
})
