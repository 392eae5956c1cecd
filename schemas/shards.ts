import { z } from 'zod'
import { ArtifactName, ByteSize, IsoDateTime, Sha256Hex, Version } from './common.ts'

const GiB = 1024 ** 3

/**
 * A deployment zone: a set of edge locations, named like Durable Object location hints (wnam, enam, weur,
 * eeur, apac, oc, afr, me) or any short operator name.
 */
export const ZoneId = z
  .string()
  .min(2)
  .max(16)
  .regex(/^[a-z][a-z0-9-]*$/, 'lowercase zone id such as wnam or weur')
export type ZoneId = z.infer<typeof ZoneId>

/** The binding of the primary bucket, which always keeps every blob (wrangler.toml). */
export const PRIMARY_BUCKET_BINDING = 'ARTIFACTS'

/** An R2 bucket binding name declared in wrangler.toml (e.g. ZONE_WEUR). */
export const BucketBinding = z
  .string()
  .min(1)
  .max(64)
  .regex(/^[A-Z][A-Z0-9_]*$/)

/**
 * A zone's replica bucket: never the primary. Replica migrations delete from their zone's bucket (on
 * removal and on a failed verify), so a zone naming ARTIFACTS would have them delete primary blobs.
 */
export const ReplicaBucketBinding = BucketBinding.refine((binding) => binding !== PRIMARY_BUCKET_BINDING, {
  message: `${PRIMARY_BUCKET_BINDING} is the primary bucket; a zone needs a replica bucket of its own`,
})

/** Entries of `zones.map` (colo or continent → zone). */
export const MAX_ZONE_MAP_ENTRIES = 1024

export const ZoneSpec = z.object({
  id: ZoneId,
  /** Bytes of replicas this zone may hold. */
  capacityBytes: ByteSize,
  /** Share of keys by hashing, before demand is taken into account (<= 0 removes the zone). */
  weight: z.number().min(0).max(1000).default(1),
  /** Replica bucket binding (not ARTIFACTS, one per zone); a zone without one only gets its edge cache warmed. */
  bucket: ReplicaBucketBinding.optional(),
})
export type ZoneSpec = z.infer<typeof ZoneSpec>

/**
 * `zones` section of the runtime config. Defaults describe the three local zone buckets of wrangler.toml
 * and a continent map, so an empty document is a working setup.
 */
