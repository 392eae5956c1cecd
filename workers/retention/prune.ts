import { gt as semverGreater } from 'semver'
import type { ArtifactIndex } from '../../schemas/artifact-index.ts'
import type { RuntimeConfig } from '../../schemas/runtime-config.ts'
import { readIndex } from '../storage/artifact-store.ts'
import { keys } from '../storage/keys.ts'
import { deleteAll, listAll } from './bucket-walk.ts'
import { pruneLeftovers } from './leftovers.ts'
import {
  isMarkedManifest,
  manifestKeyParts,
  repairListedManifests,
  resolveStalledCommits,
} from './stalled-commits.ts'

const DAY_MS = 86_400_000

export interface PruneReport {
  artifacts: number
  deltasDeleted: string[]
  blobsDeleted: string[]
  /** Orphans of faulted deletes and dead requests (leftovers.ts). */
  leftoversDeleted: string[]
  /** Final manifests dead commits left marked committing: unmarked if published, else withdrawn. */
  manifestsUnmarked: string[]
  manifestsWithdrawn: string[]
  /** Listed versions whose unservable manifest was put back from the displaced claim of their entry. */
  manifestsRestored: string[]
  /** Listed versions whose manifest is still not servable (nothing to restore it from; logged). */
  manifestsUnservable: string[]
}

/**
 * Storage retention, run from the cron trigger:
 * - deltas older than `retainDeltasDays` are deleted, except those into a current channel head (the
 *   ones devices still need most; they go once the head moves on);
 * - under `storage: 'deltas-preferred'`, full blobs beyond the newest `keepFullVersions` (by serial) are
 *   deleted, channel heads always kept, and so is the version each head falls back to if it is yanked. Manifests, indexes and chunk indexes stay: they are small and
 *   they keep chains through old versions plannable;
 * - orphans of faulted deletes and dead requests (staging objects, locks, lazy-delta refusals) once
 *   nothing can still use them (leftovers.ts);
 * - final manifests a commit that died left marked committing, after a staged publish's grace:
 *   unmarked if the index lists the version, withdrawn if not (stalled-commits.ts);
 * - versions the index lists whose manifest is not servable (a stalled commit that was taken over, then
 *   died): put back from the claim kept when it was displaced, else reported (stalled-commits.ts).
 * `now` is injected so tests can age objects without waiting.
 */
export async function pruneStorage(
  bucket: R2Bucket,
  config: RuntimeConfig,
  now: number,
): Promise<PruneReport> {
  const report: PruneReport = {
    artifacts: 0,
    deltasDeleted: [],
    blobsDeleted: [],
    leftoversDeleted: [],
    manifestsUnmarked: [],
    manifestsWithdrawn: [],
    manifestsRestored: [],
    manifestsUnservable: [],
  }
  const { names, marked, servable } = await walkArtifacts(bucket)
  for (const name of names) {
    const found = await readIndex(bucket, name)
    if (!found) continue
    report.artifacts++
    const repairs = await repairListedManifests(bucket, found.index, servable)
    report.manifestsRestored.push(...repairs.restored)
    report.manifestsUnservable.push(...repairs.unservable)
    const heads = new Set(Object.values(found.index.channels))
    report.deltasDeleted.push(
      ...(await pruneDeltas(bucket, name, heads, now - config.delta.retainDeltasDays * DAY_MS)),
    )
    if (config.delta.storage === 'deltas-preferred') {
      const kept = new Set([...heads, ...(await fallbackHeads(bucket, found.index))])
      report.blobsDeleted.push(
        ...(await pruneBlobs(bucket, found.index, kept, config.delta.keepFullVersions)),
      )
    }
  }
  // Before the leftovers: a staged publish past its grace counts as dead here, and is swept just after.
  const stalled = await resolveStalledCommits(bucket, marked, now)
  report.manifestsUnmarked = stalled.unmarked
  report.manifestsWithdrawn = stalled.withdrawn
  report.leftoversDeleted = await pruneLeftovers(bucket, config.delta.retainDeltasDays, now)
  console.log(
    JSON.stringify({
      level: 'info',
      msg: 'retention pass',
      artifacts: report.artifacts,
      deltasDeleted: report.deltasDeleted.length,
      blobsDeleted: report.blobsDeleted.length,
      leftoversDeleted: report.leftoversDeleted.length,
      manifestsUnmarked: report.manifestsUnmarked.length,
      manifestsWithdrawn: report.manifestsWithdrawn.length,
      manifestsRestored: report.manifestsRestored.length,
      manifestsUnservable: report.manifestsUnservable.length,
    }),
  )
  return report
}

