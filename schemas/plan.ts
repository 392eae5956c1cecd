import { z } from 'zod'
import { ArtifactName, ByteSize, ChannelName, Sha256Hex, Version } from './common.ts'
import { DeltaFraming } from './delta-stream.ts'
import { DeltaMethod } from './manifest.ts'

/** Chunk hashes as in the chunk index: the first 16 bytes of SHA-256, hex. */
const ChunkHashHex = z.string().regex(/^[0-9a-f]{32}$/)

/** POST /v1/plan: what the device has and can do. */
export const PlanRequest = z.object({
  name: ArtifactName,
  /** The installed version, or null when the device has no trusted base (fresh or corrupted install). */
  installed: Version.nullable(),
  /** A version, or a channel name resolved through the artifact index. */
  target: z.union([Version, ChannelName]),
  capabilities: z.object({
    methods: z.array(DeltaMethod).max(8),
    chunkSync: z.boolean(),
    maxChainLength: z.number().int().min(1).max(8).optional(),
  }),
  /**
   * Optional: the chunk hashes the device holds locally (from its own chunk index). With them the
   * chunk-sync cost is exact even when `installed` is unknown to the edge.
   */
  haveChunks: z.array(ChunkHashHex).max(65_536).optional(),
})
export type PlanRequest = z.infer<typeof PlanRequest>

export const PlanDeltaStep = z.object({
  kind: z.literal('delta'),
  from: Version,
  to: Version,
  method: DeltaMethod,
  url: z.string(),
  /** Raw payload bytes (DeltaRef.size). */
  size: ByteSize,
  /** sha256 of the raw payload. */
  sha256: Sha256Hex,
  layout: DeltaFraming,
})
export type PlanDeltaStep = z.infer<typeof PlanDeltaStep>

export const PlanChunkSyncStep = z.object({
  kind: z.literal('chunk-sync'),
  from: Version.nullable(),
  to: Version,
  /** The target's chunk index. */
  url: z.string(),
  /** The target blob; missing chunks are fetched from it by Range. */
  blobUrl: z.string(),
  /** Target artifact size. */
  size: ByteSize,
  /** sha256 of the target artifact. */
  sha256: Sha256Hex,
  indexSize: ByteSize,
  indexSha256: Sha256Hex,
  /** Bytes expected on the wire (index + missing chunks). */
  estimatedBytes: ByteSize,
  estimate: z.enum(['exact', 'factor']),
})
export type PlanChunkSyncStep = z.infer<typeof PlanChunkSyncStep>

export const PlanFullStep = z.object({
  kind: z.literal('full'),
  from: z.null(),
  to: Version,
  url: z.string(),
  size: ByteSize,
  sha256: Sha256Hex,
})
export type PlanFullStep = z.infer<typeof PlanFullStep>

export const PlanStep = z.discriminatedUnion('kind', [PlanDeltaStep, PlanChunkSyncStep, PlanFullStep])
export type PlanStep = z.infer<typeof PlanStep>

/** `unavailable`: the target's full blob was pruned and no delta path reaches it from this base. */
export const PlanStrategy = z.enum(['none', 'delta', 'chain', 'chunk-sync', 'full', 'unavailable'])
export type PlanStrategy = z.infer<typeof PlanStrategy>

export const PlanResponse = z.object({
  name: ArtifactName,
  from: Version.nullable(),
  to: Version,
  strategy: PlanStrategy,
  /** Bytes on the wire for the chosen steps (framed length for deltas). */
  totalBytes: ByteSize,
  steps: z.array(PlanStep),
  /** Every strategy considered and its cost, cheapest first (for operators and tests). */
  considered: z.array(z.object({ strategy: PlanStrategy, bytes: ByteSize })),
})
export type PlanResponse = z.infer<typeof PlanResponse>
