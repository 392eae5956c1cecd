/**
 * Zone-aware serving of blobs: the request's zone comes from its Cloudflare colo/continent through the
 * `zones` config; when the shard plan lists a verified (active) replica of the blob in that zone, bytes
 * come from the zone bucket, else from the primary ARTIFACTS bucket, which always holds everything.
 * Every served blob is reported (batched per isolate) to the ShardPlanner as demand and metrics, and the
 * first request of a plan version in a zone warms that zone's hot set into the colo's edge cache; the
 * warm reads that had to fill the cache are reported in the same batches as warm fills (the prefetch
 * threshold's cost), never as demand.
 */
import type { Context } from 'hono'
import { zoneBucket } from '../../durable-objects/shard-replicas.ts'
import { type ServeOutcome, ShardPlan, type WarmFill, type ZonesConfig } from '../../schemas/shards.ts'
import type { AppEnv } from '../app-env.ts'
import { getRuntimeConfig } from '../config/runtime-config.ts'
import { CACHE_STATUS_HEADER, cacheStoreOf } from '../http/edge-cache.ts'
import type { ObjectSource } from '../http/serve-object.ts'

/** Response header: `<zone>; source=replica|primary|cache`. */
export const ZONE_HEADER = 'x-deltaport-zone'
/** Internal cache-warming requests carry this isolate's secret nonce so they are not counted as demand. */
const WARM_HEADER = 'x-deltaport-warm'
let warmNonceValue: string | null = null
/** Made on first use: workerd forbids generating random values at global scope (the Worker would not start). */
function warmNonce(): string {
  warmNonceValue ??= crypto.randomUUID()
  return warmNonceValue
}

export interface CfLocation {
  colo?: string
  continent?: string
}

/** The colo/continent Cloudflare attached to a request (absent in tests and `wrangler dev`). */
export function cfLocation(request: Request): CfLocation {
  const cf = (request as Request & { cf?: { colo?: unknown; continent?: unknown } }).cf
  return {
    ...(typeof cf?.colo === 'string' ? { colo: cf.colo } : {}),
    ...(typeof cf?.continent === 'string' ? { continent: cf.continent } : {}),
  }
}

/**
 * The zone serving a request: its colo mapped through `zones.map`, else its continent, else the fallback.
 * Pure, so the mapping is tested without a real colo; there is deliberately no client override header:
 * a client must not be able to pick which bucket serves it.
 */
export function zoneOf(location: CfLocation, zones: Pick<ZonesConfig, 'map' | 'fallback'>): string {
  for (const key of [location.colo, location.continent]) {
    if (key === undefined) continue
    const zone = zones.map[key] ?? zones.map[key.toUpperCase()]
    if (zone !== undefined) return zone
  }
  return zones.fallback
}

// ---- the plan, cached per isolate -----------------------------------------------------------------

let planCache: { expires: number; plan: ShardPlan | null } | null = null
let warmed = new Set<string>()

/** Tests: forget the cached plan and which zones were warmed. */
export function clearZonePlanCache(): void {
  planCache = null
  warmed = new Set()
}

function planner(env: Env) {
  return env.SHARD_PLANNER.get(env.SHARD_PLANNER.idFromName('global'))
}

/** The plan in force as this isolate knows it (at most `planCacheMs` old). A planner failure means "no plan". */
export async function cachedPlan(env: Env, zones: ZonesConfig, now = Date.now()): Promise<ShardPlan | null> {
  if (planCache !== null && now < planCache.expires) return planCache.plan
  let plan: ShardPlan | null = null
  try {
    const raw = await planner(env).plan()
    const parsed = raw === null ? null : ShardPlan.safeParse(raw)
    plan = parsed?.success ? parsed.data : null
  } catch (error) {
    console.log(JSON.stringify({ level: 'warn', msg: 'shard plan unavailable', error: String(error) }))
  }
  planCache = { expires: now + zones.planCacheMs, plan }
  return plan
}

/**
 * Reads from the zone replica and falls back to the primary when the replica object is missing (a plan
 * cached by this isolate may be up to `planCacheMs` older than a removal; deletes wait twice that, this
 * is the belt to those braces).
 */
export function replicaWithFallback(
  replica: R2Bucket,
  primary: R2Bucket,
): ObjectSource & { servedBy(): 'replica' | 'primary' } {
  let fellBack = false
  return {
    // A failing replica (R2 fault in that zone, a lost object) is no reason to fail the read: the
    // primary has it all. Remembered, so the response and the planner's metrics say where it came from.
    get: async (key, options) => {
      const fromReplica = await replica.get(key, options).catch(() => null)
      if (fromReplica) return fromReplica
      fellBack = true
      return primary.get(key, options)
    },
    servedBy: () => (fellBack ? 'primary' : 'replica'),
  }
}

export interface ZoneChoice {
  zone: string
  /** Where the bytes came from, known once `bucket` was read (a replica may fall back to the primary). */
  servedBy(): 'replica' | 'primary'
  bucket: ObjectSource
}

/** Where to read `entryId` for a request in `zone`: an active replica in that zone, else the primary. */
export function chooseSource(
  env: Env,
  plan: ShardPlan | null,
  zones: ZonesConfig,
  zone: string,
  entryId: string,
): ZoneChoice {
  const entry = plan?.entries.find((e) => e.id === entryId)
  if (entry?.active.includes(zone)) {
    const spec = plan?.zones.find((z) => z.id === zone)
    const replica = zoneBucket(env, spec?.bucket ?? zones.zones.find((z) => z.id === zone)?.bucket)
    if (replica !== null) {
      const bucket = replicaWithFallback(replica, env.ARTIFACTS)
      return { zone, servedBy: bucket.servedBy, bucket }
    }
  }
  return { zone, servedBy: () => 'primary', bucket: env.ARTIFACTS }
}

