import { Hono } from 'hono'
import { bodyLimit } from 'hono/body-limit'
import { z } from 'zod'
import { ArtifactName, Version } from '../../schemas/common.ts'
import { MAX_MANIFEST_BYTES, SignedManifest } from '../../schemas/manifest.ts'
import {
  CompleteMultipart,
  MAX_PARTS,
  MIN_PART_BYTES,
  type Published,
  type PublishStarted,
} from '../../schemas/publish.ts'
import type { AppEnv } from '../app-env.ts'
import { getRuntimeConfig } from '../config/runtime-config.ts'
import { requireMaintainer } from '../http/auth.ts'
import { Problem } from '../http/problem.ts'
import { valid } from '../http/validate.ts'
import { assertAttachmentsStored } from '../publish/attachments.ts'
import { sha256OfObject } from '../publish/verify-object.ts'
import {
  assertPublishable,
  commitVersion,
  emptyIndex,
  readIndex,
  readManifest,
} from '../storage/artifact-store.ts'
import { StorageUnavailable } from '../storage/guarded-bucket.ts'
import { keys } from '../storage/keys.ts'

const VersionParam = z.object({ name: ArtifactName, version: Version })
const UploadParam = VersionParam.extend({ uploadId: z.string().min(1).max(1024) })
const PartParam = UploadParam.extend({ part: z.coerce.number().int().min(1).max(MAX_PARTS) })
/**
 * `type/subtype` with optional `; name=value` parameters (RFC 9110 tokens, quoted values without control
 * characters). The media type becomes the blob's Content-Type: anything else would make every read of
 * the version fail (a header value with CR/LF throws) or smuggle a header.
 */
