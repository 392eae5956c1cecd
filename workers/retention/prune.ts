import type { ArtifactIndex } from '../../schemas/artifact-index.ts'
import type { RuntimeConfig } from '../../schemas/runtime-config.ts'
import { readIndex } from '../storage/artifact-store.ts'
import { keys } from '../storage/keys.ts'
import { deleteAll, listAll } from './bucket-walk.ts'
import { pruneLeftovers } from './leftovers.ts'

const DAY_MS = 86_400_000

export interface PruneReport {
  artifacts: number
  deltasDeleted: string[]
  blobsDeleted: string[]
  /** Orphans of faulted deletes and dead requests (leftovers.ts). */
  leftoversDeleted: string[]
}

/**
 * Storage retention, run from the cron trigger:
 * - deltas older than `retainDeltasDays` are deleted, except those into a current channel head (the
 *   ones devices still need most; they go once the head moves on);
 * - under `storage: 'deltas-preferred'`, full blobs beyond the newest `keepFullVersions` (by serial) are
 *   deleted, channel heads always kept. Manifests, indexes and chunk indexes stay: they are small and
 *   they keep chains through old versions plannable;
 * - orphans of faulted deletes and dead requests (staging objects, locks, lazy-delta refusals) once
 *   nothing can still use them (leftovers.ts).
 * `now` is injected so tests can age objects without waiting.
 */
export async function pruneStorage(
  bucket: R2Bucket,
  config: RuntimeConfig,
  now: number,
): Promise<PruneReport> {
  const report: PruneReport = { artifacts: 0, deltasDeleted: [], blobsDeleted: [], leftoversDeleted: [] }
  for await (const name of artifactNames(bucket)) {
    const found = await readIndex(bucket, name)
    if (!found) continue
    report.artifacts++
    const heads = new Set(Object.values(found.index.channels))
    report.deltasDeleted.push(
      ...(await pruneDeltas(bucket, name, heads, now - config.delta.retainDeltasDays * DAY_MS)),
    )
    if (config.delta.storage === 'deltas-preferred') {
      report.blobsDeleted.push(
        ...(await pruneBlobs(bucket, found.index, heads, config.delta.keepFullVersions)),
      )
    }
  }
  report.leftoversDeleted = await pruneLeftovers(bucket, config.delta.retainDeltasDays, now)
  console.log(
    JSON.stringify({
      level: 'info',
      msg: 'retention pass',
      artifacts: report.artifacts,
      deltasDeleted: report.deltasDeleted.length,
      blobsDeleted: report.blobsDeleted.length,
      leftoversDeleted: report.leftoversDeleted.length,
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

/** Every artifact name, from the `artifacts/<name>/index.json` keys. */
async function* artifactNames(bucket: R2Bucket): AsyncGenerator<string> {
  for await (const object of listAll(bucket, 'artifacts/')) {
    if (object.key.endsWith('/index.json')) yield object.key.slice('artifacts/'.length, -'/index.json'.length)
  }
}
