import { SignedManifest } from '../../schemas/manifest.ts'
import { Problem } from '../http/problem.ts'
import { COMMIT_ABANDONED_AFTER_MS, readIndex, readPublishedManifest } from '../storage/artifact-store.ts'
import { keys } from '../storage/keys.ts'
import { parseStored } from '../storage/stored-json.ts'
import { sha256OfBytes } from './verify-object.ts'

/**
 * A staged publish that has not committed for this long counts as abandoned (a crashed or killed CLI),
 * and a POST with another manifest may replace it. Long enough for a multi-GiB upload on a slow link to
 * finish; replacing a staged publish that is in fact still uploading is safe anyway (its bytes are then
 * checked against the new manifest, and a version's bytes, once stored, never change: blob-slot.ts).
 */
export const PENDING_ABANDONED_AFTER_MS = 30 * 60 * 1000

/**
 * Where a staged attempt stands, kept in the staged object's custom metadata so that every change of
 * it is one conditional put of that object: `staged` (uploads may go on), `committing` (a commit holds
 * it, see holdForCommit), `given-up` (DELETE …/attempts: it can never commit; the object is deleted
 * right after, and one left by a failed delete counts as not staged).
 */
export type PendingState = 'staged' | 'committing' | 'given-up'

/** A staged (pending) manifest, as read. */
export interface PendingPublish {
  envelope: SignedManifest
  /** The envelope exactly as staged. */
  raw: string
  /** When the object was last put: what a conditional write of it checks (unchangedSince). */
  uploaded: Date
  state: PendingState
}

const STATE_KEY = 'state'

function stateOf(metadata: Record<string, string> | undefined): PendingState {
  const state = metadata?.[STATE_KEY]
  return state === 'committing' || state === 'given-up' ? state : 'staged'
}

/**
 * The condition that writes the staged key only if no put changed it since `read` was read. Not its
 * etag: R2's etag is the MD5 of the content, and a change of state rewrites the same envelope with
 * other metadata, so an etag read before a commit held the attempt still matched after, and a give-up
 * and a commit that read the attempt at the same moment both won (the give-up answered 204, the commit
 * published). Every put has its own upload time, so "uploaded at exactly the time read" (R2 compares
 * in milliseconds unless told `secondsGranularity`) fails after any write since, and when the key is
 * gone (uploadedAfter needs an object).
 */
function unchangedSince(read: { uploaded: Date }): R2Conditional {
  const at = read.uploaded.getTime()
  return { uploadedAfter: new Date(at - 1), uploadedBefore: new Date(at + 1) }
}

/**
 * Rewrites the staged object as `state`, only if no put changed it since it was read: the staged
 * manifest as rewritten, or null if it had changed.
 */
async function setState(
  bucket: R2Bucket,
  current: PendingPublish,
  state: PendingState,
): Promise<PendingPublish | null> {
  const { name, version } = current.envelope.signed
  const written = await bucket.put(keys.pendingManifest(name, version), current.raw, {
    httpMetadata: { contentType: 'application/json' },
    customMetadata: { [STATE_KEY]: state },
    onlyIf: unchangedSince(current),
  })
  return written && { ...current, uploaded: written.uploaded, state }
}

/** A commit holding the staged manifest that is recent enough to be still running. */
function commitUnderWay(current: PendingPublish, now: number): boolean {
  return current.state === 'committing' && now - current.uploaded.getTime() < COMMIT_ABANDONED_AFTER_MS
}

export async function readPending(
  bucket: R2Bucket,
  name: string,
  version: string,
): Promise<PendingPublish | null> {
  const key = keys.pendingManifest(name, version)
  const object = await bucket.get(key)
  if (!object) return null
  const raw = await object.text()
  const envelope = parseStored(SignedManifest, raw, key, 'manifest')
  return {
    envelope,
    raw,
    uploaded: object.uploaded,
    state: stateOf(object.customMetadata),
  }
}

