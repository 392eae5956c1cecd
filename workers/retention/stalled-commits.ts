import { type ArtifactIndex, type VersionEntry, versionEntry } from '../../schemas/artifact-index.ts'
import { ArtifactName, Version } from '../../schemas/common.ts'
import { SignedManifest } from '../../schemas/manifest.ts'
import {
  COMMIT_ABANDONED_AFTER_MS,
  isManifestOf,
  markedCommitting,
  readIndex,
} from '../storage/artifact-store.ts'
import { keys } from '../storage/keys.ts'
import { parseStored } from '../storage/stored-json.ts'
import { listAll } from './bucket-walk.ts'
import { STAGED_SWEPT_AFTER_MS } from './leftovers.ts'

/** What the retention pass did with manifests dead commits left marked committing. */
export interface StalledCommits {
  /** Final manifest keys whose version the index lists: published, now unmarked. */
  unmarked: string[]
  /** Final manifest keys whose version the index does not list: deleted, as the commit would have. */
  withdrawn: string[]
}

/**
 * The name and version of a final manifest key (`artifacts/<name>/<version>/manifest.json`; the name
 * may hold one '/'), or null for any other key. Parsed by the schemas: keys come from a bucket listing.
 */
export function manifestKeyParts(key: string): { name: string; version: string } | null {
  const match = /^artifacts\/(.+)\/([^/]+)\/manifest\.json$/.exec(key)
  if (!match) return null
  const name = ArtifactName.safeParse(match[1])
  const version = Version.safeParse(match[2])
  return name.success && version.success ? { name: name.data, version: version.data } : null
}

/** A listed object (listed with its custom metadata) that is a final manifest still marked committing. */
export function isMarkedManifest(object: R2Object): boolean {
  return manifestKeyParts(object.key) !== null && markedCommitting(object.customMetadata)
}

/**
 * Resolves the final manifests (listed with `isMarkedManifest`) that a commit marked committing and
 * never unmarked, once older than a staged publish's grace (STAGED_SWEPT_AFTER_MS; a commit takes
 * milliseconds, so one that old died). The index decides what each is:
 * - it lists the version: the commit died after its index update, only before unmarking. The version
 *   is published and served; the marker only costs every read an index read. Unmarked, by a put of the
 *   same bytes conditional on the etag (content) read, never deleted.
 * - it does not: the commit died between its two writes. Unserved, but stored forever and answered as
 *   "committing" to nothing; deleted, as the commit's own withdrawal would have. Not while a staged
 *   publish of the version younger than the grace exists: every commit holds its staged manifest
 *   until the index lists the version, so without one no commit is between its writes now, and a new
 *   one must first stage and upload. R2 has no conditional delete, so the index is read again after
 *   the delete: if a commit of this same manifest got in between (its claim found it and wrote
 *   nothing), it is put back, create-only.
 */
export async function resolveStalledCommits(
  bucket: R2Bucket,
  marked: readonly Pick<R2Object, 'key' | 'uploaded'>[],
  now: number,
): Promise<StalledCommits> {
  const result: StalledCommits = { unmarked: [], withdrawn: [] }
  for (const listed of marked) {
    const parts = manifestKeyParts(listed.key)
    if (parts === null || now - listed.uploaded.getTime() <= STAGED_SWEPT_AFTER_MS) continue
    const { name, version } = parts
    const indexed = async () => {
      const found = await readIndex(bucket, name)
      return found ? versionEntry(found.index, version) : undefined
    }
    const object = await bucket.get(listed.key)
    if (!object || !markedCommitting(object.customMetadata)) continue
    const raw = await object.text()
    const entry = await indexed()
    if (entry) {
      // Another attempt's claim over a version the index lists with another manifest (a takeover of a
      // stalled commit whose index update landed late): unmarking it would serve it; left unserved.
      if (!isManifestOf(entry, parseStored(SignedManifest, raw, listed.key, 'manifest').signed)) continue
      const written = await bucket.put(listed.key, raw, {
        httpMetadata: { contentType: 'application/json' },
        onlyIf: { etagMatches: object.etag },
      })
      if (written) result.unmarked.push(listed.key)
      continue
    }
    const staged = await bucket.head(keys.pendingManifest(name, version))
    if (staged && now - staged.uploaded.getTime() <= STAGED_SWEPT_AFTER_MS) continue
    await bucket.delete(listed.key)
    const raced = await indexed()
    if (raced === undefined) {
      result.withdrawn.push(listed.key)
      continue
    }
    const { serial, sha256 } = parseStored(SignedManifest, raw, listed.key, 'manifest').signed
    if (raced.serial === serial && raced.sha256 === sha256) {
      await bucket.put(listed.key, raw, {
        httpMetadata: { contentType: 'application/json' },
        onlyIf: { etagDoesNotMatch: '*' },
      })
    } else {
      console.log(
        JSON.stringify({
          level: 'error',
          msg: 'a commit published another manifest while retention withdrew a stalled one',
          key: listed.key,
        }),
      )
    }
  }
  return result
}

