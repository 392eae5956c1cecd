import { sweepStaged } from '../publish/pending-manifest.ts'
import { sweepStaleClaim } from '../storage/r2-claim.ts'
import { deleteAll, listAll } from './bucket-walk.ts'

const HOUR_MS = 3_600_000
const DAY_MS = 24 * HOUR_MS

/**
 * How long a staged publish (`pending/<n>/<v>/manifest.json`) is kept: after 30 minutes another attempt
 * may take it over anyway, a week later its CLI is long gone. The manifest a dead commit left marked at
 * its final key gets the same grace (stalled-commits.ts).
 */
export const STAGED_SWEPT_AFTER_MS = 7 * DAY_MS

/** A staged publish's manifest (`keys.pendingManifest`) among the `pending/` keys. */
const STAGED_MANIFEST = /^pending\/.+\/manifest\.json$/

/**
 * Objects the publish and lazy-delta paths leave behind only when a delete of theirs faulted or a
 * worker died mid-request, each with the age after which nothing can still be using it:
 * - `pending/<n>/<v>/blob-<attempt>`: a completed multipart upload waiting to be copied into the blob
 *   key, which takes minutes at most (blob-slot.ts), so a day-old one is an orphan;
 * - `pending/<n>/<v>/manifest.json`: a staged publish; after 30 minutes another attempt may take it
 *   over anyway, a week later its CLI is long gone (sweeping a live one would only make that upload
 *   fail with "start the publish first"). One restaged after the listing is kept: each is swept on its
 *   own, only if unchanged since listed (sweepStaged);
 * - `pending/<n>/<v>/displaced-<attempt>`: a commit's claim another attempt replaced, kept so the
 *   retention pass can restore it should a stalled commit list it late and die (stalled-commits.ts,
 *   which runs first at every pass); a week covers any commit's stall;
 * - `locks/…`: lazy-delta generation and repair-on-read claims, stale after a minute; each is swept on its
 *   own, only while it is still the claim listed (sweepStaleClaim), so one a request took over since the
 *   listing is kept;
 * - `lazy-failed/…`: remembered "cannot encode" answers, kept as long as a lazily made delta would be
 *   (`retainDeltasDays`), so a codec upgrade gets to try the pair again.
 * Without this, each of them stayed in the bucket forever.
 */
export async function pruneLeftovers(
  bucket: R2Bucket,
  retainDeltasDays: number,
  now: number,
): Promise<string[]> {
  const doomed: string[] = []
  const staged: R2Object[] = []
  const claims: R2Object[] = []
  /** Listed once per prefix; `maxAgeOf` gives a key's age limit, or null to keep it whatever its age. */
  const sweep = async (prefix: string, maxAgeOf: (key: string) => number | null) => {
    for await (const object of listAll(bucket, prefix)) {
      const maxAgeMs = maxAgeOf(object.key)
      if (maxAgeMs === null || now - object.uploaded.getTime() <= maxAgeMs) continue
      if (STAGED_MANIFEST.test(object.key)) staged.push(object)
      else if (object.key.startsWith('locks/')) claims.push(object)
      else doomed.push(object.key)
    }
  }
  await sweep('pending/', (key) =>
    /\/blob-[^/]+$/.test(key)
      ? DAY_MS
      : key.endsWith('/manifest.json') || /\/displaced-[^/]+$/.test(key)
        ? STAGED_SWEPT_AFTER_MS
        : null,
  )
  await sweep('locks/', () => DAY_MS)
  await sweep('lazy-failed/', () => retainDeltasDays * DAY_MS)
  await deleteAll(bucket, doomed)
  for (const object of staged) if (await sweepStaged(bucket, object.key, object)) doomed.push(object.key)
  for (const object of claims) if (await sweepStaleClaim(bucket, object.key, object)) doomed.push(object.key)
  return doomed
}