/**
 * Stages `raw` (the envelope of `manifest`) as its version's pending manifest. One publish attempt
 * owns a version's staging at a time: the same manifest again is an idempotent retry (nothing is
 * written); another manifest is refused with 409 while the staged one holds the version, and replaces
 * it once it does not (holdsVersion: abandoned, given up, or refused for good by the index, whose
 * `latestSerial` the caller read). Every write is conditional on what was read (create-only, or
 * unchangedSince the one replaced), so two POSTs racing for the same version cannot both win.
 */
export async function stagePending(
  bucket: R2Bucket,
  envelope: SignedManifest,
  raw: string,
  now: number = Date.now(),
  latestSerial = 0,
): Promise<'staged' | 'unchanged'> {
  const { name, version } = envelope.signed
  for (let attempt = 0; attempt < 4; attempt++) {
    const current = await readPending(bucket, name, version)
    const holds = current !== null && holdsVersion(current, latestSerial, now)
    if (current?.raw === raw && holds) return 'unchanged'
    if (current && holds) {
      throw new Problem(409, 'conflict', busyDetail(current))
    }
    const written = await bucket.put(keys.pendingManifest(name, version), raw, {
      httpMetadata: { contentType: 'application/json' },
      onlyIf: current ? unchangedSince(current) : { etagDoesNotMatch: '*' },
    })
    if (written) return 'staged'
  }
  throw new Problem(409, 'conflict', `the staged publish of ${name}@${version} kept changing; retry`)
}

/**
 * Whether a staged manifest still holds its version against another manifest. Not when it was given up
 * (a marker left by a failed delete), nor when its serial is not above the latest published one and no
 * commit of it is under way: the index refuses it for good, so it can never commit (its refused commit
 * drops it, unless that drop met a storage fault), nor once it counts as abandoned (heldUntil).
 */
function holdsVersion(current: PendingPublish, latestSerial: number, now: number): boolean {
  if (current.state === 'given-up') return false
  if (current.envelope.signed.serial <= latestSerial && !commitUnderWay(current, now)) return false
  return now < heldUntil(current)
}

/**
 * When a staged manifest counts as abandoned (ms). An upload may run for minutes, so a staged one holds
 * its version PENDING_ABANDONED_AFTER_MS; one a commit holds was last written by that commit, which takes
 * milliseconds, so it holds only while the commit may be alive (COMMIT_ABANDONED_AFTER_MS, the rule the
 * final key's claim goes by). Why: a Worker cut off mid-commit (CPU limit, deploy) leaves the hold behind
 * with nothing to give it back, and the CLI's give-up is refused while the commit may be running; the
 * rerun of the publish (signed again, so another manifest) was then refused for the whole 30 minutes.
 */
function heldUntil(current: PendingPublish): number {
  const at = current.uploaded.getTime()
  return at + (current.state === 'committing' ? COMMIT_ABANDONED_AFTER_MS : PENDING_ABANDONED_AFTER_MS)
}

function busyDetail(current: PendingPublish): string {
  const { name, version, serial, sha256 } = current.envelope.signed
  const freeAt = new Date(heldUntil(current)).toISOString()
  return (
    `${name}@${version} is already being published with another manifest (serial ${serial}, sha256 ` +
    `${sha256}, staged at ${current.uploaded.toISOString()}); let that publish finish or fail, or retry ` +
    `after ${freeAt}, when it counts as abandoned`
  )
}

/**
 * Drops the staged manifest after its upload failed for good, so the version is free again at once,
 * but only while it is still this attempt's (`owns` its envelope): a failed or aborted upload must not
 * discard the publish of another attempt that took the version over meanwhile. R2 has no conditional
 * delete; the re-read narrows the gap to milliseconds and losing it costs the other attempt only a 409
 * on its next request (the committed state is never touched here). A staged manifest a commit holds
 * (another request of the same attempt is committing it) is left to that commit, unless the caller is
 * the commit itself (`byItsCommit`): a commit in progress must keep its staged manifest to the end, or
 * another attempt could stage and claim the manifest key under it.
 */