/** What the retention pass did with versions the index lists whose manifest was not servable. */
export interface ListedRepairs {
  /** Final manifest keys put back from the displaced claim the index entry was made from. */
  restored: string[]
  /**
   * Final manifest keys still not servable (logged as errors): no displaced claim matches the entry, the
   * key changed while restoring (checked again next pass), or it could not be read.
   */
  unservable: string[]
}

/**
 * Makes every version `index` lists servable again, or reports it. A listed version's manifest is
 * unservable when its final key is empty or holds a marked manifest of another serial or sha256: a
 * commit stalled between its claim check and its index write, another attempt replaced its claim (and
 * possibly withdrew its own after a failed index update), the stalled index write then listed the
 * version, and the commit died before putting its manifest back (ADR 0022, amended 2026-11-26). The
 * replaced claim was kept aside (`keys.displacedClaim`): the one whose serial and sha256 are the
 * entry's is put back unmarked (the index lists it), conditionally on what the key held, so a manifest
 * the entry was not made from is never served. `servable`: the final manifest keys the bucket listing
 * showed unmarked (served as they are; no read needed). Runs at every pass, without a grace: once the
 * index lists the version no commit can make the key servable any more (every other commit's index
 * update is refused), except the stalled one's own repair, which writes the same bytes.
 */
export async function repairListedManifests(
  bucket: R2Bucket,
  index: ArtifactIndex,
  servable: ReadonlySet<string>,
): Promise<ListedRepairs> {
  const result: ListedRepairs = { restored: [], unservable: [] }
  for (const entry of index.versions) {
    const key = keys.manifest(index.name, entry.version)
    if (servable.has(key)) continue
    const outcome = await repairListedVersion(bucket, index.name, entry)
    if (outcome === 'restored') result.restored.push(key)
    if (outcome === 'unservable') result.unservable.push(key)
  }
  return result
}

/**
 * What repairing one listed version did: its manifest was servable after all, was put back, could not be
 * (logged as an error), or was left alone because a commit of the version may still be alive.
 */
export type ListedOutcome = 'servable' | 'restored' | 'unservable' | 'commit-may-be-alive'

/**
 * When a repair must leave a version alone while a commit of it may still be alive (the repair on read,
 * workers/storage/repair-on-read.ts): `now`, and when the index was last written. A commit takes
 * milliseconds between its index write and putting its own manifest back (unmarkCommitted), and between
 * its claim of the final key and its index update; one whose write is COMMIT_ABANDONED_AFTER_MS old died,
 * the rule the claim of a final key already goes by (claimManifestKey).
 */
export interface CommitLiveness {
  now: number
  indexWritten: Date
  /**
   * Set by the repair when it leaves the version alone ('commit-may-be-alive'): the time (ms) its
   * youngest write turns COMMIT_ABANDONED_AFTER_MS old, from which a repair may write.
   */
  aliveUntil?: number
}

