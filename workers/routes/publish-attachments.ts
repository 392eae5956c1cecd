import { Hono } from 'hono'
import { z } from 'zod'
import { decodeChunkIndex } from '../../delta/chunking/chunk-index.ts'
import { DeltaFormatError } from '../../delta/errors.ts'
import { ArtifactName, Version } from '../../schemas/common.ts'
import { DeltaFraming } from '../../schemas/delta-stream.ts'
import { DeltaMethod } from '../../schemas/manifest.ts'
import type { AppEnv } from '../app-env.ts'
import { getRuntimeConfig } from '../config/runtime-config.ts'
import { requireMaintainer } from '../http/auth.ts'
import { Problem } from '../http/problem.ts'
import { countedBody, identityBody } from '../http/upload-body.ts'
import { valid } from '../http/validate.ts'
import { chunkIndexFits } from '../publish/attachments.ts'
import { MAX_SLOT_BYTES } from '../publish/blob-slot.ts'
import { bodySource, framingFor, storeFramedDelta } from '../publish/frame-delta.ts'
import { requirePending } from '../publish/pending-manifest.ts'
import { keys } from '../storage/keys.ts'

const VersionParam = z.object({ name: ArtifactName, version: Version })
const DeltaParam = VersionParam.extend({ from: Version, method: DeltaMethod })

/**
 * The rest of a staged publish: raw deltas and the chunk index the signed manifest lists, uploaded
 * after the manifest and before the blob (whose upload commits the version). Deltas are framed into
 * DeltaStreams here, once, with the framing params in force, so every read is a plain R2 range read.
 */
