import { z } from 'zod'
import { YankNote } from './artifact-index.ts'
import { ArtifactName, ChannelName, Version } from './common.ts'

/** Body of PUT /v1/publish/:name/:version/yank. */
export const YankRequest = z.object({ reason: YankNote.shape.reason })
export type YankRequest = z.infer<typeof YankRequest>

/** Response of PUT and DELETE /v1/publish/:name/:version/yank: the version's state and the heads after. */
export const YankResult = z.object({
  name: ArtifactName,
  version: Version,
  yanked: YankNote.nullable(),
  /** Every channel head after the change (a channel whose versions are all yanked has none). */
  channels: z.record(ChannelName, Version),
  /** Rollouts of this version that the yank aborted, by channel. */
  rolloutsAborted: z.array(ChannelName),
})
export type YankResult = z.infer<typeof YankResult>