/**
 * The repair of one version `entry` (of the index of `name`) lists, shared by the retention pass
 * (repairListedManifests, every listed version not seen servable) and the repair on read (one version
 * that answered 503 `manifest-being-repaired`). Never throws: a storage fault or a stored object that does
 * not parse counts as unservable. Every unservable outcome is logged as an error with what the operator
 * must do, once per call: at every retention pass, and at most once per claim interval on read.
 *
 * With `liveness`, nothing is written while a commit of the version may still be alive: the index was
 * written less than COMMIT_ABANDONED_AFTER_MS ago (the listed commit may be about to put its manifest
 * back itself), or the key holds a marked claim that young (another attempt's commit may be between its
 * claim and its refused index update). The retention pass passes none: it runs once a day, and its rule
 * for listed versions (no grace, see repairListedManifests) stands.
 */
export async function repairListedVersion(
  bucket: R2Bucket,
  name: string,
  entry: VersionEntry,
  liveness?: CommitLiveness,
): Promise<ListedOutcome> {
  const key = keys.manifest(name, entry.version)
  let outcome: ListedOutcome
  try {
    outcome = await repairListed(bucket, name, entry, key, liveness)
  } catch (error) {
    // A storage fault or a stored object that does not parse: reported, and the caller goes on.
    console.log(
      JSON.stringify({
        level: 'error',
        msg: 'could not check a listed manifest',
        key,
        error: String(error),
      }),
    )
    outcome = 'unservable'
  }
  if (outcome === 'unservable') {
    console.log(
      JSON.stringify({
        level: 'error',
        msg: 'the index lists a version whose manifest is not servable and could not be restored from a displaced claim',
        key,
        serial: entry.serial,
        sha256: entry.sha256,
        action:
          'put the signed manifest envelope with this serial and sha256 (the one its publish signed) at this key, unmarked; until then the version answers 503 manifest-being-repaired',
      }),
    )
  }
  return outcome
}

async function repairListed(
  bucket: R2Bucket,
  name: string,
  entry: VersionEntry,
  key: string,
  liveness: CommitLiveness | undefined,
): Promise<ListedOutcome> {
  const current = await bucket.get(key)
  if (current && (await servableAs(current, entry, key))) return 'servable'
  if (liveness) {
    const youngest = Math.max(liveness.indexWritten.getTime(), current?.uploaded.getTime() ?? 0)
    if (liveness.now - youngest < COMMIT_ABANDONED_AFTER_MS) {
      liveness.aliveUntil = youngest + COMMIT_ABANDONED_AFTER_MS
      return 'commit-may-be-alive'
    }
  }
  const claim = await displacedClaimOf(bucket, name, entry)
  if (claim === null) return 'unservable'
  const written = await bucket.put(key, claim, {
    httpMetadata: { contentType: 'application/json' },
    onlyIf: current ? { etagMatches: current.etag } : { etagDoesNotMatch: '*' },
  })
  if (written) return 'restored'
  // Not written: the key changed since the read. Another repair of the version (the retention pass and a
  // repair on read, or two on read) or the stalled commit's own put back got there first: the version is
  // servable, and only a repair that really leaves it unservable reports it.
  const now = await bucket.get(key)
  return now && (await servableAs(now, entry, key)) ? 'servable' : 'unservable'
}

/** Whether the object at a listed version's key is served: unmarked, or marked but the entry's own. */
async function servableAs(object: R2ObjectBody, entry: VersionEntry, key: string): Promise<boolean> {
  const { signed } = parseStored(SignedManifest, await object.text(), key, 'manifest')
  return !markedCommitting(object.customMetadata) || isManifestOf(entry, signed)
}

/** The kept claim of `entry`'s version whose serial and sha256 are the entry's, or null. */
async function displacedClaimOf(bucket: R2Bucket, name: string, entry: VersionEntry): Promise<string | null> {
  for await (const listed of listAll(bucket, keys.displacedClaims(name, entry.version))) {
    const raw = await (await bucket.get(listed.key))?.text()
    if (raw === undefined) continue
    if (isManifestOf(entry, parseStored(SignedManifest, raw, listed.key, 'manifest').signed)) return raw
  }
  return null
}
