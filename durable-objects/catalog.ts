/**
 * What the prefetch planner needs from R2: channel heads and manifests. Read through the edge's
 * artifact store so the key layout and parsing live in one place; memoised per request because the
 * planner asks about the same artifact several times.
 */
import { type ArtifactIndex, channelHead, versionEntry } from '../schemas/artifact-index.ts'
import type { ArtifactManifest } from '../schemas/manifest.ts'
import { readIndex, readPublishedManifest } from '../workers/storage/artifact-store.ts'
import type { Catalog } from './catalog-types.ts'

export type { Catalog, ChannelHead } from './catalog-types.ts'

/** A corrupt stored document is logged and treated as absent: one bad artifact must not fail the queue. */
async function orNull<T>(what: string, read: () => Promise<T | null>): Promise<T | null> {
  try {
    return await read()
  } catch (error) {
    console.log(JSON.stringify({ level: 'warn', msg: 'catalog read failed', what, error: String(error) }))
    return null
  }
}

export function r2Catalog(bucket: R2Bucket): Catalog {
  const indexes = new Map<string, Promise<ArtifactIndex | null>>()
  const manifests = new Map<string, Promise<ArtifactManifest | null>>()
  const indexOf = (name: string): Promise<ArtifactIndex | null> => {
    let found = indexes.get(name)
    if (found === undefined) {
      found = orNull(`index ${name}`, async () => (await readIndex(bucket, name))?.index ?? null)
      indexes.set(name, found)
    }
    return found
  }
  return {
    async head(name, channel) {
      const index = await indexOf(name)
      const version = index && channelHead(index, channel)
      const entry = index?.versions.find((v) => v.version === version)
      return entry === undefined ? null : { version: entry.version, createdAt: Date.parse(entry.createdAt) }
    },
    async yanked(name, version) {
      const index = await indexOf(name)
      return index !== null && versionEntry(index, version)?.yanked !== undefined
    },
    manifest(name, version) {
      const key = `${name}\u0000${version}`
      let found = manifests.get(key)
      if (found === undefined) {
        found = orNull(`manifest ${name}@${version}`, async () => {
          const stored = await readPublishedManifest(bucket, name, version)
          return stored?.envelope.signed ?? null
        })
        manifests.set(key, found)
      }
      return found
    },
  }
}
