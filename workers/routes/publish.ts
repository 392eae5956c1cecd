import { Hono } from 'hono'
import { bodyLimit } from 'hono/body-limit'
import { z } from 'zod'
import { ArtifactName, decimalParam, Sha256Hex, Version } from '../../schemas/common.ts'
import { MAX_MANIFEST_BYTES, SignedManifest } from '../../schemas/manifest.ts'
import {
  CompleteMultipart,
  MAX_PART_BYTES,
  MAX_PARTS,
  MIN_PART_BYTES,
  type Published,
  type PublishStarted,
} from '../../schemas/publish.ts'
import type { AppEnv } from '../app-env.ts'
import { getRuntimeConfig } from '../config/runtime-config.ts'
import { requireMaintainer } from '../http/auth.ts'
import { Problem } from '../http/problem.ts'
import { identityBody, measuredBody } from '../http/upload-body.ts'
import { valid } from '../http/validate.ts'
import { assertAttachmentsStorable, assertAttachmentsStored } from '../publish/attachments.ts'
import {
  assertSlotUsable,
  attemptBelongsTo,
  IntegrityMismatch,
  MAX_SLOT_BYTES,
  newAttempt,
  newUploadToken,
  parseUploadToken,
  promoteIntoSlot,
  slotState,
  stagingKey,
  storeIntoSlot,
} from '../publish/blob-slot.ts'
import { assertMaintainerSigned } from '../publish/maintainer-keys.ts'
import {
  abandonPending,
  attemptOf,
  discardPending,
  holdForCommit,
  type PendingPublish,
  releaseHold,
  requirePending,
  stagePending,
} from '../publish/pending-manifest.ts'
import {
  assertPublishable,
  type Committed,
  commitVersion,
  emptyIndex,
  NotPublishable,
  readIndex,
} from '../storage/artifact-store.ts'
import { abortUpload, StorageUnavailable } from '../storage/guarded-bucket.ts'
import { MAX_STATEMENT_AHEAD_MS } from '../storage/yank.ts'

const VersionParam = z.object({ name: ArtifactName, version: Version })
const UploadParam = VersionParam.extend({ uploadId: z.string().min(1).max(1024) })
const PartParam = UploadParam.extend({ part: decimalParam(1, MAX_PARTS) })
const AttemptParam = VersionParam.extend({ attempt: Sha256Hex })
/**
 * `type/subtype` with optional `; name=value` parameters (RFC 9110 tokens, quoted values without control
 * characters). The media type becomes the blob's Content-Type: anything else would make every read of
 * the version fail (a header value with CR/LF throws) or smuggle a header.
 */
