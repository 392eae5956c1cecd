import { createExecutionContext, waitOnExecutionContext } from 'cloudflare:test'
import { env } from 'cloudflare:workers'
import { buildChunkIndex, encodeChunkIndex } from '../../delta/chunking/chunk-index.ts'
import { collectingSink } from '../../delta/io.ts'
import { StreamReassembler } from '../../delta/stream/reassembler.ts'
import type { DeltaMethod, DeltaRef, SignedManifest } from '../../schemas/manifest.ts'
import app from '../index.ts'
import { auth, call, envelopeFor, sha256, startPublish } from './publish-helpers.ts'

export interface DeltaUpload {
  from: string
  method: DeltaMethod
  bytes: Uint8Array
}

/**
 * Calls the app in this isolate with `bindings` (default: the real env), and waits for its
 * waitUntil work (cache writes) before returning the fully read response.
 */
export async function callApp(
  path: string,
  init: RequestInit = {},
  bindings: Env = env,
): Promise<{ response: Response; bytes: Uint8Array }> {
  const ctx = createExecutionContext()
  const response = await app.fetch(new Request(`https://edge.test${path}`, init), bindings, ctx)
  const bytes = new Uint8Array(await response.arrayBuffer())
  await waitOnExecutionContext(ctx)
  return { response, bytes }
}

export async function deltaRefOf(upload: DeltaUpload): Promise<DeltaRef> {
  return {
    from: upload.from,
    method: upload.method,
    size: upload.bytes.length,
    sha256: await sha256(upload.bytes),
  }
}

export function putDelta(name: string, version: string, upload: DeltaUpload, body = upload.bytes) {
  return call(`/v1/publish/${encodeURIComponent(name)}/${version}/deltas/${upload.from}/${upload.method}`, {
    method: 'PUT',
    headers: { ...auth, 'content-length': String(body.length) },
    body,
  })
}

export function putChunks(name: string, version: string, index: Uint8Array) {
  return call(`/v1/publish/${encodeURIComponent(name)}/${version}/chunks`, {
    method: 'PUT',
    headers: { ...auth, 'content-length': String(index.length) },
    body: index,
  })
}

export function putBlob(name: string, version: string, body: Uint8Array) {
  return call(`/v1/publish/${encodeURIComponent(name)}/${version}/blob`, {
    method: 'PUT',
    headers: { ...auth, 'content-length': String(body.length) },
    body,
  })
}

/** A full publish with deltas and a chunk index, in the order the edge requires. */
export async function publishWithDeltas(
  name: string,
  version: string,
  body: Uint8Array,
  serial: number,
  deltas: DeltaUpload[],
): Promise<SignedManifest> {
  const index = encodeChunkIndex(await buildChunkIndex(body))
  const envelope = await envelopeFor(name, version, body, {
    serial,
    deltas: await Promise.all(deltas.map(deltaRefOf)),
    chunkIndex: { size: index.length, sha256: await sha256(index), chunkCount: (index.length - 36) / 20 },
  })
  await expectStatus(startPublish(envelope), 201)
  for (const d of deltas) await expectStatus(putDelta(name, version, d), 201)
  await expectStatus(putChunks(name, version, index), 201)
  await expectStatus(putBlob(name, version, body), 201)
  return envelope
}

async function expectStatus(pending: Promise<Response>, status: number): Promise<void> {
  const response = await pending
  if (response.status !== status)
    throw new Error(`expected ${status}, got ${response.status}: ${await response.text()}`)
  await response.body?.cancel()
}

/** Decodes a whole framed stream the way the agent does, returning the verified payload. */
export async function unframe(stream: Uint8Array): Promise<Uint8Array> {
  const sink = collectingSink()
  const reassembler = new StreamReassembler(sink)
  await reassembler.push(0, stream)
  const report = await reassembler.report()
  if (!report.complete || !report.payloadVerified)
    throw new Error(`stream incomplete: ${JSON.stringify(report)}`)
  return sink.bytes()
}

/**
 * A real-binding wrapper that counts R2 reads (get/head) and forwards everything to the binding:
 * how the cache test proves repeat reads never reach R2.
 */
export function countingBucket(bucket: R2Bucket): { bucket: R2Bucket; reads: () => number } {
  let reads = 0
  const proxy = new Proxy(bucket, {
    get(target, property) {
      const value = Reflect.get(target, property, target)
      if (typeof value !== 'function') return value
      return (...args: unknown[]) => {
        if (property === 'get' || property === 'head') reads++
        return (value as (...a: unknown[]) => unknown).apply(target, args)
      }
    },
  })
  return { bucket: proxy, reads: () => reads }
}
