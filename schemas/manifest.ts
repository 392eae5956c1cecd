import { z } from 'zod'
import { ArtifactName, Base64, ByteSize, ChannelName, IsoDateTime, Sha256Hex, Version } from './common.ts'

/** Methods a delta can be encoded with; `full` is the artifact itself. */
export const DeltaMethod = z.enum(['vcdiff', 'approx', 'archive'])
export type DeltaMethod = z.infer<typeof DeltaMethod>

/** A delta from an older version to this one, as listed in the signed manifest. */
export const DeltaRef = z.strictObject({
  from: Version,
  method: DeltaMethod,
  /**
   * Bytes of the raw (unframed) delta payload, as the publisher uploads it. The edge frames it into the
   * DeltaStream served at /v1/deltas/:name/:from/:to; the framed length is in that object's metadata.
   */
  size: ByteSize,
  /** sha256 of the raw (unframed) delta payload. */
  sha256: Sha256Hex,
})
export type DeltaRef = z.infer<typeof DeltaRef>

export const DependencyRef = z.strictObject({
  name: ArtifactName,
  /** A semver range, bounded; validated as a range by the agent when it resolves dependencies. */
  range: z.string().min(1).max(128),
})
export type DependencyRef = z.infer<typeof DependencyRef>

/** Where the content-defined chunk index of this version lives (for chunk-sync from any base). */
export const ChunkIndexRef = z.strictObject({
  size: ByteSize,
  sha256: Sha256Hex,
  chunkCount: z.number().int().nonnegative(),
})
export type ChunkIndexRef = z.infer<typeof ChunkIndexRef>

export const ArtifactManifest = z.strictObject({
  /** Bumped when the manifest shape changes incompatibly. */
  schemaVersion: z.literal(1),
  name: ArtifactName,
  version: Version,
  size: ByteSize,
  sha256: Sha256Hex,
  mediaType: z.string().min(1).max(128),
  dependencies: z.array(DependencyRef).max(256),
  channels: z.array(ChannelName).max(16),
  createdAt: IsoDateTime,
  /** After this instant agents refuse the manifest (defends against freeze attacks). */
  expires: IsoDateTime,
  /** Per-artifact, strictly increasing across publishes (defends against rollback attacks). */
  serial: z.number().int().positive(),
  chunkIndex: ChunkIndexRef.nullable(),
  deltas: z.array(DeltaRef).max(64),
})
export type ArtifactManifest = z.infer<typeof ArtifactManifest>

/**
 * The most one publish may raise an artifact's serial: the edge refuses more (assertPublishable,
 * workers/storage/artifact-store.ts), and `deltaport publish` signs no more above the highest serial
 * it can verify (client-agent/publish.ts), so neither a stolen key through the edge nor an edge lying
 * about the latest serial takes the serial to its largest value in one publish: past that no release
 * could ever be published again (every later serial must be higher), and devices that installed it
 * would refuse every later one. The CLI publishes latest + 1; the step leaves room for schemes of one's
 * own (a Unix time in seconds, a date-stamped build number). Reaching the largest value now takes
 * about two million publishes.
 */
export const MAX_SERIAL_STEP = 2 ** 32

export const Signature = z.object({
  /** sha256 (hex) of the raw 32-byte Ed25519 public key. */
  keyid: Sha256Hex,
  /** Ed25519 signature over the canonical JSON of `signed`, base64. */
  sig: Base64,
})

/**
 * Most signatures one envelope carries. It caps every threshold too (root roles, maintainerThreshold):
 * a threshold above it could never be met, so a root or config asking for more is refused up front.
 */
export const MAX_SIGNATURES = 8

/**
 * TUF-style envelope: the signed body plus detached signatures (at most 8) over its canonical JSON.
 * Signed bodies are strict objects without transforms: a field the schema does not know would be
 * dropped by parsing, and the edge stores and agents verify the parsed body, so the signature would
 * no longer cover it. Unknown fields are refused by name instead (HTTP 400 at the edge).
 */
export function signedEnvelope<Body extends z.ZodType>(body: Body) {
  return z.object({ signed: body, signatures: z.array(Signature).min(1).max(MAX_SIGNATURES) })
}

export const SignedManifest = signedEnvelope(ArtifactManifest)
export type SignedManifest = z.infer<typeof SignedManifest>

/** Upper bound on a stored envelope; the edge refuses larger publish bodies before parsing. */
export const MAX_MANIFEST_BYTES = 64 * 1024
