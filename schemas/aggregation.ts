import { z } from 'zod'
import { ClientId, RegionName } from './client.ts'
import { ArtifactName, ByteSize, ChannelName, decimalParam, Version } from './common.ts'
import { PrefetchQueue } from './prefetch.ts'
import { TelemetryBatch } from './telemetry.ts'

/**
 * Shapes crossing the Durable Object RPC boundary (worker → RegionAggregator → GlobalAggregator) and
 * the query/response shapes of /v1/telemetry and /v1/prefetch. RPC arguments are structured-cloned,
 * not validated, so each object parses what it receives with these.
 */

const HOURS_PER_WEEK = 168
const Epoch = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER)
const Count = z.number().nonnegative().max(1e15)

/** Mirrors predict's `AccessSummary` (plain JSON) so summaries can be validated when they cross objects. */
export const AccessSummarySchema = z.object({
  version: z.literal(1),
  scope: z.string().min(1).max(16),
  halfLifeMs: z.number().positive(),
  profileHalfLifeMs: z.number().positive(),
  updatedAt: Epoch,
  artifacts: z
    .array(z.object({ artifact: z.string().min(1).max(512), count: Count, updatedAt: Epoch }))
    .max(10_000),
  transitions: z
    .array(
      z.object({
        from: z.string().min(1).max(512),
        to: z.string().min(1).max(512),
        count: Count,
        updatedAt: Epoch,
        meanLagMs: z.number().nonnegative(),
      }),
    )
    .max(100_000),
  profile: z.object({ buckets: z.array(Count).length(HOURS_PER_WEEK), updatedAt: Epoch }),
  limits: z.object({
    maxArtifacts: z.number().int().min(1).max(10_000),
    maxTransitionsPerArtifact: z.number().int().min(0).max(64),
    maxLagMs: z.number().nonnegative(),
  }),
})
export type AccessSummarySchema = z.infer<typeof AccessSummarySchema>

/** Per-region knobs of a RegionAggregator; defaults suit production, tests shrink the caps. */
export const AggregatorSettings = z.object({
  /** Distinct artifacts kept per region; the coldest (lowest decayed count) are evicted. */
  maxArtifacts: z.number().int().min(1).max(5000).default(1000),
  /** Distinct (artifact, segment) keys kept per region, coldest evicted. */
  maxSegments: z.number().int().min(1).max(20_000).default(4000),
  maxTransitionsPerArtifact: z.number().int().min(0).max(32).default(8),
  /** Clients with state (rate bucket, last seq, history); least recently seen evicted. */
  maxClients: z.number().int().min(1).max(100_000).default(20_000),
  /** Recent uses kept per client (for Markov prediction of its next use). */
  historyPerClient: z.number().int().min(1).max(256).default(32),
  /** Installed versions remembered per client from its telemetry. */
  installedPerClient: z.number().int().min(1).max(1024).default(128),
  halfLifeMs: z
    .number()
    .int()
    .min(60_000)
    .default(3 * 24 * 3_600_000),
  /** How often the alarm compacts and pushes a summary to the GlobalAggregator. */
  rollupIntervalMs: z.number().int().min(1000).max(86_400_000).default(60_000),
  /** Artifacts per region in the rolled-up summary (hottest first). */
  rollupMaxArtifacts: z.number().int().min(1).max(5000).default(500),
  prefetchCacheMs: z.number().int().min(0).max(3_600_000).default(30_000),
})
export type AggregatorSettings = z.infer<typeof AggregatorSettings>
export const AggregatorSettingsPatch = AggregatorSettings.partial()
export type AggregatorSettingsPatch = z.infer<typeof AggregatorSettingsPatch>

/** worker → RegionAggregator.ingest */
export const IngestRequest = z.object({
  region: RegionName,
  batch: TelemetryBatch,
  /** RuntimeConfig `limits.telemetryPerClientPerMinute`, resolved by the worker. */
  ratePerMinute: z.number().int().min(1).max(10_000),
})
export type IngestRequest = z.input<typeof IngestRequest>

export const IngestResult = z.discriminatedUnion('status', [
  z.object({ status: z.literal('accepted'), accepted: z.number().int().nonnegative() }),
  z.object({ status: z.literal('replay'), lastSeq: z.number().int().nonnegative() }),
  z.object({ status: z.literal('rate-limited'), retryAfterSeconds: z.number().int().min(1) }),
])
export type IngestResult = z.infer<typeof IngestResult>

