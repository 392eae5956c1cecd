import { env } from 'cloudflare:workers'
import { describe, expect, it } from 'vitest'
import { PROBLEM_CONTENT_TYPE, ProblemDetails } from '../../schemas/problem.ts'
import { failedKey } from '../publish/lazy-delta.ts'
import { keys } from '../storage/keys.ts'
import { callApp } from './delta-helpers.ts'
import { FaultyR2 } from './faulty-r2.ts'
import { auth, bytesOf, call, envelopeFor, publishSingle, startPublish } from './publish-helpers.ts'

async function problemOf(response: Response, status: number): Promise<ProblemDetails> {
  expect(response.status).toBe(status)
  expect(response.headers.get('content-type')).toBe(PROBLEM_CONTENT_TYPE)
  return ProblemDetails.parse(await response.json())
}

async function gzip(text: string): Promise<Uint8Array> {
  const stream = new Blob([text]).stream().pipeThrough(new CompressionStream('gzip'))
  return new Uint8Array(await new Response(stream).arrayBuffer())
}

describe('lazy delta with a method that cannot encode the pair', () => {
  it('answers 422 problem+json and remembers the failure instead of redoing the work', async () => {
    const v1 = bytesOf(20_000, 51)
    const v2 = v1.slice()
    v2.set(bytesOf(500, 52), 5_000)
    await publishSingle('lazyarch', '1.0.0', v1, 1)
    await publishSingle('lazyarch', '1.1.0', v2, 2)
    const url = '/v1/deltas/lazyarch/1.0.0/1.1.0?method=archive'

    const first = await problemOf(await call(url), 422)
    expect(first.detail).toContain('archive')
    expect(await env.ARTIFACTS.head(failedKey('lazyarch', '1.0.0', '1.1.0', 'archive'))).not.toBeNull()
    expect(await env.ARTIFACTS.head(keys.delta('lazyarch', '1.0.0', '1.1.0', 'archive'))).toBeNull()

    // Proof the second request does not read the blobs and run the codec again: with the source blob
    // gone, a regeneration would fail differently (404 "no stored full artifact").
    await env.ARTIFACTS.delete(keys.blob('lazyarch', '1.0.0'))
    const again = await problemOf(await call(url), 422)
    expect(again.detail).toBe(first.detail)
    const head = await call(url, { method: 'HEAD' })
    expect(head.status).toBe(422)
    // Other methods of the same pair are not affected by the marker.
    expect(await env.ARTIFACTS.head(failedKey('lazyarch', '1.0.0', '1.1.0', 'vcdiff'))).toBeNull()
  })
})

describe('HEAD on stored objects', () => {
  it('answers like GET: 404 when the object is gone, the same headers when it is there', async () => {
    const body = bytesOf(3_000, 53)
    await publishSingle('headprobe', '1.0.0', body)
    const blob = '/v1/artifacts/headprobe/1.0.0/blob'

    const get = await call(blob)
    await get.arrayBuffer()
    const head = await call(blob, { method: 'HEAD' })
    expect(head.status).toBe(200)
    for (const h of ['content-length', 'etag', 'content-type', 'accept-ranges', 'cache-control'])
      expect(head.headers.get(h), h).toBe(get.headers.get(h))
    // Range is for GET only (RFC 9110 §14.2): a HEAD with one is answered as the HEAD without it.
    const ranged = await call(blob, { method: 'HEAD', headers: { range: 'bytes=0-9' } })
    expect(ranged.status).toBe(200)
    expect(ranged.headers.get('content-length')).toBe('3000')

    // The manifest (and with it the size) outlives the blob: HEAD must not promise bytes GET cannot give.
    // (Another version, never read, so the edge cache holds nothing of it.)
    await publishSingle('headprobe', '1.1.0', bytesOf(3_000, 58), 2)
    await env.ARTIFACTS.delete(keys.blob('headprobe', '1.1.0'))
    const gone = '/v1/artifacts/headprobe/1.1.0/blob'
    expect((await call(gone, { method: 'HEAD' })).status).toBe(404)
    expect((await call(gone, { method: 'HEAD', headers: { range: 'bytes=0-9' } })).status).toBe(404)
    const problem = await problemOf(await call(gone), 404)
    expect(problem.detail).toContain('no longer stored')
  })
})