export async function discardPending(
  bucket: R2Bucket,
  name: string,
  version: string,
  owns: string | ((raw: string) => Promise<boolean>),
  byItsCommit = false,
) {
  const current = await readPending(bucket, name, version)
  if (!current) return
  if (!byItsCommit && commitUnderWay(current, Date.now())) return
  const ours = typeof owns === 'string' ? current.raw === owns : await owns(current.raw)
  if (ours) await bucket.delete(keys.pendingManifest(name, version))
}

/**
 * Takes the staged manifest for its commit: the commit of an upload goes ahead only if the attempt the
 * upload belongs to is still the one staged and was not given up meanwhile. The upload read the staged
 * manifest when it started, possibly many minutes before its last byte arrived; in between its CLI may
 * have given it up (DELETE …/attempts, after a cut-off it took for final) or another attempt may have
 * taken the version over. Marking the staged object `committing` is a put conditional on the object
 * being unchanged since just read (unchangedSince), and giving an attempt up is one too (abandonPending), so of the two exactly one wins: a given-up
 * attempt never commits, and a committing one is never given up. 409 when it is not this attempt's to
 * commit. The returned state is what releaseHold needs.
 */
export async function holdForCommit(bucket: R2Bucket, pending: PendingPublish): Promise<PendingPublish> {
  const { name, version } = pending.envelope.signed
  const current = await readPending(bucket, name, version)
  if (current && current.raw === pending.raw && current.state !== 'given-up') {
    const held = await setState(bucket, current, 'committing')
    if (held) return held
  }
  if (await bucket.head(keys.manifest(name, version))) {
    const index = await readIndex(bucket, name)
    if (index?.index.versions.some((v) => v.version === version))
      throw new Problem(
        409,
        'conflict',
        `${name}@${version} is already published; publish a new version instead`,
      )
  }
  throw new Problem(
    409,
    'conflict',
    `this publish attempt of ${name}@${version} was given up or replaced by another attempt while its upload ran; nothing of it was committed (bytes it stored stay and bind the version): start the publish again`,
  )
}

/**
 * Gives the staged manifest back after a commit that failed without refusing it for good (a storage
 * fault): the attempt may then be retried or given up at once. Best effort; a hold left behind counts as
 * a commit under way for COMMIT_ABANDONED_AFTER_MS only.
 */
export async function releaseHold(bucket: R2Bucket, held: PendingPublish): Promise<void> {
  await setState(bucket, held, 'staged').catch(() => undefined)
}

/**
 * The staged manifest an upload (blob, parts, deltas, chunk index) belongs to, or 409 saying what to
 * do: the version is already published (nothing more may be uploaded to it), or its publish has not
 * been started.
 */
export async function requirePending(
  bucket: R2Bucket,
  name: string,
  version: string,
): Promise<PendingPublish> {
  const pending = await readPending(bucket, name, version)
  if (pending && pending.state !== 'given-up') return pending
  // Published as readers see it: a manifest left by a commit that died before its index update is not.
  if (await readPublishedManifest(bucket, name, version))
    throw new Problem(
      409,
      'conflict',
      `${name}@${version} is already published; publish a new version instead`,
    )
  throw new Problem(409, 'conflict', `start the publish of ${name}@${version} with its signed manifest first`)
}

/**
 * The name of a staged publish attempt, handed to the CLI that staged it (`attempt` of PublishStarted):
 * the sha256 of its envelope exactly as staged. Only that CLI knows it (a staged manifest is never
 * served), and the same manifest staged again (an idempotent retry) is the same attempt.
 */
export function attemptOf(stagedRaw: string): Promise<string> {
  return sha256OfBytes(new TextEncoder().encode(stagedRaw))
}

