import { z } from 'zod'
import { ClientId, RegionName } from './client.ts'
import { ArtifactName, ByteSize, IsoDateTime, Sha256Hex, Version } from './common.ts'
import { signedEnvelope } from './manifest.ts'

/** One thing worth staging on a device before it is asked for, with how to fetch it cheaply. */
export const PrefetchItem = z.object({
  name: ArtifactName,
  version: Version,
  probability: z.number().min(0).max(1),
  confidence: z.number().min(0).max(1),
  /** probability × bytes saved ÷ network cost: the queue's ordering key. */
  expectedValue: z.number().nonnegative(),
  plan: z.object({
    kind: z.enum(['delta', 'full']),
    from: Version.optional(),
    url: z.string().max(1024),
    size: ByteSize,
    sha256: Sha256Hex,
  }),
  /**
   * A staged rollout admits this client at this time: stage the bytes now, install from then
   * (durable-objects/rollout-coordinator.ts). Absent for anything installable now.
   */
  scheduledAt: IsoDateTime.optional(),
})
export type PrefetchItem = z.infer<typeof PrefetchItem>

export const PrefetchQueue = z.object({
  clientId: z.string().max(64),
  generatedAt: IsoDateTime,
  /** Clients should not poll again before this. */
  validUntil: IsoDateTime,
  items: z.array(PrefetchItem).max(256),
})
export type PrefetchQueue = z.infer<typeof PrefetchQueue>

/**
 * The edge's signed, short-lived word on one prefetch queue, made with the index key as rollout answers
 * are (ADR 0034, amended 2026-11-26). A queue decides what a device spends its bandwidth and staging
 * budget on; unsigned, whatever sat between the edge and the device (a cache, a mirror, a replay of
 * another device's queue) chose for it. An agent with `indexKeys` acts on a queue only with a statement
 * that covers exactly it (every item's name, version and plan through `queueSha256`), names this device,
 * and has not expired.
 */
export const PrefetchPlanStatement = z.strictObject({
  /** Its own type: an index statement or rollout answer, signed by the same key, never passes for it. */
  _type: z.literal('deltaport/prefetch-plan'),
  /** The client (an enrolled device: its device id) the queue was planned for: never another's. */
  client: ClientId,
  /** The region whose aggregator planned it (the device cannot check it: it does not know its region). */
  region: RegionName,
  /**
   * sha256 (hex) of the queue's canonical JSON without its `statement` (digestWithoutStatement): binds
   * `clientId`, `validUntil` and each item (artifact, version, plan, scheduledAt) to the signature.
   */
  queueSha256: Sha256Hex,
  issuedAt: IsoDateTime,
  /** After this instant agents refuse the queue it covers. */
  expires: IsoDateTime,
})
export type PrefetchPlanStatement = z.infer<typeof PrefetchPlanStatement>

export const SignedPrefetchPlanStatement = signedEnvelope(PrefetchPlanStatement)
export type SignedPrefetchPlanStatement = z.infer<typeof SignedPrefetchPlanStatement>

/** GET /v1/prefetch: the queue plus, when the edge has INDEX_SIGNING_KEY, its statement. */
export const ServedPrefetchQueue = PrefetchQueue.extend({ statement: SignedPrefetchPlanStatement.optional() })
export type ServedPrefetchQueue = z.infer<typeof ServedPrefetchQueue>
