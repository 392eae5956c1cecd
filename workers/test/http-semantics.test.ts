import { beforeAll, describe, expect, it } from 'vitest'
import { publishWithDeltas } from './delta-helpers.ts'
import { bytesOf, call, publishSingle } from './publish-helpers.ts'

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
