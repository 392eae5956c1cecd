import { gt as semverGreater } from 'semver'
import { type ArtifactIndex, versionEntry, type YankNote } from '../../schemas/artifact-index.ts'
import { Problem } from '../http/problem.ts'
import { readIndex } from './artifact-store.ts'
import { keys } from './keys.ts'

/**
 * Marks a published version yanked (`note`) or restores it (`null`), and moves the heads of the
 * channels it was published to: each becomes the highest version of the channel that is not yanked
 * (none if all are). Why heads move down here although publishing only ever moves them up: a yank says
 * the version must not be picked again, and the head is what fresh installs, plans, the daemon's
 * prefetch and rollouts pick. Nothing is deleted: devices that run the version keep being able to fetch
 * its manifest and deltas from it. A compare-and-swap on the index like every index change.
 */
export async function setYanked(
  bucket: R2Bucket,
  name: string,
  version: string,
  note: YankNote | null,
): Promise<ArtifactIndex> {
  for (let attempt = 0; attempt < 8; attempt++) {
    const current = await readIndex(bucket, name)
    const entry = current && versionEntry(current.index, version)
    if (!current || !entry) throw new Problem(404, 'not-found', `${name}@${version} is not published`)
    const versions = current.index.versions.map((v) => {
      if (v.version !== version) return v
      const { yanked: _previous, ...rest } = v
      return note ? { ...rest, yanked: note } : rest
    })
    const next: ArtifactIndex = {
      ...current.index,
      versions,
      channels: headsAfter(current.index.channels, versions, entry.channels),
    }
    const written = await bucket.put(keys.index(name), JSON.stringify(next), {
      httpMetadata: { contentType: 'application/json' },
      onlyIf: { etagMatches: current.etag },
    })
    if (written) return next
  }
  throw new Problem(409, 'conflict', `the index of ${name} kept changing; retry`)
}

/** The heads of `touched` channels recomputed from the versions not yanked; other heads unchanged. */
function headsAfter(
  heads: ArtifactIndex['channels'],
  versions: ArtifactIndex['versions'],
  touched: readonly string[],
): ArtifactIndex['channels'] {
  const channels = { ...heads }
  for (const channel of touched) {
    let head: string | undefined
    for (const v of versions) {
      if (v.yanked || !v.channels.includes(channel)) continue
      if (head === undefined || semverGreater(v.version, head)) head = v.version
    }
    if (head === undefined) delete channels[channel]
    else channels[channel] = head
  }
  return channels
}