export const ZonesConfig = z
  .object({
    /** Cloudflare colo (e.g. `FRA`) or continent (`EU`) → zone; colo wins over continent. */
    map: z
      .record(z.string().min(2).max(16), ZoneId)
      // ≈330 colos and 7 continents exist; bounded so the ShardPlanner's copy of the zones config (one
      // Durable Object row, refused in production over 2 MB) has a worst case that fits.
      .refine((map) => Object.keys(map).length <= MAX_ZONE_MAP_ENTRIES, {
        message: `at most ${MAX_ZONE_MAP_ENTRIES} entries`,
      })
      .default({ NA: 'wnam', SA: 'wnam', EU: 'weur', AF: 'weur', AS: 'apac', OC: 'apac', AN: 'apac' }),
    /** Zone of requests nothing in `map` matches (no cf properties in tests and `wrangler dev`). */
    fallback: ZoneId.default('wnam'),
    /** Where the primary ARTIFACTS bucket lives: serving anything else from it is a cross-zone fetch. */
    primaryZone: ZoneId.default('wnam'),
    zones: z
      .array(ZoneSpec)
      .max(32)
      .default([
        { id: 'wnam', capacityBytes: 4 * GiB, weight: 1, bucket: 'ZONE_WNAM' },
        { id: 'weur', capacityBytes: 4 * GiB, weight: 1, bucket: 'ZONE_WEUR' },
        { id: 'apac', capacityBytes: 4 * GiB, weight: 1, bucket: 'ZONE_APAC' },
      ]),
    /**
     * Forecast requests per hour (all zones together) at which a dependency gets 1, 2, … replicas:
     * [1, 20] means >= 1 req/h → 1 replica, >= 20 → 2. Ascending.
     */
    replicationThresholds: z.array(z.number().nonnegative()).max(8).default([1, 20, 200]),
    /** Hours ahead the plan is made for (mean forecast demand over them). */
    horizonHours: z.number().int().min(1).max(168).default(6),
    /** Re-plan (and cache-controller) interval of the ShardPlanner alarm. */
    replanIntervalMs: z
      .number()
      .int()
      .min(60_000)
      .max(24 * 3_600_000)
      .default(3_600_000),
    /** Refit a zone's forecast models when its sMAPE (percent, 0..200) exceeds this. */
    refitSmape: z.number().min(0).max(200).default(40),
    /** Co-access edges lighter than this (shared sessions per hour) do not co-locate. */
    minEdgeWeight: z.number().nonnegative().default(1),
    /** Bandit: reward = hit ratio − lambda × (warm-fill bytes / bytes served). */
    lambda: z.number().min(0).max(100).default(0.5),
    /** Candidate prefetch thresholds (forecast req/h for a dependency to join a zone's hot set). */
    prefetchThresholds: z.array(z.number().nonnegative()).min(1).max(16).default([0.5, 1, 2, 5, 10]),
    /** Most entries of a zone's hot set the edge warms into its cache per plan version. */
    maxWarmPerZone: z.number().int().min(0).max(1000).default(32),
    /** How long an isolate trusts its copy of the plan; deletes wait at least twice this after a flip. */
    planCacheMs: z.number().int().min(0).max(3_600_000).default(30_000),
    /** Isolates batch serve outcomes and send them to the planner at most this often (0 = every request). */
    metricsFlushMs: z.number().int().min(0).max(600_000).default(10_000),
  })
  .superRefine((config, ctx) => {
    // One bucket per zone: a zone's remove migration deletes its replica, which would be another zone's
    // live replica if the two shared a bucket.
    const owner = new Map<string, string>()
    for (const [i, zone] of config.zones.entries()) {
      if (zone.bucket === undefined) continue
      const other = owner.get(zone.bucket)
      if (other !== undefined) {
        ctx.addIssue({
          code: 'custom',
          path: ['zones', i, 'bucket'],
          message: `bucket ${zone.bucket} is already the replica bucket of zone ${other}; zones cannot share one`,
        })
      } else owner.set(zone.bucket, zone.id)
    }
  })
export type ZonesConfig = z.infer<typeof ZonesConfig>

/**
 * The config with each zone as first declared. A zone id declared again is accepted (tightening the
 * schema would fail stored documents) but ignored: reads find a zone's bucket by its first declaration,
 * so the planner must too, or it copied replicas into the last one's bucket (where nothing reads them)
 * and could rank the same zone twice for one blob. `deltaport config check` and GET /v1/config warn.
 */
export function firstDeclarations(config: ZonesConfig): ZonesConfig {
  const seen = new Set<string>()
  const zones = config.zones.filter((zone) => !seen.has(zone.id) && seen.add(zone.id))
  return zones.length === config.zones.length ? config : { ...config, zones }
}

/** One dependency (an artifact version's blob) in the plan and where its replicas are. */
export const ShardEntry = z.object({
  /** `name@version`: the planning key, also the hashing key. */
  id: z.string().min(1).max(200),
  name: ArtifactName,
  version: Version,
  /** R2 key of the blob, identical in the primary and every replica bucket. */
  key: z.string().min(1).max(512),
  size: ByteSize,
  sha256: Sha256Hex,
  /** Forecast requests per hour, per zone, over the plan horizon. */
  demand: z.record(ZoneId, z.number().nonnegative()),
  /** The dependency whose hash ranks zones for this one (itself unless co-located with a hotter one). */
  group: z.string().min(1).max(200),
  /** Zones that should hold a replica, best first. */
  replicas: z.array(ZoneId),
  /** Zones whose replica is copied, sha256-verified and flipped: the only ones the edge serves from. */
  active: z.array(ZoneId),
})
export type ShardEntry = z.infer<typeof ShardEntry>

