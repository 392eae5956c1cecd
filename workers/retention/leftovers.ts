import { deleteAll, listAll } from './bucket-walk.ts'

const HOUR_MS = 3_600_000
const DAY_MS = 24 * HOUR_MS

/**
 * Objects the publish and lazy-delta paths leave behind only when a delete of theirs faulted or a
 * worker died mid-request, each with the age after which nothing can still be using it:
 * - `pending/<n>/<v>/blob-<attempt>`: a completed multipart upload waiting to be copied into the blob
 *   key, which takes minutes at most (blob-slot.ts), so a day-old one is an orphan;
 * - `pending/<n>/<v>/manifest.json`: a staged publish; after 30 minutes another attempt may take it
 *   over anyway, a week later its CLI is long gone (sweeping a live one would only make that upload
 *   fail with "start the publish first");
 * - `locks/…`: lazy-delta generation locks, stale after a minute;
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
  const sweep = async (prefix: string, maxAgeMs: number, matches: (key: string) => boolean = () => true) => {
    for await (const object of listAll(bucket, prefix)) {
      if (matches(object.key) && now - object.uploaded.getTime() > maxAgeMs) doomed.push(object.key)
    }
  }
  await sweep('pending/', DAY_MS, (key) => /\/blob-[^/]+$/.test(key))
  await sweep('pending/', 7 * DAY_MS, (key) => key.endsWith('/manifest.json'))
  await sweep('locks/', DAY_MS)
  await sweep('lazy-failed/', retainDeltasDays * DAY_MS)
  await deleteAll(bucket, doomed)
  return doomed
}
