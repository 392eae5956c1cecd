import { z } from 'zod'
import { DeviceCredentialRequirement } from './devices.ts'
import { ZonesConfig } from './shards.ts'

const MiB = 1024 * 1024

/**
 * The longest runtime config document (characters) the edge parses: every isolate reads and parses it
 * once per `cacheTtlSeconds`, and KV would hold up to 25 MiB. A full document with a region for each of
 * Cloudflare's ≈ 330 colos is under 20 KiB.
 */
export const MAX_RUNTIME_CONFIG_CHARS = 256 * 1024
/** Entries of `regions.map`: a colo or continent code each. */
export const MAX_REGION_MAP_ENTRIES = 1024

/**
 * The operator's knobs, held in KV `CONFIG` under key `runtime`. Every field has a default so an
 * empty or partial document is valid; an invalid document is rejected and the last good one stays.
 */
export const RuntimeConfig = z.object({
  delta: z
    .object({
      /** How many previous versions the publisher builds deltas from. */
      fromLastN: z.number().int().min(0).max(32).default(3),
      /** Keep full artifacts in R2 in addition to deltas (`both`) or only the newest N full copies. */
      storage: z.enum(['both', 'deltas-preferred']).default('both'),
      keepFullVersions: z.number().int().min(1).max(1000).default(5),
      retainDeltasDays: z.number().int().min(1).max(3650).default(90),
      lazyGenerationMaxBytes: z
        .number()
        .int()
        .min(0)
        .max(256 * MiB)
        .default(8 * MiB),
    })
    .prefault({}),
  stream: z
    .object({
      blockSize: z
        .number()
        .int()
        .min(4096)
        .max(4 * MiB)
        .default(64 * 1024),
      fecK: z.number().int().min(1).max(128).default(16),
      fecM: z.number().int().min(0).max(64).default(2),
      // No range-size knobs: each agent sizes its ranges from its own measured bandwidth and RTT
      // (ADR 0007); an edge-wide bound was validated here once but nothing ever read it.
    })
    .prefault({}),
  limits: z
    .object({
      telemetryPerClientPerMinute: z.number().int().min(1).max(10_000).default(30),
      /**
       * Prefetch queues the edge computes per client per minute. Only queues it must plan count: a
       * repeat of a query answered within `prefetchCacheMs` is served from the cache for free. The
       * daemon polls at most twice a minute (never before the queue's `validUntil`).
       */
      prefetchPlansPerClientPerMinute: z.number().int().min(1).max(10_000).default(12),
      maxPublishBytes: z
        .number()
        .int()
        .min(1)
        .default(4 * 1024 * MiB),
    })
    .prefault({}),
  plan: z
    .object({
      /** Longest delta chain the planner offers; clients may ask for less. */
      maxChainLength: z.number().int().min(1).max(8).default(4),
      /**
       * Chunk-sync bytes estimated as target size × this factor when neither the client's base nor
       * its chunk list is known to the edge (no exact count is possible then).
       */
      chunkSyncEstimateFactor: z.number().min(0).max(1).default(0.6),
    })
    .prefault({}),
  regions: z
    .object({
      /** Cloudflare colo or continent code → aggregation region. */
      map: z
        .record(z.string().max(16), z.string().max(16))
        .refine((map) => Object.keys(map).length <= MAX_REGION_MAP_ENTRIES, {
          message: `at most ${MAX_REGION_MAP_ENTRIES} entries`,
        })
        .default({}),
      fallback: z.string().max(16).default('global'),
    })
    .prefault({}),
  /**
   * Device enrollment (ADR 0026): `requireCredential` says which requests must carry
   * `Authorization: Device <credential>` — `off` (default: anonymous ones are still accepted),
   * `reports` (telemetry and rollout outcomes), `all` (reports and prefetch queries). A credential that
   * is sent is always checked, whatever this says.
   */
  devices: z.object({ requireCredential: DeviceCredentialRequirement.default('off') }).prefault({}),
  /**
   * Signed index statements (ADR 0032, when INDEX_SIGNING_KEY is set): how long each one stays valid.
   * Devices with indexKeys refuse an index whose statement expired, so this bounds how long a stale
   * copy (a cache, a mirror, a replay) can hold them on an old release; keep it above the longest
   * time a device may go without reaching the edge only if such devices must keep installing offline
   * copies of the index.
   */
  index: z
    .object({
      statementTtlSeconds: z
        .number()
        .int()
        .min(5 * 60)
        .max(7 * 24 * 3600)
        .default(24 * 3600),
    })
    .prefault({}),
  /**
   * Yanks (ADR 0024, 0025). `requireStatement`: refuse yanks and restores that carry no maintainer-
   * signed statement (422), so `PUBLISH_TOKEN` alone can no longer move channel heads. Off by default:
   * an unsigned yank is the quick response to a bad release when no maintainer key is at hand. Only
   * the Cloudflare account can write this document, not the token it restricts.
   */
  yank: z.object({ requireStatement: z.boolean().default(false) }).prefault({}),
  /**
   * Staged rollouts (ADR 0010, 0038). `requireStatement`: start, pause, resume and abort only on a
   * maintainer-signed statement (422 otherwise), so `PUBLISH_TOKEN` alone can neither hold a release
   * back from devices nor push one to them. Off by default, like `yank.requireStatement`; it means
   * something only where MAINTAINER_KEYS is set (otherwise any signature passes).
   */
  rollout: z.object({ requireStatement: z.boolean().default(false) }).prefault({}),
  /** Zones for dependency sharding (durable-objects/shard-planner.ts); see schemas/shards.ts. */
  zones: ZonesConfig.prefault({}),
  /** How long an isolate trusts its cached copy before re-reading KV. */
  cacheTtlSeconds: z.number().int().min(1).max(3600).default(30),
})
export type RuntimeConfig = z.infer<typeof RuntimeConfig>

/** Why a runtime config document is refused: each problem with its dot-joined path (`stream.fecK`). */
export interface ConfigIssue {
  path: string
  message: string
}

/**
 * Parses the text of a runtime config document as the edge does (KV `CONFIG/runtime`), so the agent's
 * `deltaport config check` accepts and refuses exactly what the edge would. At most 32 issues are listed;
 * a document over MAX_RUNTIME_CONFIG_CHARS is refused before it is parsed.
 */
export function parseRuntimeConfigDocument(
  raw: string,
): { ok: true; config: RuntimeConfig } | { ok: false; issues: ConfigIssue[] } {
  if (raw.length > MAX_RUNTIME_CONFIG_CHARS)
    return {
      ok: false,
      issues: [
        {
          path: '',
          message: `the document is ${raw.length} characters long; at most ${MAX_RUNTIME_CONFIG_CHARS}`,
        },
      ],
    }
  let json: unknown
  try {
    json = JSON.parse(raw)
  } catch (error) {
    return { ok: false, issues: [{ path: '', message: `not JSON: ${(error as Error).message}` }] }
  }
  const result = RuntimeConfig.safeParse(json)
  if (result.success) return { ok: true, config: result.data }
  return {
    ok: false,
    issues: result.error.issues.slice(0, 32).map((issue) => ({
      path: issue.path.map(String).join('.'),
      message: issue.message,
    })),
  }
}
