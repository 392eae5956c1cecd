import { SignedManifest } from '../../schemas/manifest.ts'
import { Problem } from '../http/problem.ts'
import { readIndex, readManifest, type StoredManifest } from '../storage/artifact-store.ts'
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

/** A staged (pending) manifest with what a conditional write of its key needs. */
export interface PendingPublish {
  envelope: SignedManifest
  /** The envelope exactly as staged. */
  raw: string
  /** R2's etag of the object (for `onlyIf`). */
  etag: string
  uploaded: Date
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
  return { envelope, raw, etag: object.etag, uploaded: object.uploaded }
}

/**
 * Stages `raw` (the envelope of `manifest`) as its version's pending manifest. One publish attempt
 * owns a version's staging at a time: the same manifest again is an idempotent retry (nothing is
 * written); another manifest is refused with 409 while the staged one is fresh, and replaces it once it
 * is abandoned. Every write is conditional on what was read (create-only, or the etag of the abandoned
 * one), so two POSTs racing for the same version cannot both win.
 */
export async function stagePending(
  bucket: R2Bucket,
  envelope: SignedManifest,
  raw: string,
  now: number = Date.now(),
): Promise<'staged' | 'unchanged'> {
  const { name, version } = envelope.signed
  for (let attempt = 0; attempt < 4; attempt++) {
    const current = await readPending(bucket, name, version)
    if (current?.raw === raw) return 'unchanged'
    if (current && now - current.uploaded.getTime() < PENDING_ABANDONED_AFTER_MS) {
      throw new Problem(409, 'conflict', busyDetail(current))
    }
    const written = await bucket.put(keys.pendingManifest(name, version), raw, {
      httpMetadata: { contentType: 'application/json' },
      onlyIf: current ? { etagMatches: current.etag } : { etagDoesNotMatch: '*' },
    })
    if (written) return 'staged'
  }
  throw new Problem(409, 'conflict', `the staged publish of ${name}@${version} kept changing; retry`)
}

function busyDetail(current: PendingPublish): string {
  const { name, version, serial, sha256 } = current.envelope.signed
  const freeAt = new Date(current.uploaded.getTime() + PENDING_ABANDONED_AFTER_MS).toISOString()
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
 * on its next request (the committed state is never touched here).
 */
export async function discardPending(
  bucket: R2Bucket,
  name: string,
  version: string,
  owns: string | ((raw: string) => Promise<boolean>),
) {
  const current = await readPending(bucket, name, version)
  if (!current) return
  const ours = typeof owns === 'string' ? current.raw === owns : await owns(current.raw)
  if (ours) await bucket.delete(keys.pendingManifest(name, version))
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
): Promise<StoredManifest> {
  const pending = await readManifest(bucket, keys.pendingManifest(name, version))
  if (pending) return pending
  if (await bucket.head(keys.manifest(name, version)))
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
 * is no error). 409 when the version is published (a committed version is never touched here) or another
 * attempt holds the version: only the holder of a reservation may give it up.
 */
export async function abandonPending(
  bucket: R2Bucket,
  name: string,
  version: string,
  attempt: string,
): Promise<'abandoned' | 'gone'> {
  const found = await readIndex(bucket, name)
  if (found?.index.versions.some((v) => v.version === version)) {
    throw new Problem(
      409,
      'conflict',
      `${name}@${version} is published; a published version is never given up (yank it to pull it)`,
    )
  }
  const current = await readPending(bucket, name, version)
  if (!current) return 'gone'
  if ((await attemptOf(current.raw)) !== attempt) {
    const { serial, sha256 } = current.envelope.signed
    throw new Problem(
      409,
      'conflict',
      `the publish of ${name}@${version} staged now is another attempt's (serial ${serial}, sha256 ${sha256}); it is left alone`,
    )
  }
  // Same read-then-delete gap as discardPending: losing it costs the other attempt a 409, never a
  // committed version (the commit removes the staged manifest only after the index lists the version).
  await discardPending(bucket, name, version, current.raw)
  return 'abandoned'
}
