import { z } from 'zod'
import { ArtifactName, ChannelName, IsoDateTime } from './common.ts'
import { signedEnvelope } from './manifest.ts'
import { RolloutControl, RolloutSpec } from './rollout.ts'

/** The maintainer actions on a staged rollout a statement can authorise (status is a read). */
export const RolloutControlAction = z.enum(['start', 'pause', 'resume', 'abort'])
export type RolloutControlAction = z.infer<typeof RolloutControlAction>

/** The request text a statement carries: a rollout spec or a reason is a few hundred bytes. */
export const MAX_ROLLOUT_REQUEST_CHARS = 8 * 1024

/**
 * How long a statement may be acted on: long enough to sign on one machine and send from another,
 * short enough that a captured one is useless soon (the coordinator also takes each one once).
 */
export const MAX_ROLLOUT_STATEMENT_LIFETIME_MS = 24 * 3600 * 1000

/**
 * The maintainers' signed word for one rollout control request (ADR 0038): with runtime config
 * `rollout.requireStatement`, the edge starts, pauses, resumes and aborts rollouts only on one, so
 * `PUBLISH_TOKEN` alone can neither hold a release back from devices nor push one to them.
 *
 * `request` is the request body as JSON text, signed as sent: the edge parses that text, not the body
 * beside it, so what runs is exactly what was signed (a parsed object would gain defaults and lose the
 * signature). Signed like a manifest, with its own `_type` so no other signed document passes as one.
 */
export const RolloutControlStatement = z.strictObject({
  _type: z.literal('deltaport/rollout-control'),
  name: ArtifactName,
  channel: ChannelName,
  action: RolloutControlAction,
  /** The body of the request it authorises, as JSON text (`{}` for a bare pause, resume or abort). */
  request: z.string().min(2).max(MAX_ROLLOUT_REQUEST_CHARS),
  /** When it was signed: the rollout coordinator takes only statements newer than the last it took. */
  at: IsoDateTime,
  /** After this the edge refuses it; at most a day after `at`. */
  expires: IsoDateTime,
})
export type RolloutControlStatement = z.infer<typeof RolloutControlStatement>

export const SignedRolloutControlStatement = signedEnvelope(RolloutControlStatement)
export type SignedRolloutControlStatement = z.infer<typeof SignedRolloutControlStatement>

/** The body of a signed control request: the statement alone (its `request` is the body it stands for). */
export const SignedRolloutControl = z.strictObject({ statement: SignedRolloutControlStatement })
export type SignedRolloutControl = z.infer<typeof SignedRolloutControl>

/** Body of POST …/start: the spec, or a signed statement carrying it (the edge tells them apart by `statement`). */
export const RolloutStartRequest = z.union([SignedRolloutControl, RolloutSpec])
/** Body of POST …/pause, …/resume, …/abort: a reason (optional), or a signed statement carrying it. */
export const RolloutControlRequest = z.union([SignedRolloutControl, RolloutControl])
