import { z } from 'zod'
import { ChannelName, Sha256Hex, Version } from './common.ts'

/** R2 multipart rules: every part but the last is at least 5 MiB; at most 10,000 parts. */
export const MIN_PART_BYTES = 5 * 1024 * 1024
export const MAX_PARTS = 10_000
/** Parts beyond this are refused before R2 sees them (R2's own ceiling is 5 GiB). */
export const MAX_PART_BYTES = 512 * 1024 * 1024

export const PublishStarted = z.object({
  name: z.string(),
  version: z.string(),
  /**
   * Names this staged attempt (the sha256 of the envelope as staged): `DELETE …/attempts/:attempt`
   * gives it up, which only its holder can name. Absent from older edges.
   */
  attempt: Sha256Hex.optional(),
  /** Bodies up to this size go in one PUT; larger ones use multipart. */
  maxSinglePutBytes: z.number().int().positive(),
  /**
   * The size of each part but the last. Bounded as the edge sends it (at least R2's minimum, at most what
   * it takes in one part): a client reads one part into memory, and a part size of a byte would take
   * millions of requests.
   */
  partBytes: z.number().int().min(MIN_PART_BYTES).max(MAX_PART_BYTES),
})
export type PublishStarted = z.infer<typeof PublishStarted>

export const MultipartCreated = z.object({ uploadId: z.string().min(1).max(1024) })

export const UploadedPart = z.object({
  partNumber: z.number().int().min(1).max(MAX_PARTS),
  etag: z.string().min(1).max(256),
})
export type UploadedPart = z.infer<typeof UploadedPart>

/**
 * Parts in strictly ascending order (each once), as R2 and S3 require: a repeated or out-of-order list
 * is the caller's error (400), where R2 would answer with an internal error the edge reports as 503.
 */
export const CompleteMultipart = z.object({
  parts: z
    .array(UploadedPart)
    .min(1)
    .max(MAX_PARTS)
    .refine((parts) => parts.every((p, i) => i === 0 || p.partNumber > parts[i - 1]!.partNumber), {
      message: 'part numbers must be unique and ascending',
    }),
})

export const Published = z.object({
  name: z.string(),
  version: z.string(),
  serial: z.number().int(),
  size: z.number().int(),
  sha256: z.string(),
  /**
   * Channels the manifest names whose head stayed on a higher version: a head only moves up in semver,
   * so publishing an older version never downgrades a channel. Absent from older edges.
   */
  channelsNotMoved: z.array(z.object({ channel: ChannelName, head: Version })).optional(),
})
export type Published = z.infer<typeof Published>
