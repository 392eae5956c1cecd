import { gt as semverGreater } from 'semver'
import { type ArtifactIndex, versionEntry, type YankNote } from '../../schemas/artifact-index.ts'
import { Problem } from '../http/problem.ts'
import { changeIndex } from './artifact-store.ts'

/**
 * Marks a published version yanked (`note`) or restores it (`null`), and moves the heads of the
 * channels it was published to: each becomes the highest version of the channel that is not yanked
 * (none if all are). Why heads move down here although publishing only ever moves them up: a yank says
 * the version must not be picked again, and the head is what fresh installs, plans, the daemon's
 * prefetch and rollouts pick. Nothing is deleted: devices that run the version keep being able to fetch
 * its manifest and deltas from it. Written through changeIndex like every index change.
 */
export async function setYanked(
  bucket: R2Bucket,
  name: string,
  version: string,
  note: YankNote | null,
): Promise<ArtifactIndex> {
  return changeIndex(bucket, name, (current) => {
    const entry = current && versionEntry(current, version)
    if (!current || !entry) throw new Problem(404, 'not-found', `${name}@${version} is not published`)
    const versions = current.versions.map((v) => {
      if (v.version !== version) return v
      const { yanked: _previous, ...rest } = v
      return note ? { ...rest, yanked: note } : rest
    })
    const next: ArtifactIndex = {
      ...current,
      versions,
      channels: headsAfter(current.channels, versions, entry.channels),
    }
    return { next, result: next }
  })
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
