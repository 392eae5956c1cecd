import { createExecutionContext, waitOnExecutionContext } from 'cloudflare:test'
import { env } from 'cloudflare:workers'
import { Hono } from 'hono'
import { beforeAll, describe, expect, it } from 'vitest'
import type { AppEnv } from '../app-env.ts'
import { getRuntimeConfig } from '../config/runtime-config.ts'
import { CACHE_STATUS_HEADER, serveImmutable } from '../http/edge-cache.ts'
import { generateLazyDelta } from '../publish/lazy-delta.ts'
import { deltaEtag, deltaTag } from '../routes/deltas.ts'
import { publishWithDeltas } from './delta-helpers.ts'
import {
  auth,
  bytesOf,
  call,
  envelopeFor,
  expectProblem,
  publishSingle,
  startPublish,
} from './publish-helpers.ts'

/**
 * HTTP semantics of the stored-object routes (blob, chunk index, delta stream) that real clients and
 * intermediaries rely on beyond what ranges.test.ts covers: Range on HEAD (RFC 9110 §14.2) and
 * `no-transform` (RFC 9111 §5.2.2.6) on the immutable answers.
 */
const body = bytesOf(6000, 91)
let routes: Array<{ label: string; path: string; size: number }> = []

beforeAll(async () => {
  await publishSingle('semantics', '1.0.0', bytesOf(6000, 90), 1)
  const envelope = await publishWithDeltas('semantics', '1.1.0', body, 2, [
    { from: '1.0.0', method: 'vcdiff', bytes: bytesOf(900, 92) },
  ])
  const delta = await call('/v1/deltas/semantics/1.0.0/1.1.0')
  const deltaSize = (await delta.arrayBuffer()).byteLength
  routes = [
    { label: 'blob', path: '/v1/artifacts/semantics/1.1.0/blob', size: body.length },
    {
      label: 'chunks',
      path: '/v1/artifacts/semantics/1.1.0/chunks',
      size: envelope.signed.chunkIndex?.size ?? 0,
    },
    { label: 'delta', path: '/v1/deltas/semantics/1.0.0/1.1.0', size: deltaSize },
  ]
})

/** The headers a HEAD must share with the GET it stands for. */
const REPRESENTATION_HEADERS = ['content-length', 'etag', 'content-type', 'accept-ranges', 'cache-control']

describe('HEAD ignores Range (RFC 9110 §14.2: range handling is defined for GET only)', () => {
  it('answers a HEAD with any Range as the GET without one: 200, the full length, no Content-Range', async () => {
    for (const route of routes) {
      const whole = await call(route.path)
      await whole.arrayBuffer()
      for (const range of [
        'bytes=0-9',
        'bytes=-10',
        'bytes=10-',
        `bytes=${route.size}-`,
        'bytes=-0',
        `bytes=${'9'.repeat(25)}-`,
      ]) {
        for (const ifRange of [undefined, '"not-this-one"']) {
          const headers: Record<string, string> = { range, ...(ifRange ? { 'if-range': ifRange } : {}) }
          const head = await call(route.path, { method: 'HEAD', headers })
          const context = `HEAD ${route.label} ${range} if-range=${ifRange}`
          expect(head.status, context).toBe(200)
          expect(head.headers.get('content-range'), context).toBeNull()
          for (const name of REPRESENTATION_HEADERS)
            expect(head.headers.get(name), `${context} ${name}`).toBe(whole.headers.get(name))
          expect(head.headers.get('content-length'), context).toBe(String(route.size))
          expect((await head.arrayBuffer()).byteLength, context).toBe(0)
        }
      }
      // GET keeps its range handling.
      const ranged = await call(route.path, { headers: { range: 'bytes=0-9' } })
      expect(ranged.status, route.label).toBe(206)
      expect((await ranged.arrayBuffer()).byteLength).toBe(10)
      const refused = await call(route.path, { headers: { range: `bytes=${route.size}-` } })
      expect(refused.status, route.label).toBe(416)
      await refused.arrayBuffer()
    }
  })

  it('answers a HEAD of an empty artifact with a Range as 200 with Content-Length 0, not 416', async () => {
    await publishSingle('semantics-empty', '1.0.0', new Uint8Array(0))
    for (const range of ['bytes=0-', 'bytes=0-0', 'bytes=-0', 'bytes=-5']) {
      const head = await call('/v1/artifacts/semantics-empty/1.0.0/blob', {
        method: 'HEAD',
        headers: { range },
      })
      expect(head.status, range).toBe(200)
      expect(head.headers.get('content-length'), range).toBe('0')
      expect(head.headers.get('content-range'), range).toBeNull()
      await head.arrayBuffer()
    }
  })

  it('still answers a HEAD whose object is gone with 404, whatever its Range', async () => {
    // Evaluated before Range: HEAD must not promise bytes a GET cannot give.
    for (const route of routes) {
      const missing = route.path.replace('1.1.0', '9.9.9')
      const head = await call(missing, { method: 'HEAD', headers: { range: 'bytes=0-9' } })
      expect(head.status, route.label).toBe(404)
      await head.arrayBuffer()
    }
  })
})