const MEDIA_TYPE =
  /^[!#$%&'*+.^_`|~0-9A-Za-z-]+\/[!#$%&'*+.^_`|~0-9A-Za-z-]+(?:[ \t]*;[ \t]*[!#$%&'*+.^_`|~0-9A-Za-z-]+=(?:[!#$%&'*+.^_`|~0-9A-Za-z-]+|"[ !#-[\]-~]*"))*$/

/**
 * Maintainer write side. A publish is staged: the signed manifest first (pending, invisible), then the
 * bytes in one PUT or R2 multipart; the version becomes visible only once the bytes are verified
 * against the manifest's size and sha256. A mismatch leaves nothing behind. Deltas and the chunk index
 * the manifest lists (publish-attachments.ts) must be uploaded before the blob: its upload commits.
 * One attempt owns a version's staging at a time (pending-manifest.ts), and the blob key is written
 * once, never deleted here, so overlapping attempts cannot undo each other (blob-slot.ts).
 */
export const publishRouter = new Hono<AppEnv>()
  .use('*', requireMaintainer)
  .post(
    '/:name/:version',
    identityBody,
    bodyLimit({ maxSize: MAX_MANIFEST_BYTES, onError: tooLarge }),
    valid('param', VersionParam),
    valid('json', SignedManifest),
    async (c) => {
      const { name, version } = c.req.valid('param')
      const envelope = c.req.valid('json')
      const manifest = envelope.signed
      if (manifest.name !== name || manifest.version !== version) {
        throw new Problem(
          422,
          'unprocessable',
          `the manifest describes ${manifest.name}@${manifest.version}, not ${name}@${version}`,
        )
      }
      await assertMaintainerSigned(c.env, envelope, `the manifest of ${name}@${version}`)
      if (!MEDIA_TYPE.test(manifest.mediaType)) {
        throw new Problem(
          422,
          'unprocessable',
          'mediaType must be a plain type/subtype with optional parameters',
        )
      }
      // Before the expiry: a manifest dated far from this edge's clock expired (or will expire) when its
      // signer did not mean it to, and signing again on the same machine cannot fix that.
      assertSignedNow(manifest, Date.now())
      // Agents refuse an expired manifest anyway; refusing it here saves a publish nobody can install
      // (and an old envelope replayed under a fresh serial is usually expired too).
      if (Date.parse(manifest.expires) <= Date.now()) {
        throw new Problem(422, 'unprocessable', `the manifest expired at ${manifest.expires}; sign it again`)
      }
      // The operator's cap on one artifact (runtime config), checked before any byte is uploaded.
      // Also bounded by the one verified put that fills the blob key (blob-slot.ts).
      const config = await getRuntimeConfig(c.env)
      const maxPublishBytes = Math.min(config.limits.maxPublishBytes, MAX_SLOT_BYTES)
      if (manifest.size > maxPublishBytes) {
        throw new Problem(
          413,
          'payload-too-large',
          `the artifact has ${manifest.size} bytes; this edge accepts at most ${maxPublishBytes}`,
        )
      }
      assertAttachmentsStorable(manifest, config.stream)
      const found = await readIndex(c.env.ARTIFACTS, name)
      const index = found?.index ?? emptyIndex(name)
      assertPublishable(index, manifest)
      // Bytes stored by an earlier attempt whose commit failed bind the version: say so before any upload.
      assertSlotUsable(await slotState(c.env.ARTIFACTS, manifest), manifest)
      // Stored as parsed, which is exactly what was signed: signed bodies are strict schemas without
      // transforms (an unknown field was refused above by name), and agents verify the maintainer's
      // signature over this `signed` body.
      // Refused (409) while another attempt's manifest is staged; the same manifest again is a retry.
      const raw = JSON.stringify(envelope)
      await stagePending(c.env.ARTIFACTS, envelope, raw, Date.now(), index.latestSerial)
      const body: PublishStarted = {
        name,
        version,
        attempt: await attemptOf(raw),
        maxSinglePutBytes: maxSinglePut(c.env),
        partBytes: Math.max(MIN_PART_BYTES, Math.ceil(manifest.size / MAX_PARTS)),
      }
      return c.json(body, 201)
    },
  )
  .put('/:name/:version/blob', identityBody, valid('param', VersionParam), async (c) => {
    const { name, version } = c.req.valid('param')
    const pending = await requirePending(c.env.ARTIFACTS, name, version)
    const manifest = pending.envelope.signed
    // Before any byte is read: a rotation since staging would refuse the commit anyway (commit below).
    await assertStillSigned(c.env, pending)
    // The blob commits the version, so what else the manifest lists must be in place first.
    await assertAttachmentsStored(c.env.ARTIFACTS, manifest)
    const length = contentLength(c.req.header('content-length'))
    if (length > maxSinglePut(c.env)) {
      throw new Problem(
        413,
        'payload-too-large',
        `bodies over ${maxSinglePut(c.env)} bytes must use multipart upload`,
      )
    }
    if (length !== manifest.size) {
      throw new Problem(
        422,
        'integrity-mismatch',
        `body has ${length} bytes, the manifest says ${manifest.size}`,
      )
    }
    if (!c.req.raw.body) throw new Problem(400, 'bad-request', 'missing body')
    // Exactly Content-Length bytes or a 400 (never a storage fault): see measuredBody.
    const body = measuredBody(c.req.raw.body, length)
    try {
      // R2 hashes the bytes as they stream in and refuses the write on mismatch, so a bad body is
      // never stored, not even briefly; the write is create-only, so it never replaces stored bytes.
      await storeIntoSlot(c.env.ARTIFACTS, manifest, body)
    } catch (error) {
      // Only the staged manifest is dropped; a storage fault (503) keeps it for the retry.
      if (error instanceof IntegrityMismatch)
        await discardPending(c.env.ARTIFACTS, name, version, pending.raw)
      throw error
    }
    return c.json(published(manifest, await commit(c.env, pending)), 201)
  })
  .post('/:name/:version/commit', valid('param', VersionParam), async (c) => {
    // For a manifest re-signed after its serial was overtaken (its first commit got 409
    // serial-overtaken): the bytes already fill the slot, so uploading them again would only be drained.
    const { name, version } = c.req.valid('param')
    const pending = await requirePending(c.env.ARTIFACTS, name, version)
    const manifest = pending.envelope.signed
    await assertAttachmentsStored(c.env.ARTIFACTS, manifest)
    const state = await slotState(c.env.ARTIFACTS, manifest)
    assertSlotUsable(state, manifest)
    if (state === 'empty') {
      throw new Problem(
        409,
        'conflict',
        `no bytes of ${name}@${version} are stored yet: upload them (PUT …/blob or a multipart upload), which commits`,
      )
    }
    return c.json(published(manifest, await commit(c.env, pending)), 201)
  })
  .delete('/:name/:version/attempts/:attempt', valid('param', AttemptParam), async (c) => {
    // A single PUT cut off (Ctrl-C, a dropped link) never reaches the edge's own cleanup, and its staged
    // manifest would hold the version for 30 minutes; its CLI gives it up here instead.
    const { name, version, attempt } = c.req.valid('param')
    await abandonPending(c.env.ARTIFACTS, name, version, attempt)
    return c.body(null, 204)
  })
  .post('/:name/:version/uploads', valid('param', VersionParam), async (c) => {
    const { name, version } = c.req.valid('param')
    const pending = await requirePending(c.env.ARTIFACTS, name, version)
    await assertStillSigned(c.env, pending)
    await assertAttachmentsStored(c.env.ARTIFACTS, pending.envelope.signed)
    assertSlotUsable(await slotState(c.env.ARTIFACTS, pending.envelope.signed), pending.envelope.signed)
    // Each upload goes to its own staging key; only its promotion after completion fills the blob key.
    const attempt = await newAttempt(pending.raw)
    const upload = await c.env.ARTIFACTS.createMultipartUpload(stagingKey(name, version, attempt), {
      httpMetadata: { contentType: pending.envelope.signed.mediaType },
    })
    return c.json({ uploadId: newUploadToken(upload.uploadId, attempt) }, 201)
  })
  .put(
    '/:name/:version/uploads/:uploadId/parts/:part',
    identityBody,
    valid('param', PartParam),
    async (c) => {
      const { name, version, uploadId, part } = c.req.valid('param')
      const pending = await requirePending(c.env.ARTIFACTS, name, version)
      const length = contentLength(c.req.header('content-length'))
      if (length > MAX_PART_BYTES)
        throw new Problem(413, 'payload-too-large', `parts are at most ${MAX_PART_BYTES} bytes`)
      if (!c.req.raw.body || length === 0) throw new Problem(400, 'bad-request', 'a part needs a body')
      const target = parseUploadToken(name, version, uploadId)
      if (!target) throw new Problem(409, 'conflict', `no such upload of ${name}@${version}`)
      await assertUploadOfStaged(target.attempt, pending)
      const upload = c.env.ARTIFACTS.resumeMultipartUpload(target.key, target.uploadId)
      try {
        // Exactly Content-Length bytes or a 400 (see measuredBody); a part whose upload failed is not
        // stored, and the client gets no etag to complete the upload with.
        const uploaded = await upload.uploadPart(part, measuredBody(c.req.raw.body, length))
        return c.json({ partNumber: uploaded.partNumber, etag: uploaded.etag }, 200)
      } catch (error) {
        // A storage fault (503) and a body that failed on the client's side (400) keep their meaning.
        if (error instanceof Problem) throw error
        throw new Problem(409, 'conflict', `the upload refused this part (${describe(error)})`)
      }
    },
  )
  .post(
    '/:name/:version/uploads/:uploadId/complete',
    identityBody,
    bodyLimit({ maxSize: 1024 * 1024, onError: tooLarge }),
    valid('param', UploadParam),
    valid('json', CompleteMultipart),
    async (c) => {
      const { name, version, uploadId } = c.req.valid('param')
      const pending = await requirePending(c.env.ARTIFACTS, name, version)
      const manifest = pending.envelope.signed
      await assertAttachmentsStored(c.env.ARTIFACTS, manifest)
      const target = parseUploadToken(name, version, uploadId)
      if (!target) throw new Problem(409, 'conflict', `no such upload of ${name}@${version}`)
      // Checked against (and on a mismatch discarding) the staged manifest it was started for only.
      await assertUploadOfStaged(target.attempt, pending)
      const upload = c.env.ARTIFACTS.resumeMultipartUpload(target.key, target.uploadId)
      try {
        await upload.complete(c.req.valid('json').parts)
      } catch (error) {
        if (error instanceof StorageUnavailable) throw error
        throw new Problem(409, 'conflict', `the upload could not be completed (${describe(error)})`)
      }
      try {
        // Verified (size, sha256) as it is copied into the blob key; the staging object goes either way.
        await promoteIntoSlot(c.env.ARTIFACTS, manifest, target.key)
      } catch (error) {
        if (error instanceof IntegrityMismatch)
          await discardPending(c.env.ARTIFACTS, name, version, pending.raw)
        throw error
      }
      return c.json(published(manifest, await commit(c.env, pending)), 201)
    },
  )
  .delete('/:name/:version/uploads/:uploadId', valid('param', UploadParam), async (c) => {
    const { name, version, uploadId } = c.req.valid('param')
    const noSuchUpload = (why: string) =>
      new Problem(404, 'not-found', `no such upload of ${name}@${version} (${why})`)
    // The upload lives at its attempt's staging key, named by the token the edge issued.
    const target = parseUploadToken(name, version, uploadId)
    if (!target) throw noSuchUpload('not an upload id this edge issued')
    try {
      // 404 only for R2's "no such upload" (10024); faults stay 503, other refusals are 409.
      if (!(await abortUpload(c.env.ARTIFACTS, target.key, target.uploadId)))
        throw noSuchUpload('R2 has no such multipart upload')
    } catch (error) {
      if (error instanceof Problem) throw error
      throw new Problem(409, 'conflict', `R2 refused to abort the upload (${describe(error)})`)
    }
    // Giving up the upload gives up its publish: the version is free at once, unless another attempt
    // has taken it over since this upload started.
    await discardPending(c.env.ARTIFACTS, name, version, (raw) => attemptBelongsTo(target.attempt, raw))
    return c.body(null, 204)
  })

/** How far a staged manifest's `createdAt` may lie behind this edge's clock (a manifest signed, then staged later). */
const MAX_SIGNED_BEHIND_MS = 24 * 60 * 60 * 1000

/**
 * Refuses (422) a manifest dated more than a day behind this edge's clock or more than an hour ahead of
 * it (MAX_STATEMENT_AHEAD_MS, as for yank statements): the CLI signs right before it stages and counts
 * `expires` from its own clock, so such a date means the signing machine's clock is off, and the
 * release would expire that much earlier (devices refuse it, unannounced) or later than meant.
 */
function assertSignedNow(manifest: SignedManifest['signed'], now: number): void {
  const created = Date.parse(manifest.createdAt)
  const behind = now - created > MAX_SIGNED_BEHIND_MS
  if (!behind && created - now <= MAX_STATEMENT_AHEAD_MS) return
  const days = (Math.abs(now - created) / 86_400_000).toFixed(1)
  throw new Problem(
    422,
    'unprocessable',
    `the manifest of ${manifest.name}@${manifest.version} is dated ${manifest.createdAt}, ${days} days ${behind ? 'behind' : 'ahead of'} this edge's clock (${new Date(now).toISOString()}), and its expiry ${manifest.expires} is counted from that date: check the signing machine's clock, then publish again`,
  )
}

/**
 * 409 unless the upload of `attempt` was started for the manifest staged now. Another attempt may have
 * taken the version over since (ADR 0022): the upload's bytes were never meant for that attempt's
 * manifest, and a verification failure against it would drop that attempt's staged publish, which only
 * its own uploads may do.
 */
async function assertUploadOfStaged(attempt: string, pending: PendingPublish): Promise<void> {
  if (await attemptBelongsTo(attempt, pending.raw)) return
  const { name, version, serial } = pending.envelope.signed
  throw new Problem(
    409,
    'conflict',
    `this upload belongs to another publish attempt of ${name}@${version}, replaced since by the one staged now (serial ${serial}); nothing of it is used: start the publish again`,
  )
}

/**
 * Commits a verified version, if its attempt still holds the version (holdForCommit: it was not given
 * up or taken over while its upload ran, which may have been minutes). A manifest the index refuses for
 * good (its serial was overtaken while it uploaded) also drops its staged manifest, so a re-signed one
 * may be staged at once; any other failure gives the hold back, so the attempt can be retried or given
 * up at once.
 */
async function commit(env: Env, pending: PendingPublish): Promise<Committed> {
  const bucket = env.ARTIFACTS
  const manifest = pending.envelope.signed
  await assertStillSigned(env, pending)
  const held = await holdForCommit(bucket, pending)
  try {
    return await commitVersion(bucket, manifest, pending.raw, Date.now(), true)
  } catch (error) {
    const dropped =
      error instanceof NotPublishable &&
      (await discardPending(bucket, manifest.name, manifest.version, pending.raw, true).then(
        () => true,
        () => false,
      ))
    // Given back when kept: a refused manifest left staged by a failed drop is then replaced by the
    // re-signed one at once (stagePending), as it would be given up.
    if (!dropped) await releaseHold(bucket, held)
    throw error
  }
}

/**
 * The staged manifest's signatures checked again against the maintainers in force now (ADR 0031, 0036).
 * They were checked when it was staged, but its upload may commit up to 30 minutes later, and a root
 * published meanwhile (or a MAINTAINER_KEYS edit) may have revoked its signer: from that moment the edge
 * publishes nothing that key alone signed, as devices then refuse it. A manifest refused so is dropped,
 * leaving the version free for one the maintainers in force sign (bytes it stored stay and bind the
 * version, as after any failed commit); 422 `untrusted-signature` saying what changed.
 */
async function assertStillSigned(env: Env, pending: PendingPublish): Promise<void> {
  const { name, version } = pending.envelope.signed
  try {
    await assertMaintainerSigned(env, pending.envelope, `the manifest of ${name}@${version}`)
  } catch (error) {
    if (!(error instanceof Problem) || error.status !== 422) throw error
    await discardPending(env.ARTIFACTS, name, version, pending.raw)
    throw new Problem(
      error.status,
      error.slug,
      `${error.message}: the maintainers changed since it was staged (a root published or MAINTAINER_KEYS edited meanwhile), so nothing was published and the version is free; publish it again signed by the keys in force`,
    )
  }
}

function published(manifest: SignedManifest['signed'], committed: Committed): Published {
  const { name, version, serial, size, sha256 } = manifest
  return { name, version, serial, size, sha256, channelsNotMoved: committed.channelsNotMoved }
}

function contentLength(header: string | undefined): number {
  if (header === undefined) throw new Problem(411, 'length-required', 'uploads need a Content-Length')
  if (!/^\d{1,16}$/.test(header)) throw new Problem(400, 'bad-request', 'Content-Length is not a number')
  return Number(header)
}

function maxSinglePut(env: Env): number {
  return Number(env.MAX_SINGLE_PUT_BYTES)
}

function tooLarge(): never {
  throw new Problem(413, 'payload-too-large', 'the request body is too large')
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error)
}
