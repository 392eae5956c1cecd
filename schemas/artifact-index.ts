import { z } from 'zod'
import { ArtifactName, ByteSize, ChannelName, IsoDateTime, Sha256Hex, Version } from './common.ts'
import { SignedYankStatement } from './yank-statement.ts'

/** Why and when a maintainer pulled a published version (`deltaport yank`). */
export const YankNote = z.object({
  at: IsoDateTime,
  reason: z.string().trim().min(1).max(500),
})
export type YankNote = z.infer<typeof YankNote>

export const VersionEntry = z.object({
  version: Version,
  serial: z.number().int().positive(),
  size: ByteSize,
  sha256: Sha256Hex,
  createdAt: IsoDateTime,
  channels: z.array(ChannelName),
  /**
   * Set when the version was yanked: no channel points at it, plans and installs do not pick it, its
   * bytes stay served (devices that have it, explicit `--allow-yanked` installs).
   */
  yanked: YankNote.optional(),
  /**
   * The maintainer's latest signed yank or restore of this version, when the yank was signed: agents
   * running the version move back to the one they ran before only on this (ADR 0025).
   */
  yankStatement: SignedYankStatement.optional(),
  /**
   * How many times this version was yanked or restored (absent: never). Orders the edge's rollout
   * coordinators' view of the yank when a yank and a restore race (ADR 0024); not for agents.
   */
  yankRevision: z.number().int().positive().optional(),
})
export type VersionEntry = z.infer<typeof VersionEntry>

/**
 * What the edge keeps per artifact (R2 `artifacts/<name>/index.json`) and serves at
 * GET /v1/artifacts/:name. Unsigned convenience: agents trust only the signed manifests it points to.
 */
export const ArtifactIndex = z.object({
  name: ArtifactName,
  latestSerial: z.number().int().nonnegative(),
  versions: z.array(VersionEntry),
  channels: z.record(ChannelName, Version),
})
export type ArtifactIndex = z.infer<typeof ArtifactIndex>

/**
 * The version a channel points at. Own keys only: a channel named `constructor` or `toString` is "no
 * such channel", not a function inherited from Object.prototype.
 */
export function channelHead(index: ArtifactIndex, channel: string): string | undefined {
  return Object.hasOwn(index.channels, channel) ? index.channels[channel] : undefined
}

/** The version entry of `version`, if published. */
export function versionEntry(index: ArtifactIndex, version: string): VersionEntry | undefined {
  return index.versions.find((v) => v.version === version)
}