export const ZoneUsage = z.object({
  id: ZoneId,
  capacityBytes: ByteSize,
  plannedBytes: ByteSize,
  bucket: BucketBinding.optional(),
  /** Dependencies whose forecast here passes the prefetch threshold: what the zone's edges warm. */
  hot: z.array(z.string().min(1).max(200)),
})
export type ZoneUsage = z.infer<typeof ZoneUsage>

/** A versioned placement; `version` increases by one with every change of placement or activation. */
export const ShardPlan = z.object({
  version: z.number().int().nonnegative(),
  createdAt: IsoDateTime,
  horizonHours: z.number().int().positive(),
  prefetchThreshold: z.number().nonnegative(),
  zones: z.array(ZoneUsage),
  entries: z.array(ShardEntry),
  /** Wanted replicas that did not fit any zone's capacity. */
  underReplicated: z.array(z.string()),
})
export type ShardPlan = z.infer<typeof ShardPlan>

/**
 * One step of moving from one plan to the next. Adding: copy → verify (sha256) → flip (active).
 * Removing: unflip (the edge stops using it) → delete once `notBefore` has passed.
 */
export const Migration = z.object({
  id: z.number().int().nonnegative(),
  planVersion: z.number().int().nonnegative(),
  kind: z.enum(['add', 'remove']),
  entry: z.string().min(1).max(200),
  key: z.string().min(1).max(512),
  zone: ZoneId,
  bytes: ByteSize,
  sha256: Sha256Hex,
  state: z.enum(['pending', 'copied', 'verified', 'active', 'unflipped', 'deleted', 'failed', 'cancelled']),
  attempts: z.number().int().nonnegative(),
  notBefore: z.number().int().nonnegative(),
  error: z.string().max(500).optional(),
})
export type Migration = z.infer<typeof Migration>

/** What an isolate reports about the blobs it served since its last flush. */
export const ServeOutcome = z.object({
  zone: ZoneId,
  entry: z.string().min(1).max(200),
  bytes: ByteSize,
  source: z.enum(['replica', 'primary', 'cache']),
  latencyMs: z.number().nonnegative().max(600_000),
  at: z.number().int().nonnegative(),
})
export type ServeOutcome = z.infer<typeof ServeOutcome>

/**
 * A warm read (the edge warming its zone's hot set into the colo cache) that was not already a cache
 * hit: it read `bytes` from the zone's replica bucket or the primary to fill the cache. This is the cost
 * the prefetch threshold causes (a lower one means a larger hot set), so the bandit charges it. Warm reads
 * are never `ServeOutcome`s: they are not demand, and a warmed blob's later hits are the threshold's gain.
 */
export const WarmFill = z.object({
  zone: ZoneId,
  bytes: ByteSize,
  at: z.number().int().nonnegative(),
})
export type WarmFill = z.infer<typeof WarmFill>

/**
 * What an isolate sends the planner per flush. `warmFills` defaults to empty so a report from an isolate
 * still running the previous release (during a deploy) is accepted.
 */
export const ServeReport = z.object({
  outcomes: z.array(ServeOutcome).max(5000),
  warmFills: z.array(WarmFill).max(5000).default([]),
})
export type ServeReport = z.infer<typeof ServeReport>

export const ZoneMetrics = z.object({
  zone: ZoneId,
  requests: z.number().nonnegative(),
  hits: z.number().nonnegative(),
  hitRatio: z.number().min(0).max(1),
  crossZoneFetches: z.number().nonnegative(),
  bytesServed: z.number().nonnegative(),
  crossZoneBytes: z.number().nonnegative(),
  /** Bytes copied into this zone's replica bucket (migrations and repairs): the cost of placement. */
  bytesMoved: z.number().nonnegative(),
  /**
   * Bytes the edge read to warm this zone's hot set into colo caches (warm reads that were not cache
   * hits): the cost of the prefetch threshold, which the bandit charges.
   */
  warmFillBytes: z.number().nonnegative(),
  meanLatencyMs: z.number().nonnegative(),
  /** sMAPE (%) of the hourly request forecast over the evaluated hours; null before the first one. */
  smape: z.number().nullable(),
  evaluatedHours: z.number().int().nonnegative(),
  refits: z.number().int().nonnegative(),
})
export type ZoneMetrics = z.infer<typeof ZoneMetrics>