// ---- serve outcomes and warm fills, batched per isolate ----------------------------------------------

let pendingOutcomes: ServeOutcome[] = []
let pendingWarmFills: WarmFill[] = []
let lastFlush = 0
const MAX_BUFFERED = 1000

/** Buffers one served blob (demand) or one warm fill (cost) and sends the batch when it is due. */
function record(
  c: Context<AppEnv>,
  item: { outcome: ServeOutcome } | { warmFill: WarmFill },
  zones: ZonesConfig,
): void {
  const at = 'outcome' in item ? item.outcome.at : item.warmFill.at
  if ('outcome' in item) pendingOutcomes.push(item.outcome)
  else pendingWarmFills.push(item.warmFill)
  const buffered = pendingOutcomes.length + pendingWarmFills.length
  if (buffered < MAX_BUFFERED && at - lastFlush < zones.metricsFlushMs) return
  const batch = { outcomes: pendingOutcomes, warmFills: pendingWarmFills }
  pendingOutcomes = []
  pendingWarmFills = []
  lastFlush = at
  c.executionCtx.waitUntil(
    planner(c.env)
      .report(batch)
      .then(
        () => undefined,
        (error: unknown) => {
          console.log(
            JSON.stringify({
              level: 'warn',
              msg: 'serve report lost',
              n: batch.outcomes.length,
              warmFills: batch.warmFills.length,
              error: String(error),
            }),
          )
        },
      ),
  )
}

/**
 * Warms the zone's hot set into this colo's cache once per plan version, through the app itself so the
 * entries are stored exactly as the blob route stores them (same keys, same headers).
 */
function warmZone(c: Context<AppEnv>, plan: ShardPlan, zone: string, zones: ZonesConfig): void {
  const mark = `${plan.version}|${zone}`
  if (warmed.has(mark) || zones.maxWarmPerZone === 0) return
  warmed.add(mark)
  const hot = plan.zones.find((z) => z.id === zone)?.hot.slice(0, zones.maxWarmPerZone) ?? []
  if (hot.length === 0) return
  const origin = new URL(c.req.url).origin
  // Same colo/continent as the triggering request, so the warm read resolves to the same zone's replica.
  const incomingCf = c.req.raw.cf
  const env = c.env
  const ctx = c.executionCtx
  c.executionCtx.waitUntil(
    (async () => {
      const { app } = await import('../app.ts')
      for (const id of hot) {
        const at = id.lastIndexOf('@')
        const url = `${origin}/v1/artifacts/${encodeURIComponent(id.slice(0, at))}/${id.slice(at + 1)}/blob`
        // The inner request's own background work (its cache put) is awaited here, inside our waitUntil.
        const inner: Promise<unknown>[] = []
        const innerCtx: ExecutionContext = Object.assign(Object.create(ctx) as ExecutionContext, {
          waitUntil: (p: Promise<unknown>) => {
            inner.push(p)
          },
        })
        const response = await app.fetch(
          new Request(url, { headers: { [WARM_HEADER]: warmNonce() }, cf: incomingCf }),
          env,
          innerCtx,
        )
        try {
          await response.body?.pipeTo(new WritableStream())
        } finally {
          // Indexed, not Promise.all: work the inner request adds while we wait (its warm fill, charged
          // once its cache put has settled, and the report that may send) joins the list meanwhile.
          for (let i = 0; i < inner.length; i++) await inner[i]
        }
      }
    })().catch((error: unknown) => {
      console.log(JSON.stringify({ level: 'warn', msg: 'zone warm failed', zone, error: String(error) }))
    }),
  )
}

/**
 * Serves one blob zone-aware: picks the source, lets `serve` build the response (edge cache included),
 * labels it with the zone and source, and reports the outcome (demand for the planner).
 */
export async function withZoneReplica(
  c: Context<AppEnv>,
  entryId: string,
  serve: (source: ObjectSource) => Promise<Response>,
): Promise<Response> {
  const started = Date.now()
  const zones = (await getRuntimeConfig(c.env)).zones
  const zone = zoneOf(cfLocation(c.req.raw), zones)
  const plan = await cachedPlan(c.env, zones, started)
  const choice = chooseSource(c.env, plan, zones, zone, entryId)
  const response = await serve(choice.bucket)
  const source = response.headers.get(CACHE_STATUS_HEADER) === 'hit' ? 'cache' : choice.servedBy()
  const labelled = new Response(response.body, response)
  labelled.headers.set(ZONE_HEADER, `${zone}; source=${source}`)
  const internal = c.req.header(WARM_HEADER) === warmNonce()
  if (c.req.method !== 'GET' || (response.status !== 200 && response.status !== 206)) return labelled
  const length = Number(response.headers.get('content-length') ?? 0)
  const bytes = Number.isSafeInteger(length) && length >= 0 ? length : 0
  if (internal) {
    // A warm read is no client's demand; it costs only when the colo did not hold the blob yet, and then
    // it costs the bytes it filled the cache with (read from the zone replica or the primary). Charged
    // once the copy is stored: a put that failed (the body broke mid-way, the cache refused it) filled
    // nothing (a later warming that does store it is charged then).
    const stored = source === 'cache' ? undefined : cacheStoreOf(response)
    if (stored) {
      c.executionCtx.waitUntil(
        stored.then((ok) => {
          if (ok) record(c, { warmFill: { zone, bytes, at: started } }, zones)
        }),
      )
    }
    return labelled
  }
  record(
    c,
    {
      outcome: {
        zone,
        entry: entryId,
        bytes,
        source,
        latencyMs: Math.max(0, Date.now() - started),
        at: started,
      },
    },
    zones,
  )
  if (plan !== null) warmZone(c, plan, zone, zones)
  return labelled
}
