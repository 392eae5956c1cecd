import type { ArtifactManifest } from '../schemas/manifest.ts'

/**
 * What the prefetch planner reads: channel heads and manifests. Kept free of Workers types so the pure
 * planner also runs in Node (bench/prefetch replays it with an in-memory catalog).
 */
export interface ChannelHead {
  version: string
  createdAt: number
}

export interface Catalog {
  head(name: string, channel: string): Promise<ChannelHead | null>
  manifest(name: string, version: string): Promise<ArtifactManifest | null>
  /** Whether the artifact's index marks `version` yanked (false when unknown or unreadable). */
  yanked(name: string, version: string): Promise<boolean>
}
