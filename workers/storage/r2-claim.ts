/**
 * A short-lived claim on some work, kept as an R2 object: created only if absent (If-None-Match: *), so
 * of many requests reaching for it at once exactly one gets it. A claim older than `staleAfterMs` belongs
 * to a holder that died (isolate evicted, CPU limit) or, for a claim never released, marks an interval
 * that is over; it is taken over only while the key still holds the stale claim seen (conditional on its
 * etag): a delete then a create let a request that saw it stale delete the fresh claim another request
 * had just taken over it with, and both did the work. Used by lazy delta generation (one generation per
 * pair, released when done) and by the repair of a listed version's manifest on read (one repair per
 * version per interval, never released: workers/storage/repair-on-read.ts). Swept after a day under
 * `locks/` by the retention pass (workers/retention/leftovers.ts).
 *
 * The claim's age is measured from the time its writer put in it (`at`, its own Date.now()), so that the
 * holder and the requests that find it judge it by the same clock; a claim without one (written by an
 * earlier release) by R2's upload time.
 */

/** Takes the claim at `key`: the etag of the claim this request wrote, or null when another holds it. */
export async function takeClaim(
  bucket: R2Bucket,
  key: string,
  staleAfterMs: number,
  now: number = Date.now(),
): Promise<string | null> {
  const mine = claimBody(now)
  const customMetadata = { at: String(now) }
  const created = await bucket.put(key, mine, { customMetadata, onlyIf: { etagDoesNotMatch: '*' } })
  if (created) return created.etag
  const held = await bucket.head(key)
  if (!held || claimFresh(held, staleAfterMs, now)) return null
  const taken = await bucket.put(key, mine, { customMetadata, onlyIf: { etagMatches: held.etag } })
  return taken?.etag ?? null
}

/** A claim's body: unique, so a claim taken over or redated never has the etag of the one it replaced. */
function claimBody(now: number): string {
  return `${new Date(now).toISOString()} ${crypto.randomUUID()}`
}

/**
 * Redates the claim this request holds (`held`, its etag) as written at `at` (ms), so that it goes stale
 * `staleAfterMs` after that instead; only while the key still holds it (conditional on its etag).
 */
export async function redateClaim(
  bucket: R2Bucket,
  key: string,
  held: string,
  at: number,
  now: number = Date.now(),
): Promise<void> {
  await bucket.put(key, claimBody(now), { customMetadata: { at: String(at) }, onlyIf: { etagMatches: held } })
}

/** Whether the claim `held` (a head of its key) still counts: younger than `staleAfterMs`. */
export function claimFresh(held: R2Object, staleAfterMs: number, now: number = Date.now()): boolean {
  const at = Number(held.customMetadata?.at)
  const since = Number.isSafeInteger(at) ? at : held.uploaded.getTime()
  return now - since < staleAfterMs
}

/**
 * Deletes the claim only while it is still the one this request wrote (`held`, its etag). Work that ran
 * past the staleness may have been taken over (takeClaim), and deleting the other request's claim would
 * let a third request do the work alongside it. R2 has no conditional delete, so the check and the
 * delete are two calls: only a takeover landing between them (the gap of one R2 round trip, after a
 * stall past the staleness) still loses its claim, which lets one more request do the work.
 */
export async function releaseClaim(bucket: R2Bucket, key: string, held: string): Promise<void> {
  if ((await bucket.head(key))?.etag === held) await bucket.delete(key)
}

/**
 * Retention's sweep of a claim it listed as older than a day (`listed`, as the listing showed it): deleted
 * only while it is still that claim. Between the listing and the delete, a request may take the stale
 * claim over (takeClaim) and start the work; a plain delete then dropped its fresh claim, and another
 * request did the same work alongside it (a second lazy generation of the delta, a second repair). R2 has
 * no conditional delete, so the claim is first rewritten as a swept marker conditional on the listed etag
 * (a takeover since the listing changed the etag, and the claim is kept), the marker dated at 0 so any
 * request finds it stale and may take it over, and the marker is then deleted only while it is still the
 * marker (releaseClaim): only a takeover in the one round trip between that check and the delete is still
 * lost. Whether it was swept.
 */
export async function sweepStaleClaim(
  bucket: R2Bucket,
  key: string,
  listed: { etag: string },
): Promise<boolean> {
  const marker = await bucket.put(key, claimBody(0), {
    customMetadata: { at: '0' },
    onlyIf: { etagMatches: listed.etag },
  })
  if (marker === null) return false
  await releaseClaim(bucket, key, marker.etag)
  return true
}