export const BanditArmState = z.object({
  id: z.string(),
  threshold: z.number().nonnegative(),
  successes: z.number().nonnegative(),
  failures: z.number().nonnegative(),
})

export const ShardMetrics = z.object({
  planVersion: z.number().int().nonnegative(),
  windowHours: z.number().int().positive(),
  zones: z.array(ZoneMetrics),
  prefetchThreshold: z.number().nonnegative(),
  bandit: z.array(BanditArmState),
  migrations: z.object({
    pending: z.number().int().nonnegative(),
    active: z.number().int().nonnegative(),
    failed: z.number().int().nonnegative(),
  }),
})
export type ShardMetrics = z.infer<typeof ShardMetrics>

/** One hour of one zone: requests served then, and what the planner had predicted for that hour. */
export const ForecastPoint = z.object({
  hour: z.number().int().nonnegative(),
  /** Requests served in the hour; null for hours still ahead. */
  actual: z.number().nonnegative().nullable(),
  /** The planner's one-step forecast for the hour; null when it made none (no plan or no history). */
  predicted: z.number().nonnegative().nullable(),
})
export type ForecastPoint = z.infer<typeof ForecastPoint>

/** Forecast vs actual per zone, oldest hour first (the dashboard's plots). */
export const ForecastSeries = z.object({
  windowHours: z.number().int().positive(),
  zones: z.array(z.object({ zone: ZoneId, points: z.array(ForecastPoint) })),
})
export type ForecastSeries = z.infer<typeof ForecastSeries>

/**
 * Requests one demand row may claim (for one dependency, zone and hour: some 280 million a second).
 * Rows add up in the planner's table, and two rows near Number.MAX_VALUE summed to Infinity there: the
 * forecast refuses a non-finite series, so every cycle threw for the four weeks the row was kept.
 */
export const MAX_DEMAND_REQUESTS = 1e12

/** Hourly demand rows (the planner's input); `hour` is epoch ms of the hour start. */
export const DemandRow = z.object({
  hour: z.number().int().nonnegative(),
  zone: ZoneId,
  entry: z.string().min(1).max(200),
  requests: z.number().nonnegative().max(MAX_DEMAND_REQUESTS),
  bytes: z.number().nonnegative().max(Number.MAX_SAFE_INTEGER),
})
export type DemandRow = z.infer<typeof DemandRow>

/** POST /v1/shards/replan result. */
export const ReplanResult = z.object({
  planVersion: z.number().int().nonnegative(),
  changed: z.boolean(),
  migrations: z.object({ added: z.number().int(), removed: z.number().int(), completed: z.number().int() }),
})
export type ReplanResult = z.infer<typeof ReplanResult>

/** Fitted forecast weights the planner keeps per dependency and zone (mirrors predict's DemandModel). */
export const StoredDemandModel = z.object({
  params: z.object({
    alpha: z.number().min(0).max(1),
    beta: z.number().min(0).max(1),
    gamma: z.number().min(0).max(1),
    delta: z.number().min(0).max(1),
  }),
  method: z.enum(['double-seasonal', 'daily-seasonal']),
})

/** What the planner caches from a published version's manifest (immutable once published). */
export const ManifestFacts = z.object({
  size: ByteSize,
  sha256: Sha256Hex,
  requires: z.array(ArtifactName).max(256),
})
export type ManifestFacts = z.infer<typeof ManifestFacts>

/** GET /v1/shards/migrations. */
export const MigrationList = z.object({ migrations: z.array(Migration) })
export type MigrationList = z.infer<typeof MigrationList>
