import { versionEntry } from '../../schemas/artifact-index.ts'
import { type CommitLiveness, type ListedOutcome, repairListedVersion } from '../retention/stalled-commits.ts'
import { readIndex } from './artifact-store.ts'
import { keys } from './keys.ts'
import { claimFresh, redateClaim, takeClaim } from './r2-claim.ts'

/**
 * How often one version is repaired on read at most: a repair claims the version for this long and never
 * gives the claim back, so a crowd of devices meeting the same 503 starts one repair per interval, and a
 * version that cannot be restored is logged once per interval (the retention pass logs it at every pass).
 */
export const REPAIR_CLAIM_MS = 60_000

/** The claim of the repair on read of one version (under `locks/`, swept after a day by retention). */
export const repairClaimKey = (name: string, version: string) =>
  `locks/repair/${keys.manifest(name, version)}`

/**
 * Repairs one listed version whose manifest is not servable, started in the background by the request
 * that answered it 503 `manifest-being-repaired` (ADR 0022, amended 2026-11-26), instead of leaving it to
 * the next retention pass (up to a day of "retry in 2 s"). The repair is the retention pass's own
 * (repairListedVersion), for the one version, with its rule for a commit that may still be alive: the
 * index written, or another attempt's claim at the key, less than COMMIT_ABANDONED_AFTER_MS ago leaves
 * the version alone (a later request or the retention pass repairs it). At most one repair per version
 * per REPAIR_CLAIM_MS: a head of the claim turns the crowd away with one read each, and of those that
 * find none (or a stale one) exactly one writes it (takeClaim). A claim whose repair left the version to
 * a commit that may be alive is redated to go stale when that commit counts as dead, so the first retry
 * after that moment repairs. Never throws: it runs after the answer.
 * Resolves to what it did, or null when another request holds the claim or the index no longer lists the
 * version.
 */
export async function repairOnRead(
  bucket: R2Bucket,
  name: string,
  version: string,
  now: number = Date.now(),
): Promise<ListedOutcome | null> {
  try {
    const claimKey = repairClaimKey(name, version)
    const held = await bucket.head(claimKey)
    if (held && claimFresh(held, REPAIR_CLAIM_MS, now)) return null
    const claim = await takeClaim(bucket, claimKey, REPAIR_CLAIM_MS, now)
    if (claim === null) return null
    const found = await readIndex(bucket, name)
    const entry = found ? versionEntry(found.index, version) : undefined
    if (!found || !entry) return null
    const liveness: CommitLiveness = { now, indexWritten: found.uploaded }
    const outcome = await repairListedVersion(bucket, name, entry, liveness)
    if (outcome === 'commit-may-be-alive' && liveness.aliveUntil !== undefined) {
      // The claim would hold the next repair off for a whole interval from now, up to REPAIR_CLAIM_MS past
      // the moment the commit counts as dead: it is redated to go stale exactly then (conditionally on
      // being still this request's claim), so a retry after that moment repairs.
      await redateClaim(bucket, claimKey, claim, liveness.aliveUntil - REPAIR_CLAIM_MS, now)
    }
    return outcome
  } catch (error) {
    // The claim or the index could not be read or written (a storage fault): a later request tries again.
    console.log(
      JSON.stringify({
        level: 'error',
        msg: 'could not start the repair of a listed manifest',
        key: keys.manifest(name, version),
        error: String(error),
      }),
    )
    return null
  }
}
