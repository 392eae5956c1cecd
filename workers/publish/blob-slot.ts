import type { ArtifactManifest } from '../../schemas/manifest.ts'
import { Problem } from '../http/problem.ts'
import { refusalOf } from '../storage/guarded-bucket.ts'
import { keys } from '../storage/keys.ts'
import { sha256OfObject, toHex } from './verify-object.ts'

/**
 * A version's blob key (`artifacts/<n>/<v>/blob`) is its slot, written once and never deleted by the
 * publish path. Why: an upload that fails must not be able to remove bytes another attempt stored and
 * committed meanwhile. R2 has no conditional delete, so "delete unless committed" (a read, then a
 * delete) always leaves a gap in which the other attempt commits; R2 does have a conditional put, so
 * the slot is filled only by a create-only put (`onlyIf: { etagDoesNotMatch: '*' }`), which R2
 * evaluates atomically when the write commits, with the signed sha256 verified by R2 on the same write.
 * At most one attempt ever fills the slot, a failed write stores nothing, and nothing needs undoing.
 *
 * Multipart uploads cannot target the slot (completing one is unconditional and unverified), so each
 * upload goes to its own staging key and is promoted into the slot by that same conditional put once
 * complete; a bad upload only ever deletes its own staging object.
 *
 * Bytes in the slot of an uncommitted version (a commit that failed) bind the version to them: every
 * manifest with the same size and sha256 (a retry, even re-signed) commits; other bytes get a 409.
 */

/**
 * The largest blob the edge accepts: the blob key is filled by one put (multipart uploads are promoted
 * by one too), and R2 caps a single put at 5 GiB; 5 MiB are kept as margin.
 */
export const MAX_SLOT_BYTES = 5 * 1024 * 1024 * 1024 - 5 * 1024 * 1024

/** The signed bytes do not match the upload: 422, and the upload's staged manifest is dropped. */
export class IntegrityMismatch extends Problem {
  constructor(detail: string) {
    super(422, 'integrity-mismatch', detail)
  }
}

/** Staging object of one multipart upload attempt; its version segment keeps it with its version. */
export function stagingKey(name: string, version: string, attempt: string): string {
  return `pending/${name}/${version}/blob-${attempt}`
}

const UPLOAD_TOKEN = /^([0-9a-f]{32})\.(.+)$/s

/**
 * The upload id the edge hands out: the attempt (which names the staging key) and R2's own upload id,
 * so the part, complete and abort routes can find the staging key from the URL alone.
 */
export function newUploadToken(r2UploadId: string, attempt: string): string {
  return `${attempt}.${r2UploadId}`
}

/**
 * A new attempt id: 16 hex digits naming the staged manifest the upload was started for (the start of
 * its sha256), then 16 random ones. Why name it: aborting an upload gives up its publish, which frees
 * the version by dropping the staged manifest, but only if that is still the one the upload belonged
 * to; another attempt may have taken over the version meanwhile (see attemptBelongsTo).
 */
export async function newAttempt(stagedRaw: string): Promise<string> {
  const random = crypto.randomUUID().replaceAll('-', '').slice(0, 16)
  return `${await stagedPrefix(stagedRaw)}${random}`
}

/** Whether the upload of `attempt` was started for the staged manifest `stagedRaw`. */
export async function attemptBelongsTo(attempt: string, stagedRaw: string): Promise<boolean> {
  return attempt.slice(0, 16) === (await stagedPrefix(stagedRaw))
}

async function stagedPrefix(stagedRaw: string): Promise<string> {
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(stagedRaw))
  return toHex(new Uint8Array(digest)).slice(0, 16)
}

/** The staging key, R2 upload id and attempt behind an upload token, or null for anything never issued. */
export function parseUploadToken(
  name: string,
  version: string,
  token: string,
): { key: string; uploadId: string; attempt: string } | null {
  const match = UPLOAD_TOKEN.exec(token)
  if (!match?.[1] || !match[2]) return null
  return { key: stagingKey(name, version, match[1]), uploadId: match[2], attempt: match[1] }
}

