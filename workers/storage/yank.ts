import { gt as semverGreater } from 'semver'
import {
  type ArtifactIndex,
  type VersionEntry,
  versionEntry,
  type YankNote,
} from '../../schemas/artifact-index.ts'
import type { SignedYankStatement } from '../../schemas/yank-statement.ts'
import { Problem } from '../http/problem.ts'
import { changeIndex, readIndex } from './artifact-store.ts'
import { keys } from './keys.ts'

/**
 * Marks a published version yanked (`note`) or restores it (`null`), and moves the heads of the
 * channels it was published to: each becomes the highest version of the channel that is not yanked
 * (none if all are). Why heads move down here although publishing only ever moves them up: a yank says
 * the version must not be picked again, and the head is what fresh installs, plans, the daemon's
 * prefetch and rollouts pick. Nothing is deleted: devices that run the version keep being able to fetch
 * its manifest and deltas from it. Written through changeIndex like every index change.
 *
 * A head that moves goes to the highest such version that is still installable: under `deltas-preferred`
 * retention deletes the full blobs of old versions (keeping only each head's and the one a yank of the
 * head falls back to), so a second yank before the next retention pass, or a restore of an old version,
 * could otherwise land a channel on a version nobody can install fresh or retreat to. Versions passed
 * over for that are the channel's versions not yanked above its head (`passedOver`); a channel with none
 * installable is left without a head. A head that does not move stays as it is.
 *
 * A signed `statement` is kept on the entry for agents to verify. Here the edge checks that it says
 * what this request does (ADR 0025); its signature is checked by the route when MAINTAINER_KEYS is set
 * (ADR 0031). A change without one drops the previous statement, so the index never shows a signed
 * word that contradicts its note.
 */
export async function setYanked(
  bucket: R2Bucket,
  name: string,
  version: string,
  note: YankNote | null,
  statement?: SignedYankStatement,
): Promise<ArtifactIndex> {
  const before = await readIndex(bucket, name)
  const missing = before
    ? await blobsMissing(bucket, before.index, version, note !== null)
    : new Set<string>()
  return changeIndex(bucket, name, (current) => {
    const entry = current && versionEntry(current, version)
    if (!current || !entry) throw new Problem(404, 'not-found', `${name}@${version} is not published`)
    if (statement) checkStatement(statement, name, entry, note)
    const versions = current.versions.map((v) => {
      if (v.version !== version) return v
      const { yanked: _previous, yankStatement: _statement, ...rest } = v
      return {
        ...rest,
        // Counts this version's yanks and restores, so coordinators told of them out of order can
        // tell which is the index's latest word (RolloutCoordinator.abortVersion / restoreVersion).
        yankRevision: (v.yankRevision ?? 0) + 1,
        ...(note ? { yanked: note } : {}),
        ...(statement ? { yankStatement: statement } : {}),
      }
    })
    const next: ArtifactIndex = {
      ...current,
      versions,
      channels: headsAfter(current.channels, versions, entry.channels, missing),
    }
    return { next, result: next }
  })
}

/**
 * How far ahead of the edge's clock a statement's `at` may be. Devices act on the newest statement per
 * version, so one dated years ahead (a signing machine with a wrong clock) would outrank every later
 * restore or yank of that version for good.
 */
export const MAX_STATEMENT_AHEAD_MS = 60 * 60 * 1000

/**
 * A statement must say what the request does, about this version's bytes, not be stale already, and
 * not be dated in the future.
 */
function checkStatement(
  statement: SignedYankStatement,
  name: string,
  entry: VersionEntry,
  note: YankNote | null,
) {
  const said = statement.signed
  const mismatch =
    said.name !== name || said.version !== entry.version
      ? `it is about ${said.name}@${said.version}`
      : said.sha256 !== entry.sha256
        ? "its sha256 is not the version's"
        : said.yanked !== (note !== null)
          ? `it says ${said.yanked ? 'yanked' : 'restored'}`
          : note && said.reason !== note.reason
            ? "its reason differs from the request's"
            : Date.parse(said.expires) <= Date.now()
              ? `it expired at ${said.expires}`
              : Date.parse(said.at) > Date.now() + MAX_STATEMENT_AHEAD_MS
                ? `it was signed at ${said.at}, ahead of this edge's clock (check the signing machine's clock)`
                : null
  if (mismatch) {
    throw new Problem(422, 'invalid-statement', `the signed statement does not fit this request: ${mismatch}`)
  }
}

/**
 * Versions whose full blob is gone among those this yank (or restore) of `version` could make a channel
 * head: per channel, its versions not yanked, newest first, checked until one is present. One head per
 * channel in the usual case (the fallback's blob is kept by retention). Read before the index change: a
 * version published meanwhile has its blob, and one missing from this set counts as installable.
 */
async function blobsMissing(
  bucket: R2Bucket,
  index: ArtifactIndex,
  version: string,
  yanking: boolean,
): Promise<Set<string>> {
  const entry = versionEntry(index, version)
  const missing = new Set<string>()
  const present = new Set<string>()
  for (const channel of entry?.channels ?? []) {
    const candidates = index.versions
      .filter((v) => v.channels.includes(channel) && (v.version === version ? !yanking : !v.yanked))
      .map((v) => v.version)
      .sort((a, b) => (semverGreater(a, b) ? -1 : semverGreater(b, a) ? 1 : 0))
    for (const candidate of candidates) {
      if (present.has(candidate)) break
      if (missing.has(candidate)) continue
      if (await bucket.head(keys.blob(index.name, candidate))) {
        present.add(candidate)
        break
      }
      missing.add(candidate)
    }
  }
  return missing
}

/**
 * The heads of `touched` channels recomputed from the versions not yanked; other heads unchanged. A head
 * that moves skips versions in `missing` (no blob: not installable); one that stays is kept as it is.
 */
function headsAfter(
  heads: ArtifactIndex['channels'],
  versions: ArtifactIndex['versions'],
  touched: readonly string[],
  missing: ReadonlySet<string>,
): ArtifactIndex['channels'] {
  const channels = { ...heads }
  const highest = (channel: string, skip: ReadonlySet<string>) => {
    let head: string | undefined
    for (const v of versions) {
      if (v.yanked || !v.channels.includes(channel) || skip.has(v.version)) continue
      if (head === undefined || semverGreater(v.version, head)) head = v.version
    }
    return head
  }
  for (const channel of touched) {
    const plain = highest(channel, new Set())
    const head = plain === heads[channel] ? plain : highest(channel, missing)
    if (head === undefined) delete channels[channel]
    else channels[channel] = head
  }
  return channels
}

/**
 * Per channel of the version, its versions not yanked above the head it has now: those a yank or restore
 * passed over because their full blob is gone (setYanked), newest first. Channels with none are left out.
 */
export function headsPassedOver(index: ArtifactIndex, version: string): Record<string, string[]> {
  const passed: Record<string, string[]> = {}
  for (const channel of versionEntry(index, version)?.channels ?? []) {
    const head = index.channels[channel]
    const above = index.versions
      .filter(
        (v) =>
          !v.yanked && v.channels.includes(channel) && (head === undefined || semverGreater(v.version, head)),
      )
      .map((v) => v.version)
      .sort((a, b) => (semverGreater(a, b) ? -1 : 1))
    if (above.length > 0) passed[channel] = above
  }
  return passed
}
