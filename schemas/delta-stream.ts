import { z } from 'zod'
import { ByteSize, Sha256Hex } from './common.ts'

/** Block types of the framed delta stream (docs/formats/delta-stream.md has the byte layout). */
export const BlockType = z.enum(['metadata', 'data', 'parity', 'control'])
export type BlockType = z.infer<typeof BlockType>

const U32 = z.number().int().nonnegative().max(0xffffffff)

/**
 * The decoded 32-byte header every block carries (delta/stream/header.ts `BlockHeader`); the magic, the
 * reserved bytes and the header CRC are checked by `readHeader` and not part of the decoded value.
 */
export const DeltaStreamBlockHeader = z.object({
  type: BlockType,
  /** Bit 0: the final data block; no other bit is defined. */
  flags: z.number().int().min(0).max(1),
  sequence: U32,
  group: U32,
  indexInGroup: z.number().int().nonnegative().max(0xffff),
  payloadLength: U32,
  /** First 4 bytes of the payload's SHA-256, read big-endian. */
  streamTag: U32,
  /** CRC32C of the whole payload area, padding included. */
  payloadCrc: U32,
})
export type DeltaStreamBlockHeader = z.infer<typeof DeltaStreamBlockHeader>

const ShortString = z.string().min(1).max(256)

/**
 * Block 0's payload, exactly as docs/formats/delta-stream.md lays it out and delta/stream/metadata.ts
 * (`validateMetadata`, the one that decides) reads it. `blockCount` must also equal
 * `1 + controlBlocks + D + ceil(D / k)·m` with `D = ceil(payloadLength / blockSize)`, at most 2^32 − 1,
 * and `blockCount · (32 + blockSize)` at most 2^53 − 1; JSON Schema cannot say that, the refinement does.
 */
export const DeltaStreamMetadata = z
  .object({
    format: z.literal('deltaport-stream'),
    version: z.literal(1),
    artifact: ShortString,
    fromVersion: ShortString.nullable(),
    toVersion: ShortString,
    method: ShortString,
    payloadLength: ByteSize,
    sha256: Sha256Hex,
    blockSize: z
      .number()
      .int()
      .min(512)
      .max(16 * 1024 * 1024),
    k: z.number().int().min(1).max(256),
    m: z.number().int().min(0).max(255),
    controlBlocks: z.number().int().min(0).max(16),
    blockCount: z.number().int().min(1).max(0xffffffff),
  })
  .refine((v) => v.k + v.m <= 256, { message: 'k + m must be at most 256', path: ['m'] })
  .refine(
    (v) => {
      const data = Math.ceil(v.payloadLength / v.blockSize)
      const count = 1 + v.controlBlocks + data + Math.ceil(data / v.k) * v.m
      return v.blockCount === count && v.blockCount * (32 + v.blockSize) <= Number.MAX_SAFE_INTEGER
    },
    { message: 'blockCount must equal the computed block count', path: ['blockCount'] },
  )
export type DeltaStreamMetadata = z.infer<typeof DeltaStreamMetadata>

/** A control block's payload: optional hints (other keys ignored); the agent does not act on them yet. */
export const DeltaStreamControl = z.object({
  recommendedChunkSize: ByteSize.optional(),
  retryAfterMs: ByteSize.optional(),
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
