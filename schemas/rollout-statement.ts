import { z } from 'zod'
import { ClientId } from './client.ts'
import { ArtifactName, ChannelName, IsoDateTime, Sha256Hex } from './common.ts'
import { signedEnvelope } from './manifest.ts'
import { RolloutCheck } from './rollout.ts'

/**
 * The edge's signed, short-lived word on one rollout answer, made with the index key (ADR 0034). A
 * rollout answer decides whether a device may take the channel's new version now, so an unsigned one
 * let whatever sits between the edge and a device (a cache, a mirror, a replay) hold it back on the old
 * version for as long as it liked: TUF's freeze attack through the rollout instead of the index. An
 * agent with `indexKeys` accepts an answer only with a statement that covers exactly it, names the
 * client that asked, and has not expired.
 */
export const RolloutCheckStatement = z.strictObject({
  /** Its own type: an index statement, signed by the same key, can never pass for this one. */
  _type: z.literal('deltaport/rollout-check'),
  name: ArtifactName,
  channel: ChannelName,
  /** The client the answer is for: one device's answer cannot be replayed to another. */
  client: ClientId,
  /** sha256 (hex) of the answer's canonical JSON without its `statement` (digestWithoutStatement). */
  checkSha256: Sha256Hex,
  issuedAt: IsoDateTime,
  /** After this instant agents refuse the answer it covers. */
  expires: IsoDateTime,
})
export type RolloutCheckStatement = z.infer<typeof RolloutCheckStatement>

export const SignedRolloutCheckStatement = signedEnvelope(RolloutCheckStatement)
export type SignedRolloutCheckStatement = z.infer<typeof SignedRolloutCheckStatement>

/** GET /v1/rollouts/:name/:channel?client=: the answer plus, when the edge has INDEX_SIGNING_KEY, its statement. */
export const ServedRolloutCheck = RolloutCheck.extend({ statement: SignedRolloutCheckStatement.optional() })
export type ServedRolloutCheck = z.infer<typeof ServedRolloutCheck>