describe('immutable objects forbid transformation (RFC 9111 §5.2.2.6 no-transform)', () => {
  it('says no-transform on every answer: 200 and 206, from the origin and the edge cache, 304 and HEAD', async () => {
    // A media type Cloudflare compresses on the way out unless told not to.
    const text = new TextEncoder().encode('{"a":1}'.repeat(500))
    await publishSingle('semantics-json', '1.0.0', text, 1, { mediaType: 'application/json' })
    const json = { label: 'blob labelled application/json', path: '/v1/artifacts/semantics-json/1.0.0/blob' }
    for (const route of [json, ...routes]) {
      const answers: Array<[string, RequestInit]> = [
        ['GET (miss)', {}],
        ['GET (hit)', {}],
        ['range (miss)', { headers: { range: 'bytes=5-20' } }],
        ['range (hit)', { headers: { range: 'bytes=5-20' } }],
        ['HEAD', { method: 'HEAD' }],
      ]
      let etag = ''
      for (const [what, init] of answers) {
        const response = await call(route.path, init)
        await response.arrayBuffer()
        const context = `${route.label} ${what} ${response.status}`
        expect(response.status, context).toBeLessThan(300)
        expect(response.headers.get('cache-control'), context).toBe(
          'public, max-age=31536000, immutable, no-transform',
        )
        etag = response.headers.get('etag') ?? ''
      }
      for (const range of [undefined, 'bytes=5-20']) {
        const revalidated = await call(route.path, {
          headers: { 'if-none-match': etag, ...(range ? { range } : {}) },
        })
        expect(revalidated.status, route.label).toBe(304)
        expect(revalidated.headers.get('cache-control'), route.label).toContain('no-transform')
      }
    }
  })
})

describe('content codings of request bodies (RFC 9110 §8.4, §15.5.16)', () => {
  it('refuses a coded body on routes that take it as sent: 415 with Accept-Encoding: identity', async () => {
    const bytes = bytesOf(300, 93)
    const envelope = await envelopeFor('semantics-coded', '1.0.0', bytes)
    const json = JSON.stringify(envelope)
    const uploads: Array<[string, string, string | Uint8Array]> = [
      ['POST', '/v1/publish/semantics-coded/1.0.0', json],
      ['PUT', '/v1/publish/semantics-coded/1.0.0/blob', bytes],
      ['PUT', '/v1/publish/semantics-coded/1.0.0/uploads/x/parts/1', bytes],
      ['POST', '/v1/publish/semantics-coded/1.0.0/uploads/x/complete', '{"parts":[]}'],
      ['PUT', '/v1/publish/semantics-coded/1.0.0/deltas/0.9.0/vcdiff', bytes],
      ['PUT', '/v1/publish/semantics-coded/1.0.0/chunks', bytes],
      ['PUT', '/v1/publish/semantics-coded/1.0.0/manifest', json],
    ]
    for (const coding of ['gzip', 'br', 'GZIP ', 'x-whatever']) {
      for (const [method, path, body] of uploads) {
        const response = await call(path, {
          method,
          headers: {
            ...auth,
            'content-type': typeof body === 'string' ? 'application/json' : 'application/octet-stream',
            'content-length': String(
              typeof body === 'string' ? new TextEncoder().encode(body).length : body.length,
            ),
            'content-encoding': coding,
          },
          body,
        })
        const context = `${method} ${path} ${coding}`
        await expectProblem(response, 415, 'unsupported-media-type')
        expect(response.headers.get('accept-encoding'), context).toBe('identity')
      }
    }
  })

  it('stores nothing from a blob labelled gzip, and takes the same bytes sent as identity', async () => {
    const bytes = bytesOf(400, 94)
    const envelope = await envelopeFor('semantics-coded-blob', '1.0.0', bytes)
    expect((await startPublish(envelope)).status).toBe(201)
    const put = (coding?: string) =>
      call('/v1/publish/semantics-coded-blob/1.0.0/blob', {
        method: 'PUT',
        headers: {
          ...auth,
          'content-length': String(bytes.length),
          ...(coding ? { 'content-encoding': coding } : {}),
        },
        body: bytes,
      })
    await expectProblem(await put('gzip'), 415, 'unsupported-media-type')
    const unpublished = await call('/v1/artifacts/semantics-coded-blob/1.0.0/blob')
    expect(unpublished.status).toBe(404)
    await unpublished.arrayBuffer()
    const stored = await put('identity')
    expect(stored.status).toBe(201)
    await stored.arrayBuffer()
  })

  it('says which codings a gzip-reading route accepts when it refuses one', async () => {
    const response = await call('/v1/plan', {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'content-encoding': 'br' },
      body: '{}',
    })
    await expectProblem(response, 415, 'unsupported-media-type')
    expect(response.headers.get('accept-encoding')).toBe('gzip')
  })
})

