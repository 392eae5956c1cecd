import { z } from 'zod'
import { ClientId } from './client.ts'
import { ArtifactName, IsoDateTime, Version } from './common.ts'

/**
 * One access the agent observed: which artifact (and optionally which segment of it) was used, when,
 * and how often. Metadata only — never file contents or user data.
 */
export const AccessEvent = z.object({
  artifact: ArtifactName,
  version: Version.optional(),
  /** A named part of an artifact (a file path inside an archive, a chunk id), bounded. */
  segment: z.string().max(256).optional(),
  at: IsoDateTime,
  count: z.number().int().min(1).max(1_000_000).default(1),
  kind: z.enum(['use', 'install', 'update', 'prefetch-hit']).default('use'),
})
export type AccessEvent = z.infer<typeof AccessEvent>

export const MAX_TELEMETRY_EVENTS = 1000

/** A batch posted to POST /v1/telemetry; events are in the order the agent observed them. */
export const TelemetryBatch = z.object({
  clientId: ClientId,
  /** Monotonic per client so the edge can drop replays and duplicates. */
  batchSeq: z.number().int().nonnegative(),
  sentAt: IsoDateTime,
  events: z.array(AccessEvent).min(1).max(MAX_TELEMETRY_EVENTS),
})
export type TelemetryBatch = z.infer<typeof TelemetryBatch>