const MEDIA_TYPE =
  /^[!#$%&'*+.^_`|~0-9A-Za-z-]+\/[!#$%&'*+.^_`|~0-9A-Za-z-]+(?:[ \t]*;[ \t]*[!#$%&'*+.^_`|~0-9A-Za-z-]+=(?:[!#$%&'*+.^_`|~0-9A-Za-z-]+|"[ !#-[\]-~]*"))*$/
/** Parts beyond this are refused before R2 sees them; R2's own ceiling is 5 GiB. */
const MAX_PART_BYTES = 512 * 1024 * 1024

/**
 * Maintainer write side. A publish is staged: the signed manifest first (pending, invisible), then the
 * bytes in one PUT or R2 multipart; the version becomes visible only once the bytes are verified
 * against the manifest's size and sha256. A mismatch leaves nothing behind. Deltas and the chunk index
 * the manifest lists (publish-attachments.ts) must be uploaded before the blob: its upload commits.
 */
export const publishRouter = new Hono<AppEnv>()
  .use('*', requireMaintainer)
  .post(
    '/:name/:version',
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
      if (!MEDIA_TYPE.test(manifest.mediaType)) {
        throw new Problem(
          422,
          'unprocessable',
          'mediaType must be a plain type/subtype with optional parameters',
        )
      }
      // Agents refuse an expired manifest anyway; refusing it here saves a publish nobody can install
      // (and an old envelope replayed under a fresh serial is usually expired too).
      if (Date.parse(manifest.expires) <= Date.now()) {
        throw new Problem(422, 'unprocessable', `the manifest expired at ${manifest.expires}; sign it again`)
      }
      // The operator's cap on one artifact (runtime config), checked before any byte is uploaded.
      const { maxPublishBytes } = (await getRuntimeConfig(c.env)).limits
      if (manifest.size > maxPublishBytes) {
        throw new Problem(
          413,
          'payload-too-large',
          `the artifact has ${manifest.size} bytes; this edge accepts at most ${maxPublishBytes}`,
        )
      }
      const found = await readIndex(c.env.ARTIFACTS, name)
      assertPublishable(found?.index ?? emptyIndex(name), manifest)
      // Stored verbatim: agents verify the maintainer's signature over these exact bytes' `signed` body.
      await c.env.ARTIFACTS.put(keys.pendingManifest(name, version), JSON.stringify(envelope), {
        httpMetadata: { contentType: 'application/json' },
      })
      const body: PublishStarted = {
        name,
        version,
        maxSinglePutBytes: maxSinglePut(c.env),
        partBytes: Math.max(MIN_PART_BYTES, Math.ceil(manifest.size / MAX_PARTS)),
      }
      return c.json(body, 201)
    },
  )
  .put('/:name/:version/blob', valid('param', VersionParam), async (c) => {
    const { name, version } = c.req.valid('param')
    const pending = await requirePending(c.env.ARTIFACTS, name, version)
    const manifest = pending.envelope.signed
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
    const body = c.req.raw.body
    if (!body) throw new Problem(400, 'bad-request', 'missing body')
    try {
      // R2 hashes the bytes as they stream in and refuses the write on mismatch, so a bad body is
      // never stored, not even briefly.
      await c.env.ARTIFACTS.put(keys.blob(name, version), body, {
        sha256: manifest.sha256,
        httpMetadata: { contentType: manifest.mediaType },
      })
    } catch (error) {
      // A storage fault (503) stored nothing and says nothing about the bytes: keep the staged manifest.
      if (error instanceof StorageUnavailable) throw error
      await c.env.ARTIFACTS.delete([keys.blob(name, version), keys.pendingManifest(name, version)])
      throw new Problem(
        422,
        'integrity-mismatch',
        `the body's sha256 does not match the manifest (${describe(error)})`,
      )
    }
    await commitVersion(c.env.ARTIFACTS, manifest, pending.raw)
    return c.json(published(manifest), 201)
  })
  .post('/:name/:version/uploads', valid('param', VersionParam), async (c) => {
    const { name, version } = c.req.valid('param')
    const pending = await requirePending(c.env.ARTIFACTS, name, version)
    await assertAttachmentsStored(c.env.ARTIFACTS, pending.envelope.signed)
    const upload = await c.env.ARTIFACTS.createMultipartUpload(keys.blob(name, version), {
      httpMetadata: { contentType: pending.envelope.signed.mediaType },
    })
    return c.json({ uploadId: upload.uploadId }, 201)
  })
  .put('/:name/:version/uploads/:uploadId/parts/:part', valid('param', PartParam), async (c) => {
    const { name, version, uploadId, part } = c.req.valid('param')
    await requirePending(c.env.ARTIFACTS, name, version)
    const length = contentLength(c.req.header('content-length'))
    if (length > MAX_PART_BYTES)
      throw new Problem(413, 'payload-too-large', `parts are at most ${MAX_PART_BYTES} bytes`)
    const body = c.req.raw.body
    if (!body || length === 0) throw new Problem(400, 'bad-request', 'a part needs a body')
    const upload = c.env.ARTIFACTS.resumeMultipartUpload(keys.blob(name, version), uploadId)
    try {
      const uploaded = await upload.uploadPart(part, body)
      return c.json({ partNumber: uploaded.partNumber, etag: uploaded.etag }, 200)
    } catch (error) {
      if (error instanceof StorageUnavailable) throw error
      throw new Problem(409, 'conflict', `the upload refused this part (${describe(error)})`)
    }
  })
  .post(
    '/:name/:version/uploads/:uploadId/complete',
    bodyLimit({ maxSize: 1024 * 1024, onError: tooLarge }),
    valid('param', UploadParam),
    valid('json', CompleteMultipart),
    async (c) => {
      const { name, version, uploadId } = c.req.valid('param')
      const pending = await requirePending(c.env.ARTIFACTS, name, version)
      const manifest = pending.envelope.signed
      await assertAttachmentsStored(c.env.ARTIFACTS, manifest)
      const upload = c.env.ARTIFACTS.resumeMultipartUpload(keys.blob(name, version), uploadId)
      try {
        await upload.complete(c.req.valid('json').parts)
      } catch (error) {
        if (error instanceof StorageUnavailable) throw error
        throw new Problem(409, 'conflict', `the upload could not be completed (${describe(error)})`)
      }
      const stored = await sha256OfObject(c.env.ARTIFACTS, keys.blob(name, version))
      if (!stored || stored.size !== manifest.size || stored.sha256 !== manifest.sha256) {
        await c.env.ARTIFACTS.delete([keys.blob(name, version), keys.pendingManifest(name, version)])
        throw new Problem(
          422,
          'integrity-mismatch',
          `stored ${stored?.size ?? 0} bytes with sha256 ${stored?.sha256 ?? 'none'}; the manifest says ${manifest.size} bytes, ${manifest.sha256}`,
        )
      }
      await commitVersion(c.env.ARTIFACTS, manifest, pending.raw)
      return c.json(published(manifest), 201)
    },
  )
  .delete('/:name/:version/uploads/:uploadId', valid('param', UploadParam), async (c) => {
    const { name, version, uploadId } = c.req.valid('param')
    try {
      await c.env.ARTIFACTS.resumeMultipartUpload(keys.blob(name, version), uploadId).abort()
    } catch (error) {
      // R2 refused the id (unknown, finished, another object's): a clear 404, not an unhandled 500.
      if (error instanceof StorageUnavailable) throw error
      throw new Problem(404, 'not-found', `no such upload of ${name}@${version} (${describe(error)})`)
    }
    await c.env.ARTIFACTS.delete(keys.pendingManifest(name, version))
    return c.body(null, 204)
  })

async function requirePending(bucket: R2Bucket, name: string, version: string) {
  const pending = await readManifest(bucket, keys.pendingManifest(name, version))
  if (!pending)
    throw new Problem(
      409,
      'conflict',
      `start the publish of ${name}@${version} with its signed manifest first`,
    )
  return pending
}

function published(manifest: SignedManifest['signed']): Published {
  const { name, version, serial, size, sha256 } = manifest
  return { name, version, serial, size, sha256 }
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
