import { Hono } from 'hono'
import { z } from 'zod'
import { decodeChunkIndex } from '../../delta/chunking/chunk-index.ts'
import { DeltaFormatError } from '../../delta/errors.ts'
import { ArtifactName, Version } from '../../schemas/common.ts'
import { DeltaMethod } from '../../schemas/manifest.ts'
import type { AppEnv } from '../app-env.ts'
import { getRuntimeConfig } from '../config/runtime-config.ts'
import { requireMaintainer } from '../http/auth.ts'
import { Problem } from '../http/problem.ts'
import { valid } from '../http/validate.ts'
import { chunkIndexFits } from '../publish/attachments.ts'
import { bodySource, framingFor, storeFramedDelta } from '../publish/frame-delta.ts'
import { requirePending } from '../publish/pending-manifest.ts'
import { StorageUnavailable } from '../storage/guarded-bucket.ts'
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
  .put('/:name/:version/deltas/:from/:method', valid('param', DeltaParam), async (c) => {
    const { name, version, from, method } = c.req.valid('param')
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
    const framing = framingFor(ref.size, ref.sha256, config.stream)
    const id = { name, from, to: version, method }
    const source = body ? bodySource(body) : bodySource(new Blob([]).stream())
    try {
      await storeFramedDelta(c.env.ARTIFACTS, keys.delta(name, from, version, method), source, id, framing)
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
  .put('/:name/:version/chunks', valid('param', VersionParam), async (c) => {
    const { name, version } = c.req.valid('param')
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
      await c.env.ARTIFACTS.put(keys.chunks(name, version), bytes, {
        sha256: ref.sha256,
        httpMetadata: { contentType: 'application/vnd.deltaport.chunk-index' },
        customMetadata: { sha256: ref.sha256 },
      })
    } catch (error) {
      if (error instanceof StorageUnavailable) throw error
      throw new Problem(
        422,
        'integrity-mismatch',
        `the chunk index's sha256 does not match (${(error as Error).message})`,
      )
    }
    return c.json({ name, version, size: ref.size, sha256: ref.sha256, chunkCount }, 201)
  })

function contentLength(header: string | undefined): number {
  if (header === undefined) throw new Problem(411, 'length-required', 'uploads need a Content-Length')
  if (!/^\d{1,16}$/.test(header)) throw new Problem(400, 'bad-request', 'Content-Length is not a number')
  return Number(header)
}