describe('validators on cacheable answers', () => {
  it("serves an artifact's index with an ETag of its bytes: 304 while unchanged, 200 once a publish changes it", async () => {
    await publishSingle('semantics-index', '1.0.0', bytesOf(100, 97), 1)
    const path = '/v1/artifacts/semantics-index'
    const first = await call(path)
    const text = await first.text()
    const etag = first.headers.get('etag') ?? ''
    expect(etag).toMatch(/^"[0-9a-f]{32}"$/)
    expect(first.headers.get('cache-control')).toBe('public, max-age=10')
    expect(first.headers.get('content-type')).toBe('application/json')
    for (const ifNoneMatch of [etag, `W/${etag}`, '*']) {
      const revalidated = await call(path, { headers: { 'if-none-match': ifNoneMatch } })
      expect(revalidated.status, ifNoneMatch).toBe(304)
      expect(revalidated.headers.get('etag')).toBe(etag)
      expect(revalidated.headers.get('cache-control')).toBe('public, max-age=10')
      expect((await revalidated.arrayBuffer()).byteLength).toBe(0)
    }
    await publishSingle('semantics-index', '1.1.0', bytesOf(100, 98), 2)
    const changed = await call(path, { headers: { 'if-none-match': etag } })
    expect(changed.status).toBe(200)
    expect(changed.headers.get('etag')).not.toBe(etag)
    expect(await changed.text()).not.toBe(text)
  })

  it('serves /openapi.json with a strong ETag and answers a matching If-None-Match with an empty 304', async () => {
    const first = await call('/openapi.json')
    const text = await first.text()
    const etag = first.headers.get('etag') ?? ''
    expect(etag).toMatch(/^"[0-9a-f]{32}"$/)
    expect(first.headers.get('cache-control')).toBe('public, max-age=300')
    const again = await call('/openapi.json')
    expect(again.headers.get('etag')).toBe(etag)
    expect(await again.text()).toBe(text)
    for (const ifNoneMatch of [etag, `W/${etag}`, `"other", ${etag}`, '*']) {
      const revalidated = await call('/openapi.json', { headers: { 'if-none-match': ifNoneMatch } })
      expect(revalidated.status, ifNoneMatch).toBe(304)
      expect(revalidated.headers.get('etag')).toBe(etag)
      expect(revalidated.headers.get('cache-control')).toBe('public, max-age=300')
      expect((await revalidated.arrayBuffer()).byteLength).toBe(0)
    }
    const changed = await call('/openapi.json', { headers: { 'if-none-match': '"other"' } })
    expect(changed.status).toBe(200)
    expect(await changed.text()).toBe(text)
    const head = await call('/openapi.json', { method: 'HEAD' })
    expect(head.status).toBe(200)
    expect(head.headers.get('etag')).toBe(etag)
    await head.arrayBuffer()
  })
})

