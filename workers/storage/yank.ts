import { gt as semverGreater } from 'semver'
import {
  type ArtifactIndex,
  type VersionEntry,
  versionEntry,
  type YankNote,
} from '../../schemas/artifact-index.ts'
import type { SignedYankStatement } from '../../schemas/yank-statement.ts'
import { Problem } from '../http/problem.ts'
import { changeIndex } from './artifact-store.ts'

/**
 * Marks a published version yanked (`note`) or restores it (`null`), and moves the heads of the
 * channels it was published to: each becomes the highest version of the channel that is not yanked
 * (none if all are). Why heads move down here although publishing only ever moves them up: a yank says
 * the version must not be picked again, and the head is what fresh installs, plans, the daemon's
 * prefetch and rollouts pick. Nothing is deleted: devices that run the version keep being able to fetch
 * its manifest and deltas from it. Written through changeIndex like every index change.
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
      channels: headsAfter(current.channels, versions, entry.channels),
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
