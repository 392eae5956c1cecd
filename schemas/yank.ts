import { z } from 'zod'
import { YankNote } from './artifact-index.ts'
import { ArtifactName, ChannelName, Version } from './common.ts'
import { SignedYankStatement } from './yank-statement.ts'

/**
 * Body of PUT /v1/publish/:name/:version/yank. With `statement` (signed by the maintainer's key, same
 * name, version, sha256 and reason, `yanked: true`) devices running the version move back to the one
 * they ran before; without it they are only warned.
 */
export const YankRequest = z.object({
  reason: YankNote.shape.reason,
  statement: SignedYankStatement.optional(),
})
export type YankRequest = z.infer<typeof YankRequest>

/** Optional body of DELETE /v1/publish/:name/:version/yank: a signed restore (`yanked: false`). */
export const RestoreRequest = z.object({ statement: SignedYankStatement.optional() })
export type RestoreRequest = z.infer<typeof RestoreRequest>

/** Response of PUT and DELETE /v1/publish/:name/:version/yank: the version's state and the heads after. */
export const YankResult = z.object({
  name: ArtifactName,
  version: Version,
  yanked: YankNote.nullable(),
  /** Whether the edge now holds a signed statement for the version (devices can act on it). */
  signed: z.boolean(),
  /** Every channel head after the change (a channel whose versions are all yanked has none). */
  channels: z.record(ChannelName, Version),
  /**
   * Channels the version was published to that are left with no head: every version of them is yanked,
   * so installs, updates and plans of the channel find nothing until a version is published or restored.
   * Defaults to none for an edge from before the field.
   */
  channelsWithoutHead: z.array(ChannelName).default([]),
  /**
   * Per channel of the version, the versions not yanked that its head passed over because their full
   * artifact is gone (retention under `deltas-preferred` deleted it): nobody could install them fresh or
   * move back to them, so the head is the highest version still installable (none if no version is).
   * Channels with none are left out; empty from an edge from before the field.
   */
  headsPassedOver: z.record(ChannelName, z.array(Version)).default({}),
  /** Rollouts of this version that the yank aborted, by channel. */
  rolloutsAborted: z.array(ChannelName),
})
export type YankResult = z.infer<typeof YankResult>
