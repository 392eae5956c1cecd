import { z } from 'zod'
import { ArtifactName, ByteSize, IsoDateTime, Sha256Hex, Version } from './common.ts'

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
