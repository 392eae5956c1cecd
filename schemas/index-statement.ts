import { z } from 'zod'
import { ArtifactIndex } from './artifact-index.ts'
import { ArtifactName, IsoDateTime, Sha256Hex } from './common.ts'
import { signedEnvelope } from './manifest.ts'
import { canonicalJson, sha256Hex } from './signed-envelope.ts'

/**
 * The edge's signed, short-lived word on an artifact's index (ADR 0032): TUF's timestamp role. The
 * index itself (versions, channel heads, yank notes) is unsigned, so whatever sits between the edge and
 * a device — a cache, a mirror, a replay — could keep serving an old one, and the device would not
 * learn of a release for as long as the old head's manifest stays unexpired (90 days by default). An
 * agent configured with `indexKeys` accepts an index only with a statement that covers exactly it and
 * has not expired, which shrinks that window to the statement's lifetime (a day by default). The key
 * is online (the edge signs each answer), so this guards against stale copies, not a compromised edge.
 */
export const IndexStatement = z.strictObject({
  /** Its own type, so a signature over another kind of document can never pass for this one. */
  _type: z.literal('deltaport/index'),
  name: ArtifactName,
  /** sha256 (hex) of the served index's canonical JSON without its `statement` (indexDigest). */
  indexSha256: Sha256Hex,
  /** The index's latestSerial, repeated so a device can refuse an index older than what it installed. */
  latestSerial: z.number().int().nonnegative(),
  issuedAt: IsoDateTime,
  /** After this instant agents refuse the index it covers (freeze: how stale an answer may be). */
  expires: IsoDateTime,
})
export type IndexStatement = z.infer<typeof IndexStatement>

export const SignedIndexStatement = signedEnvelope(IndexStatement)
export type SignedIndexStatement = z.infer<typeof SignedIndexStatement>

/** GET /v1/artifacts/:name: the stored index plus, when the edge has INDEX_SIGNING_KEY, its statement. */
export const ServedIndex = ArtifactIndex.extend({ statement: SignedIndexStatement.optional() })
export type ServedIndex = z.infer<typeof ServedIndex>

/**
 * What a statement's indexSha256 covers: the index's canonical JSON (signed-envelope.ts) without the
 * `statement` field. The agent hashes the JSON exactly as it arrived, before its schema drops
 * anything, so every byte of meaning the edge sent is covered.
 */
export function indexDigest(index: Record<string, unknown>): Promise<string> {
  return digestWithoutStatement(index)
}

/**
 * sha256 (hex) of an answer's canonical JSON without its `statement` field: what a statement signed
 * into that answer covers (the index here, a rollout check in rollout-statement.ts).
 */
export function digestWithoutStatement(answer: Record<string, unknown>): Promise<string> {
  const { statement: _, ...covered } = answer
  return sha256Hex(new TextEncoder().encode(canonicalJson(covered)))
}