/** 202 body of POST /v1/telemetry. A replayed batch is acknowledged (so agents stop retrying) but counts 0. */
export const TelemetryReceipt = z.object({
  region: RegionName,
  accepted: z.number().int().nonnegative(),
  duplicate: z.boolean(),
  /**
   * With `duplicate`: the highest sequence number this region has taken from the client. Above the
   * batch's, the client's spool went back (lost or restored): it renumbers and sends the events again
   * instead of dropping them as counted. Absent from older edges.
   */
  lastSeq: z.number().int().nonnegative().optional(),
})
export type TelemetryReceipt = z.infer<typeof TelemetryReceipt>

export const InstalledRef = z.object({ name: ArtifactName, version: Version })
export type InstalledRef = z.infer<typeof InstalledRef>

/**
 * Most `installed=` entries one prefetch request carries: each is looked up for the plan, which bounds
 * its R2 reads (durable-objects/prefetch-planner.ts MAX_CANDIDATE_NAMES, installed names first). A device
 * with more asks once per slice of them (client-agent/daemon/installed-slices.ts).
 */
export const MAX_INSTALLED_PARAM = 128

/** Longest `installed=` value (decoded) the edge reads: 128 names of 128 characters do not fit. */
export const MAX_INSTALLED_PARAM_CHARS = 16 * 1024

/**
 * `installed=name@ver,name@ver` (scoped names keep their leading `@`: the version follows the last `@`).
 * Bounded before splitting so a huge query string costs nothing.
 */
export const InstalledParam = z
  .string()
  .max(MAX_INSTALLED_PARAM_CHARS)
  .transform((raw, ctx) => {
    const parts = raw.split(',').filter((p) => p.length > 0)
    if (parts.length > MAX_INSTALLED_PARAM) {
      ctx.addIssue({ code: 'custom', message: `at most ${MAX_INSTALLED_PARAM} entries` })
      return z.NEVER
    }
    const out: InstalledRef[] = []
    for (const part of parts) {
      const at = part.lastIndexOf('@')
      const parsed = InstalledRef.safeParse({
        name: part.slice(0, Math.max(0, at)),
        version: part.slice(at + 1),
      })
      if (at <= 0 || !parsed.success) {
        ctx.addIssue({ code: 'custom', message: `"${part.slice(0, 64)}" is not name@version` })
        return z.NEVER
      }
      out.push(parsed.data)
    }
    return out
  })

/** GET /v1/prefetch query. */
export const PrefetchQuery = z.object({
  client: ClientId,
  /** Overrides region resolution (the agent may pin the region it posts telemetry to). */
  region: RegionName.optional(),
  installed: InstalledParam.optional(),
  channel: ChannelName.default('stable'),
  /** Bytes the client is willing to stage now. */
  budget: decimalParam(0, 64 * 1024 ** 3).default(512 * 1024 ** 2),
})
export type PrefetchQuery = z.infer<typeof PrefetchQuery>

/** worker → RegionAggregator.prefetch */
export const PrefetchRequest = z.object({
  region: RegionName,
  clientId: ClientId,
  installed: z.array(InstalledRef).max(MAX_INSTALLED_PARAM).optional(),
  channel: ChannelName,
  budgetBytes: ByteSize,
  /** RuntimeConfig `limits.prefetchPlansPerClientPerMinute`, resolved by the worker. */
  plansPerMinute: z.number().int().min(1).max(10_000),
})
export type PrefetchRequest = z.input<typeof PrefetchRequest>

/** RegionAggregator.prefetch → worker: the queue, or how long the client must wait for a new plan. */
export const PrefetchResult = z.discriminatedUnion('status', [
  z.object({ status: z.literal('planned'), queue: PrefetchQueue }),
  z.object({ status: z.literal('rate-limited'), retryAfterSeconds: z.number().int().min(1) }),
])
export type PrefetchResult = z.infer<typeof PrefetchResult>

/** RegionAggregator → GlobalAggregator.submit */
export const RegionRollup = z.object({
  region: RegionName,
  /** Clients with state in the region: the population behind the counts. */
  population: z.number().int().nonnegative(),
  summary: AccessSummarySchema,
})
export type RegionRollup = z.infer<typeof RegionRollup>