describe('channel names that are Object.prototype members', () => {
  it('POST /v1/plan with target "constructor" is an unknown channel, not a function', async () => {
    await publishSingle('protoplan', '1.0.0', bytesOf(500, 54))
    const plan = (target: string) =>
      call('/v1/plan', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          name: 'protoplan',
          installed: null,
          target,
          capabilities: { methods: ['vcdiff'], chunkSync: false },
        }),
      })
    const problem = await problemOf(await plan('constructor'), 404)
    expect(problem.detail).toBe('protoplan has no version or channel constructor')
    expect((await plan('stable')).status).toBe(200)
  })
})

describe('aborting a multipart upload', () => {
  const tokenFor = (r2UploadId: string) => `${'0'.repeat(32)}.${r2UploadId}`

  it('an upload R2 does not know is 404, a real upload aborts (204)', async () => {
    await startPublish(await envelopeFor('abortprobe', '1.0.0', bytesOf(100, 55)))
    const unknown = await call(`/v1/publish/abortprobe/1.0.0/uploads/${tokenFor('no-such-upload')}`, {
      method: 'DELETE',
      headers: auth,
    })
    const problem = await problemOf(unknown, 404)
    expect(problem.detail).toContain('no such upload')
    expect(unknown.headers.get('retry-after')).toBeNull()

    const started = await call('/v1/publish/abortprobe/1.0.0/uploads', { method: 'POST', headers: auth })
    expect(started.status).toBe(201)
    const { uploadId } = (await started.json()) as { uploadId: string }
    const aborted = await call(`/v1/publish/abortprobe/1.0.0/uploads/${encodeURIComponent(uploadId)}`, {
      method: 'DELETE',
      headers: auth,
    })
    expect(aborted.status).toBe(204)
  })

  it('a storage fault while aborting a real upload stays 503 + Retry-After, not 404', async () => {
    await startPublish(await envelopeFor('abortfault', '1.0.0', bytesOf(100, 56)))
    const started = await call('/v1/publish/abortfault/1.0.0/uploads', { method: 'POST', headers: auth })
    const { uploadId } = (await started.json()) as { uploadId: string }
    const faulty = new FaultyR2(env.ARTIFACTS, { failNth: { abortMultipartUpload: [1] } })
    const path = `/v1/publish/abortfault/1.0.0/uploads/${encodeURIComponent(uploadId)}`
    const { response } = await callApp(
      path,
      { method: 'DELETE', headers: auth },
      { ...env, ARTIFACTS: faulty },
    )
    expect(response.status).toBe(503)
    expect(response.headers.get('retry-after')).not.toBeNull()
    // The retry succeeds, and the pending manifest went with the upload.
    expect((await call(path, { method: 'DELETE', headers: auth })).status).toBe(204)
    expect(await env.ARTIFACTS.head(keys.pendingManifest('abortfault', '1.0.0'))).toBeNull()
  })
})

describe('problem titles and body encodings', () => {
  it('a cross-origin dashboard login is a 403 with a title and a detail', async () => {
    const response = await call('/dashboard/login', {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', origin: 'https://evil.example' },
      body: new URLSearchParams({ token: 'whatever' }).toString(),
      redirect: 'manual',
    })
    const problem = await problemOf(response, 403)
    expect(problem.title).not.toBe('forbidden')
    expect(problem.title.length).toBeGreaterThan(10)
    expect(problem.detail).toMatch(/cross-origin/)
  })

  it('POST /v1/plan takes gzip like telemetry and refuses other encodings with 415', async () => {
    await publishSingle('gzplan', '1.0.0', bytesOf(500, 57))
    const request = JSON.stringify({
      name: 'gzplan',
      installed: null,
      target: 'stable',
      capabilities: { methods: ['vcdiff'], chunkSync: false },
    })
    const gz = await call('/v1/plan', {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' },
      body: await gzip(request),
    })
    expect(gz.status).toBe(200)
    expect(((await gz.json()) as { strategy: string }).strategy).toBe('full')
    const brotli = await call('/v1/plan', {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'content-encoding': 'br' },
      body: request,
    })
    await problemOf(brotli, 415)
    const notGzip = await call('/v1/plan', {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' },
      body: request,
    })
    await problemOf(notGzip, 400)
  })
})