export const publishAttachmentsRouter = new Hono<AppEnv>()
  .use('*', requireMaintainer)
  .put('/:name/:version/deltas/:from/:method', identityBody, valid('param', DeltaParam), async (c) => {
    const { name, version, from, method } = c.req.valid('param')
    const key = keys.delta(name, from, version, method)
    // Seen before the staged manifest is read: see keyAsSeen.
    const seen = await keyAsSeen(c.env.ARTIFACTS, key)
    const manifest = (await requirePending(c.env.ARTIFACTS, name, version)).envelope.signed
    const ref = manifest.deltas.find((d) => d.from === from && d.method === method)
    if (!ref) {
      throw new Problem(
        404,
        'not-found',
        `the manifest of ${name}@${version} lists no ${method} delta from ${from}`,
      )
    }
    const length = contentLength(c.req.header('content-length'))
    if (length !== ref.size) {
      throw new Problem(422, 'integrity-mismatch', `body has ${length} bytes, the manifest says ${ref.size}`)
    }
    const body = c.req.raw.body
    if (!body && length > 0) throw new Problem(400, 'bad-request', 'missing body')
    const config = await getRuntimeConfig(c.env)
    const id = { name, from, to: version, method }
    const framing = framingFor(id, ref.size, ref.sha256, config.stream)
    // Checked at staging with the config then in force; `stream` may have changed since. Refused here,
    // before any byte is read, rather than streamed to R2 for a put it must refuse.
    if (framing.framedLength > MAX_SLOT_BYTES) {
      throw new Problem(
        422,
        'unprocessable',
        `the ${method} delta from ${from} (${ref.size} bytes) frames to ${framing.framedLength} bytes with the stream config in force (block ${framing.blockSize}, k=${framing.k}, m=${framing.m}), beyond one R2 put: the stream config changed since ${name}@${version} was staged; restore it, or give up this attempt and publish without this delta`,
      )
    }
    // Counted against Content-Length: a body that ends short, runs long or breaks off is its 400
    // (UploadBodyProblem), never a storage fault of the put it feeds (storeFramedDelta).
    const source = bodySource(countedBody(body ?? new Blob([]).stream(), length))
    try {
      if (!(await storeFramedDelta(c.env.ARTIFACTS, key, source, id, framing, {}, seen))) {
        const stored = DeltaFraming.safeParse((await c.env.ARTIFACTS.head(key))?.customMetadata ?? {})
        if (
          !stored.success ||
          stored.data.payloadSha256 !== ref.sha256 ||
          stored.data.payloadLength !== ref.size
        )
          throw keyChanged(`the ${method} delta from ${from}`, name, version)
        // Another request of this attempt stored the very same delta meanwhile (a retry).
        return c.json({ name, from, to: version, method, ...stored.data }, 201)
      }
    } catch (error) {
      if (error instanceof DeltaFormatError) {
        throw new Problem(
          422,
          'integrity-mismatch',
          `the delta does not match the manifest (${error.message})`,
        )
      }
      throw error
    }
    console.log(JSON.stringify({ level: 'info', msg: 'delta framed', ...id, ...framing }))
    return c.json({ name, from, to: version, method, ...framing }, 201)
  })
  .put('/:name/:version/chunks', identityBody, valid('param', VersionParam), async (c) => {
    const { name, version } = c.req.valid('param')
    const key = keys.chunks(name, version)
    // Seen before the staged manifest is read: see keyAsSeen.
    const seen = await keyAsSeen(c.env.ARTIFACTS, key)
    const manifest = (await requirePending(c.env.ARTIFACTS, name, version)).envelope.signed
    const ref = manifest.chunkIndex
    if (!ref) throw new Problem(404, 'not-found', `the manifest of ${name}@${version} lists no chunk index`)
    // Refused at staging too (attachments.ts); a manifest staged before that check still lands here.
    if (!chunkIndexFits(ref)) {
      throw new Problem(422, 'unprocessable', "the manifest's chunk index size does not fit its chunk count")
    }
    const length = contentLength(c.req.header('content-length'))
    if (length !== ref.size) {
      throw new Problem(422, 'integrity-mismatch', `body has ${length} bytes, the manifest says ${ref.size}`)
    }
    // Bounded by the check above; decoding proves it describes this artifact, not just any bytes.
    const bytes = new Uint8Array(await c.req.arrayBuffer())
    let totalLength: number
    let chunkCount: number
    try {
      const index = decodeChunkIndex(bytes)
      totalLength = index.totalLength
      chunkCount = index.chunks.length
    } catch (error) {
      throw new Problem(422, 'integrity-mismatch', `not a chunk index (${(error as Error).message})`)
    }
    if (totalLength !== manifest.size || chunkCount !== ref.chunkCount) {
      throw new Problem(
        422,
        'integrity-mismatch',
        `the index covers ${totalLength} bytes in ${chunkCount} chunks; the manifest says ${manifest.size} in ${ref.chunkCount}`,
      )
    }
    try {
      const written = await c.env.ARTIFACTS.put(key, bytes, {
        sha256: ref.sha256,
        httpMetadata: { contentType: 'application/vnd.deltaport.chunk-index' },
        customMetadata: { sha256: ref.sha256 },
        onlyIf: seen,
      })
      if (!written) {
        const stored = await c.env.ARTIFACTS.head(key)
        // Unless another request of this attempt stored the very same index meanwhile (a retry).
        if (stored?.customMetadata?.sha256 !== ref.sha256 || stored.size !== ref.size)
          throw keyChanged('the chunk index', name, version)
      }
    } catch (error) {
      // Storage faults (StorageUnavailable) and the refusal above keep their meaning.
      if (error instanceof Problem) throw error
      throw new Problem(
        422,
        'integrity-mismatch',
        `the chunk index's sha256 does not match (${(error as Error).message})`,
      )
    }
    return c.json({ name, version, size: ref.size, sha256: ref.sha256, chunkCount }, 201)
  })

/**
 * The condition that writes an attachment's key only if nothing changed it since this upload looked at
 * it, taken before the upload reads the staged manifest. Why: an upload is checked against the manifest
 * staged when it starts, but its body may arrive minutes later, after its attempt was given up and
 * another attempt of the version staged and uploaded its own delta or chunk index there and committed.
 * Written unconditionally, the stale upload then replaced that attempt's object with one its published
 * manifest does not list, for good. Every write since the look changes the etag, so the stale write is
 * refused; a write before it belongs to an attempt staged before this upload read the staged manifest.
 */
async function keyAsSeen(bucket: R2Bucket, key: string): Promise<R2Conditional> {
  const head = await bucket.head(key)
  return head ? { etagMatches: head.etag } : { etagDoesNotMatch: '*' }
}

function keyChanged(what: string, name: string, version: string): Problem {
  return new Problem(
    409,
    'conflict',
    `${what} of ${name}@${version} was uploaded by another request while this one ran (another publish attempt took the version over); nothing of this upload was stored`,
  )
}

function contentLength(header: string | undefined): number {
  if (header === undefined) throw new Problem(411, 'length-required', 'uploads need a Content-Length')
  if (!/^\d{1,16}$/.test(header)) throw new Problem(400, 'bad-request', 'Content-Length is not a number')
  return Number(header)
}