describe('a lazily made delta under its bare URL is not immutable', () => {
  /** Makes (or makes again) the pair's lazy delta with `fecM` parity blocks, as a remake after a prune would. */
  async function remake(name: string, fecM: number) {
    const config = await getRuntimeConfig(env)
    return generateLazyDelta(
      env.ARTIFACTS,
      { name, from: '1.0.0', to: '1.1.0', method: 'vcdiff' },
      { ...config, stream: { ...config.stream, fecM } },
    )
  }

  it('answers the bare URL for the stream stored now, never ranges of a stream made before', async () => {
    const v1 = bytesOf(60_000, 95)
    const v2 = v1.slice()
    v2.set(bytesOf(2000, 96), 30_000)
    await publishSingle('semantics-lazy', '1.0.0', v1, 1)
    await publishSingle('semantics-lazy', '1.1.0', v2, 2)
    const bare = '/v1/deltas/semantics-lazy/1.0.0/1.1.0'
    const before = await remake('semantics-lazy', 2)
    for (let i = 0; i < 2; i++) {
      const ranged = await call(bare, { headers: { range: 'bytes=0-99' } })
      expect(ranged.status).toBe(206)
      expect(ranged.headers.get('etag')).toBe(deltaEtag(before.framing))
      // Revalidated on every use: the bytes under this URL change when the delta is made again.
      expect(ranged.headers.get('cache-control')).toBe('public, no-cache, no-transform')
      await ranged.arrayBuffer()
    }
    // Pruned and made again under another `stream` config: other bytes under the same bare URL.
    const after = await remake('semantics-lazy', 4)
    expect(deltaTag(after.framing)).not.toBe(deltaTag(before.framing))
    for (const range of ['bytes=0-99', 'bytes=100-199']) {
      const ranged = await call(bare, { headers: { range } })
      expect(ranged.status, range).toBe(206)
      expect(ranged.headers.get('etag'), range).toBe(deltaEtag(after.framing))
      await ranged.arrayBuffer()
    }
    // The URL a plan hands out names the stream, so it stays immutable and edge-cached.
    const named = `${bare}?method=vcdiff&v=${deltaTag(after.framing)}`
    for (const cache of ['miss', 'hit']) {
      const ranged = await call(named, { headers: { range: 'bytes=0-99' } })
      expect(ranged.status).toBe(206)
      expect(ranged.headers.get('cache-control')).toBe('public, max-age=31536000, immutable, no-transform')
      expect(ranged.headers.get('x-deltaport-cache')).toBe(cache)
      await ranged.arrayBuffer()
    }
  })

  it('keeps a delta the manifest lists immutable under its bare URL: it is never made again', async () => {
    const response = await call('/v1/deltas/semantics/1.0.0/1.1.0', { headers: { range: 'bytes=0-9' } })
    expect(response.headers.get('x-deltaport-generated')).toBe('publisher')
    expect(response.headers.get('cache-control')).toBe('public, max-age=31536000, immutable, no-transform')
    await response.arrayBuffer()
  })
})

describe('the edge cache keeps only answers their origin calls immutable', () => {
  it('passes on an answer without `immutable` every time, and stores one with it', async () => {
    let served = 0
    const probe = new Hono<AppEnv>().get('/:cacheControl', (c) =>
      serveImmutable(c, async () => {
        served++
        return new Response('0123456789', {
          headers: { 'cache-control': decodeURIComponent(c.req.param('cacheControl')), etag: '"probe"' },
        })
      }),
    )
    const ask = async (cacheControl: string) => {
      const ctx = createExecutionContext()
      const url = `https://edge.test/${encodeURIComponent(cacheControl)}`
      const response = await probe.fetch(new Request(url), env, ctx)
      expect(await response.text()).toBe('0123456789')
      await waitOnExecutionContext(ctx)
      return response.headers.get(CACHE_STATUS_HEADER)
    }
    for (const cacheControl of ['public, max-age=600', 'public, max-age=600, immutable-ish']) {
      served = 0
      expect(await ask(cacheControl), cacheControl).toBeNull()
      expect(await ask(cacheControl), cacheControl).toBeNull()
      expect(served, cacheControl).toBe(2)
    }
    served = 0
    const immutable = 'public, max-age=600, immutable'
    expect(await ask(immutable)).toBe('miss')
    expect(await ask(immutable)).toBe('hit')
    expect(served).toBe(1)
  })
})