/**
 * Gives up the staged publish named `attempt` (a CLI stopped mid-upload), so the version is free at
 * once instead of after PENDING_ABANDONED_AFTER_MS. 'abandoned' when it was staged and is dropped now,
 * 'gone' when nothing is staged (already abandoned, or its upload failed and dropped it: giving up twice
 * is no error). 409 when the version is published (a committed version is never touched here), another
 * attempt holds the version (only the holder of a reservation may give it up), or a commit of this
 * attempt is under way (its upload was not cut off after all; see holdForCommit).
 */
export async function abandonPending(
  bucket: R2Bucket,
  name: string,
  version: string,
  attempt: string,
): Promise<'abandoned' | 'gone'> {
  const refuseIfPublished = async () => {
    const found = await readIndex(bucket, name)
    if (found?.index.versions.some((v) => v.version === version)) {
      throw new Problem(
        409,
        'conflict',
        `${name}@${version} is published; a published version is never given up (yank it to pull it)`,
      )
    }
  }
  await refuseIfPublished()
  for (let tries = 0; tries < 4; tries++) {
    const current = await readPending(bucket, name, version)
    // Nothing staged may also mean this attempt's commit finished since the index was read (it drops
    // the staged manifest once the index lists the version): that is no give-up either.
    if (!current) {
      await refuseIfPublished()
      return 'gone'
    }
    if ((await attemptOf(current.raw)) !== attempt) {
      const { serial, sha256 } = current.envelope.signed
      throw new Problem(
        409,
        'conflict',
        `the publish of ${name}@${version} staged now is another attempt's (serial ${serial}, sha256 ${sha256}); it is left alone`,
      )
    }
    if (commitUnderWay(current, Date.now())) {
      throw new Problem(
        409,
        'conflict',
        `the upload of this attempt of ${name}@${version} arrived after all and is committing it; it is not given up`,
      )
    }
    // Marked given up first, conditionally on what was read: a commit that took it meanwhile makes
    // this put fail (read again above), and once it is marked no commit can take it.
    if (current.state === 'given-up' || (await setState(bucket, current, 'given-up')) !== null) {
      // Deleted so the version is free; a delete that fails leaves a marker that counts as not staged.
      await bucket.delete(keys.pendingManifest(name, version))
      return current.state === 'given-up' ? 'gone' : 'abandoned'
    }
  }
  throw new Problem(409, 'conflict', `the staged publish of ${name}@${version} kept changing; retry`)
}

/**
 * Retention's sweep of a staged manifest it listed as older than a staged publish's grace (`listed`, as
 * the listing showed it): deleted only if no put changed it since it was listed. The listing of every
 * `pending/` key and the sweep are seconds apart, and a CLI may restage the version in between (its
 * stagePending replaces an abandoned staged manifest); a plain delete then dropped the fresh one, and its
 * upload failed with "start the publish first". R2 has no conditional delete, so the staged object is
 * first marked `given-up` by a put conditional on the listed upload time (unchangedSince): a restage
 * before it makes the mark fail and the object is kept, and a restage after it finds a marker that holds
 * nothing and replaces it as every stage does. Only a restage landing between the mark and the delete,
 * one round trip, is still lost, at the cost of that CLI's 409; committed state is never touched. Whether
 * it was swept.
 */
export async function sweepStaged(
  bucket: R2Bucket,
  key: string,
  listed: { uploaded: Date },
): Promise<boolean> {
  const current = await bucket.get(key)
  if (!current) return false
  // Rewritten with the same bytes (a marker readPending can still parse); a restage since the listing
  // has other bytes, but then the condition refuses the put anyway.
  const raw = await current.text()
  const marked = await bucket.put(key, raw, {
    httpMetadata: { contentType: 'application/json' },
    customMetadata: { [STATE_KEY]: 'given-up' },
    onlyIf: unchangedSince(listed),
  })
  if (marked === null) return false
  await bucket.delete(key)
  return true
}