async function pruneDeltas(bucket: R2Bucket, name: string, heads: ReadonlySet<string>, cutoff: number) {
  const prefix = `deltas/${name}/`
  const doomed: string[] = []
  for await (const object of listAll(bucket, prefix)) {
    // deltas/<name>/<from>/<to>/<method>; the name may contain one '/', so parse after the prefix.
    const to = object.key.slice(prefix.length).split('/')[1]
    if (to !== undefined && !heads.has(to) && object.uploaded.getTime() < cutoff) doomed.push(object.key)
  }
  await deleteAll(bucket, doomed)
  return doomed
}

/**
 * The version each channel's head falls back to when the head is yanked: the highest version of the
 * channel not yanked other than the head whose full blob is still stored, as the yank computes it
 * (storage/yank.ts skips versions without a blob). Its blob is kept like a head's: a yank is the
 * emergency move, and a head whose full artifact was pruned can be neither installed fresh nor
 * retreated to (no delta leads down from the yanked version), so every device of the channel would meet
 * a 404 (ADR 0024, amended 2026-11-26). Not simply the highest version other than the head: after a yank
 * passed over versions without a blob (headsPassedOver), those stay above the head, and keeping one of
 * them (gone already) let this pass delete the blob of the version below that a yank would land on.
 */
async function fallbackHeads(bucket: R2Bucket, index: ArtifactIndex): Promise<string[]> {
  const fallbacks: string[] = []
  for (const [channel, head] of Object.entries(index.channels)) {
    const candidates = index.versions
      .filter((v) => !v.yanked && v.version !== head && v.channels.includes(channel))
      .map((v) => v.version)
      .sort((a, b) => (semverGreater(a, b) ? -1 : semverGreater(b, a) ? 1 : 0))
    for (const candidate of candidates) {
      if (fallbacks.includes(candidate) || (await bucket.head(keys.blob(index.name, candidate)))) {
        fallbacks.push(candidate)
        break
      }
    }
  }
  return fallbacks
}

async function pruneBlobs(bucket: R2Bucket, index: ArtifactIndex, heads: ReadonlySet<string>, keep: number) {
  const newestFirst = [...index.versions].sort((a, b) => b.serial - a.serial)
  const doomed = newestFirst
    .slice(keep)
    .filter((v) => !heads.has(v.version))
    .map((v) => keys.blob(index.name, v.version))
  const present = (
    await Promise.all(doomed.map(async (key) => ((await bucket.head(key)) ? key : null)))
  ).filter((key): key is string => key !== null)
  await deleteAll(bucket, present)
  return present
}

/**
 * One listing of `artifacts/`: every artifact name (from the `artifacts/<name>/index.json` keys), every
 * final manifest still marked committing (listed with its custom metadata for that), including those of
 * a name whose first commit died before any index existed, and every unmarked one (served as it is).
 */
async function walkArtifacts(
  bucket: R2Bucket,
): Promise<{ names: string[]; marked: R2Object[]; servable: Set<string> }> {
  const names: string[] = []
  const marked: R2Object[] = []
  const servable = new Set<string>()
  for await (const object of listAll(bucket, 'artifacts/', ['customMetadata'])) {
    if (object.key.endsWith('/index.json'))
      names.push(object.key.slice('artifacts/'.length, -'/index.json'.length))
    else if (isMarkedManifest(object)) marked.push(object)
    else if (manifestKeyParts(object.key) !== null) servable.add(object.key)
  }
  return { names, marked, servable }
}