export type SlotState = 'empty' | 'same-bytes' | 'other-bytes'

/** What the version's slot holds compared with the manifest's signed size and sha256. */
export async function slotState(bucket: R2Bucket, manifest: ArtifactManifest): Promise<SlotState> {
  const key = keys.blob(manifest.name, manifest.version)
  const head = await bucket.head(key)
  if (!head) return 'empty'
  if (head.size !== manifest.size) return 'other-bytes'
  const recorded = head.checksums.sha256
  // Every slot write records the sha256 R2 verified; hashing is only for objects stored otherwise.
  const sha256 = recorded ? toHex(new Uint8Array(recorded)) : (await sha256OfObject(bucket, key))?.sha256
  return sha256 === manifest.sha256 ? 'same-bytes' : 'other-bytes'
}

/** 409 unless the slot is empty or already holds exactly the manifest's bytes. */
export function assertSlotUsable(state: SlotState, manifest: ArtifactManifest): void {
  if (state !== 'other-bytes') return
  throw new Problem(
    409,
    'conflict',
    `${manifest.name}@${manifest.version} already has stored bytes that are not this manifest's ` +
      '(another publish of the version stored them; a version never changes its bytes): publish the ' +
      'same bytes again, or a new version',
  )
}

/** Fills the slot with a single PUT's body, verified by R2 on the way in. */
export async function storeIntoSlot(
  bucket: R2Bucket,
  manifest: ArtifactManifest,
  body: ReadableStream<Uint8Array>,
): Promise<void> {
  const state = await slotState(bucket, manifest)
  assertSlotUsable(state, manifest)
  if (state === 'same-bytes') {
    // A retry after a commit that failed: the bytes are in place. Read the body to its end so the
    // client's upload finishes normally before it gets the answer.
    // A body that fails on the client's side (measuredBody) is its 400 here too.
    await body.pipeTo(new WritableStream()).catch((error: unknown) => {
      throw refusalOf(body)?.reason ?? error
    })
    return
  }
  await createSlot(bucket, manifest, body)
}

/** Moves a completed multipart upload into the slot; its staging object is deleted whatever happens. */
export async function promoteIntoSlot(
  bucket: R2Bucket,
  manifest: ArtifactManifest,
  staging: string,
): Promise<void> {
  try {
    const state = await slotState(bucket, manifest)
    assertSlotUsable(state, manifest)
    if (state === 'same-bytes') return
    const staged = await bucket.get(staging)
    if (!staged) throw new Problem(409, 'conflict', 'the completed upload is gone; upload the blob again')
    if (staged.size !== manifest.size) {
      await staged.body.cancel()
      throw new IntegrityMismatch(`the upload has ${staged.size} bytes, the manifest says ${manifest.size}`)
    }
    await createSlot(bucket, manifest, staged.body)
  } finally {
    await bucket.delete(staging).catch(() => undefined)
  }
}

/**
 * The create-only, verified write of the slot. Losing the race to an attempt with the same bytes is
 * success (the slot holds what the manifest signs); losing it to other bytes is a 409.
 */
async function createSlot(
  bucket: R2Bucket,
  manifest: ArtifactManifest,
  body: ReadableStream<Uint8Array>,
): Promise<void> {
  let written: R2Object | null
  try {
    written = await bucket.put(keys.blob(manifest.name, manifest.version), body, {
      sha256: manifest.sha256,
      httpMetadata: { contentType: manifest.mediaType },
      onlyIf: { etagDoesNotMatch: '*' },
    })
  } catch (error) {
    // A storage fault (503), or a body that ended short, ran long or broke off on the client's side
    // (400, see measuredBody), stored nothing and says nothing about the bytes.
    if (error instanceof Problem) throw error
    throw new IntegrityMismatch(`the body's sha256 does not match the manifest (${describe(error)})`)
  }
  if (written) return
  const now = await slotState(bucket, manifest)
  assertSlotUsable(now, manifest)
  if (now === 'empty') throw new Problem(409, 'conflict', 'the blob changed during the upload; retry it')
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error)
}
