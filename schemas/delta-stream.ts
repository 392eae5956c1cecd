import { z } from 'zod'
import { ArtifactName, ByteSize, Sha256Hex, Version } from './common.ts'
import { DeltaMethod } from './manifest.ts'

/** Block types of the framed delta stream (docs/formats/delta-stream.md has the byte layout). */
export const BlockType = z.enum(['metadata', 'data', 'parity', 'control'])
export type BlockType = z.infer<typeof BlockType>

/** The decoded fixed-size header every block carries. */
export const DeltaStreamBlockHeader = z.object({
  type: BlockType,
  sequence: z.number().int().nonnegative().max(0xffffffff),
  payloadLength: z.number().int().nonnegative().max(0xffffffff),
  checksum: z.number().int().nonnegative().max(0xffffffff),
})
export type DeltaStreamBlockHeader = z.infer<typeof DeltaStreamBlockHeader>

/** The first block's payload: what the stream carries and how it is cut. */
export const DeltaStreamMetadata = z.object({
  name: ArtifactName,
  from: Version.nullable(),
  to: Version,
  method: z.union([DeltaMethod, z.literal('full')]),
  payloadLength: ByteSize,
  payloadSha256: Sha256Hex,
  blockSize: z
    .number()
    .int()
    .min(512)
    .max(4 * 1024 * 1024),
  fec: z.object({ k: z.number().int().min(1).max(128), m: z.number().int().min(0).max(64) }),
})
export type DeltaStreamMetadata = z.infer<typeof DeltaStreamMetadata>

/** Control block hints from the edge to the agent's range controller. */
export const DeltaStreamControl = z.object({
  recommendedRangeBytes: z.number().int().positive().optional(),
  retryAfterMs: z.number().int().nonnegative().optional(),
})

/**
 * How the edge framed one stored delta (R2 customMetadata of `deltas/<name>/<from>/<to>/<method>`,
 * where values are strings, hence the coercion) and what the plan and response headers expose.
 */
export const DeltaFraming = z.object({
  blockSize: z.coerce
    .number()
    .int()
    .min(512)
    .max(16 * 1024 * 1024),
  k: z.coerce.number().int().min(1).max(128),
  m: z.coerce.number().int().min(0).max(64),
  /** Bytes of the framed stream as stored and served. */
  framedLength: z.coerce.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
  payloadLength: z.coerce.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
  payloadSha256: Sha256Hex,
})
export type DeltaFraming = z.infer<typeof DeltaFraming>
