import { env } from 'cloudflare:workers'
import { beforeAll, describe, expect, it } from 'vitest'
import { ArtifactName, Version } from '../../schemas/common.ts'
import { ProblemDetails } from '../../schemas/problem.ts'
import { ROUTES } from '../openapi/routes.ts'
import { OPERATOR_TOKEN } from './dashboard-helpers.ts'
import { deltaRefOf, publishWithDeltas } from './delta-helpers.ts'
import { auth, bytesOf, call, envelopeFor, publishSingle, startPublish, TOKEN } from './publish-helpers.ts'

/**
 * Hostile input against every endpoint: wrong or missing admin tokens (all bearer routes of the
 * OpenAPI registry, so routes added later are covered too), malformed and oversized bodies, bad
 * ranges, path tricks in names and versions, replayed and expired manifests. Every answer must be a
 * problem+json 4xx (never a 500 or a non-JSON error) and nothing may be written under a bad key.
 */

async function expectProblem(response: Response, statuses: number[], context: string): Promise<void> {
  const text = await response.text()
  expect(statuses, `${context}: ${response.status} ${text.slice(0, 300)}`).toContain(response.status)
  expect(response.headers.get('content-type'), context).toBe('application/problem+json')
  const problem = ProblemDetails.parse(JSON.parse(text))
  expect(problem.status).toBe(response.status)
}

/** Concrete values for the registry's path parameters; unknown ones get a harmless token. */
const PARAM_VALUES: Record<string, string> = {
  name: 'authprobe',
  version: '1.0.0',
  from: '0.9.0',
  to: '1.0.0',
  uploadId: 'upload-1',
  part: '1',
  method: 'vcdiff',
}

function concretePath(path: string): string {
  return path.replace(/\{([A-Za-z0-9_]+)\}/g, (_, param: string) => PARAM_VALUES[param] ?? 'x1')
}

const BAD_AUTH: Array<[string, Record<string, string>]> = [
  ['no header', {}],
  ['wrong token', { authorization: 'Bearer not-the-token' }],
  ['token prefix', { authorization: `Bearer ${TOKEN.slice(0, -1)}` }],
  ['token with a suffix', { authorization: `Bearer ${TOKEN}x` }],
  ['other scheme', { authorization: `Basic ${btoa(`maintainer:${TOKEN}`)}` }],
  ['token without scheme', { authorization: TOKEN }],
  ['empty bearer', { authorization: 'Bearer ' }],
  ['two tokens', { authorization: `Bearer ${TOKEN}, Bearer ${TOKEN}` }],
  ['oversized token', { authorization: `Bearer ${'a'.repeat(8192)}` }],
  ['token in the query instead', {}],
]

describe('admin routes refuse missing and wrong tokens', () => {
  const adminRoutes = ROUTES.filter((r) => r.auth === 'bearer')

  it("the registry marks every state-changing route (except the agents' own) as bearer", () => {
    const agentWrites = new Set([
      // Written by devices, which hold no token: bounded, validated and rate-limited instead.
      'POST /v1/plan',
      'POST /v1/telemetry',
      'POST /v1/rollouts/{name}/{channel}/outcomes',
      // A device trades a one-time enrollment code for its credential: the code is the secret,
      // checked, counted and rate-limited per code (workers/test/devices.test.ts).
      'POST /v1/devices/enroll',
      // The operator's form login checks OPERATOR_TOKEN in its body; both are same-origin only (CSRF),
      // see workers/test/hardening-ops.test.ts.
      'POST /dashboard/login',
      'POST /dashboard/logout',
    ])
    const unguarded = ROUTES.filter(
      (r) => r.method !== 'get' && r.method !== 'head' && r.auth !== 'bearer',
    ).map((r) => `${r.method.toUpperCase()} ${r.path}`)
    expect(unguarded.filter((op) => !agentWrites.has(op))).toEqual([])
    expect(adminRoutes.length).toBeGreaterThanOrEqual(9)
  })

  it('answers 401 problem+json with a Bearer challenge for every admin route and bad credential', async () => {
    for (const route of adminRoutes) {
      for (const [label, headers] of BAD_AUTH) {
        const query = label === 'token in the query instead' ? `?token=${TOKEN}&access_token=${TOKEN}` : ''
        const method = route.method.toUpperCase()
        const response = await call(`${concretePath(route.path)}${query}`, {
          method,
          headers: { ...headers, 'content-type': 'application/json', 'content-length': '2' },
          ...(method === 'GET' || method === 'HEAD' ? {} : { body: '{}' }),
        })
        const context = `${method} ${route.path} (${label})`
        expect(response.status, context).toBe(401)
        expect(response.headers.get('www-authenticate'), context).toContain('Bearer')
        if (method !== 'HEAD') await expectProblem(response, [401], context)
      }
    }
    // Nothing reached storage.
    expect((await env.ARTIFACTS.list({ prefix: 'pending/authprobe' })).objects).toEqual([])
  })

  it('takes the Bearer scheme in any case (RFC 9110), for maintainer and operator tokens', async () => {
    for (const scheme of ['bearer', 'BEARER', 'Bearer  ']) {
      // Past authentication, the empty manifest is what is refused.
      const publish = await call('/v1/publish/authprobe/1.0.0', {
        method: 'POST',
        headers: { authorization: `${scheme} ${TOKEN}`, 'content-type': 'application/json' },
        body: '{}',
      })
      expect(publish.status, scheme).toBe(400)
      const devices = await call('/v1/devices', { headers: { authorization: `${scheme} ${OPERATOR_TOKEN}` } })
      expect(devices.status, scheme).toBe(200)
    }
  })
})

describe('malformed and oversized bodies', () => {
  const jsonRoutes: Array<{ path: string; headers: Record<string, string>; max: number }> = [
    { path: '/v1/publish/jsonprobe/1.0.0', headers: auth, max: 64 * 1024 },
    { path: '/v1/plan', headers: {}, max: 4 * 1024 * 1024 },
    { path: '/v1/telemetry', headers: {}, max: 256 * 1024 },
  ]
  const malformed: Array<[string, string | Uint8Array]> = [
    ['empty', ''],
    ['truncated', '{"name":'],
    ['null', 'null'],
    ['array', '[]'],
    ['string', '"hello"'],
    ['number overflow', '{"name":1e400}'],
    ['prototype pollution', '{"__proto__":{"polluted":true},"constructor":{"prototype":{"x":1}}}'],
    ['deep nesting', `${'['.repeat(50_000)}${']'.repeat(50_000)}`],
    ['invalid UTF-8', new Uint8Array([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x3a, 0x31, 0x7d])],
    ['NUL bytes', '{"name":"a\u0000b"}'],
    ['BOM then JSON', '\ufeff{}'],
  ]

  it('answers 400 problem+json to malformed JSON on every JSON route', async () => {
    for (const route of jsonRoutes) {
      for (const [label, body] of malformed) {
        const response = await call(route.path, {
          method: 'POST',
          headers: { ...route.headers, 'content-type': 'application/json' },
          body,
        })
        // 413 where the route's cap is below the nesting test's 100 KB.
        await expectProblem(response, [400, 413, 422], `${route.path} (${label})`)
      }
      // A JSON body declared as something else is not parsed as JSON. The publish route (validated by
      // Hono, which reads JSON only under a JSON type) says so with 415, not by listing every field.
      const plain = await call(route.path, {
        method: 'POST',
        headers: { ...route.headers, 'content-type': 'text/plain' },
        body: '{}',
      })
      const publish = route.path.startsWith('/v1/publish/')
      await expectProblem(plain, publish ? [415] : [400, 415], `${route.path} (text/plain)`)
    }
    expect(Object.hasOwn(Object.prototype, 'polluted')).toBe(false)
  })

  it('answers 413 to oversized bodies, declared or streamed without a length', async () => {
    for (const route of jsonRoutes) {
      const big = new Uint8Array(route.max + 1024).fill(0x20)
      const declared = await call(route.path, {
        method: 'POST',
        headers: { ...route.headers, 'content-type': 'application/json' },
        body: big,
      })
      await expectProblem(declared, [413], `${route.path} (declared)`)
      const streamed = await call(route.path, {
        method: 'POST',
        headers: { ...route.headers, 'content-type': 'application/json' },
        body: new Blob([big]).stream(),
      })
      await expectProblem(streamed, [413], `${route.path} (streamed)`)
    }
    const complete = await call('/v1/publish/jsonprobe/1.0.0/uploads/u/complete', {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: new Uint8Array(1024 * 1024 + 10).fill(0x20),
    })
    await expectProblem(complete, [413], 'complete')
  })

  it('refuses uploads without, with bogus or with oversized Content-Length', async () => {
    const body = bytesOf(1000, 3)
    await startPublish(await envelopeFor('lenprobe', '1.0.0', body))
    const cases: Array<[string, Record<string, string>, number[]]> = [
      ['bogus', { 'content-length': 'abc' }, [400]],
      ['negative', { 'content-length': '-5' }, [400]],
      ['huge', { 'content-length': '99999999999999999999' }, [400, 413]],
      ['over the single-PUT cap', { 'content-length': String(200 * 1024 * 1024) }, [413]],
      ['wrong size', { 'content-length': '999' }, [422]],
    ]
    for (const [label, headers, statuses] of cases) {
      const response = await call('/v1/publish/lenprobe/1.0.0/blob', {
        method: 'PUT',
        headers: { ...auth, ...headers },
        body: new Blob([body]).stream(),
      })
      await expectProblem(response, statuses, `blob PUT (${label})`)
    }
    // A stream of unknown length (a Blob's stream would get a Content-Length from the runtime).
    const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>()
    const writer = writable.getWriter()
    void writer.write(body).then(() => writer.close())
    const missing = await call('/v1/publish/lenprobe/1.0.0/blob', {
      method: 'PUT',
      headers: auth,
      body: readable,
    })
    await expectProblem(missing, [411], 'blob PUT without Content-Length')
    expect(await env.ARTIFACTS.head('artifacts/lenprobe/1.0.0/blob')).toBeNull()
  })

  it('refuses a gzip telemetry flood of one client with 429 + Retry-After, and stays up', async () => {
    const statuses: number[] = []
    let retryAfter: string | null = null
    for (let seq = 0; seq < 45; seq++) {
      const response = await call('/v1/telemetry', {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-deltaport-region': 'flood' },
        body: JSON.stringify({
          clientId: 'flooding-client',
          batchSeq: seq,
          sentAt: new Date().toISOString(),
          events: [{ artifact: 'app', version: '1.0.0', at: new Date().toISOString() }],
        }),
      })
      statuses.push(response.status)
      if (response.status === 429) {
        retryAfter ??= response.headers.get('retry-after')
        await expectProblem(response, [429], `batch ${seq}`)
      } else await response.body?.cancel()
    }
    expect(statuses.filter((s) => s === 202).length).toBeGreaterThan(0)
    expect(statuses.filter((s) => s === 429).length).toBeGreaterThan(0)
    expect(Number(retryAfter)).toBeGreaterThan(0)
    expect(statuses.every((s) => s === 202 || s === 429)).toBe(true)
    // Another client in the same region is not starved by the flood.
    const other = await call('/v1/telemetry', {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-deltaport-region': 'flood' },
      body: JSON.stringify({
        clientId: 'quiet-client',
        batchSeq: 0,
        sentAt: new Date().toISOString(),
        events: [{ artifact: 'app', version: '1.0.0', at: new Date().toISOString() }],
      }),
    })
    expect(other.status).toBe(202)
  })
})

describe('bad ranges on every ranged route', () => {
  const body = bytesOf(5000, 77)
  let routes: Array<{ path: string; size: number }> = []

  beforeAll(async () => {
    await publishSingle('rangeprobe', '1.0.0', bytesOf(5000, 76), 1)
    const envelope = await publishWithDeltas('rangeprobe', '1.1.0', body, 2, [
      { from: '1.0.0', method: 'vcdiff', bytes: bytesOf(700, 78) },
    ])
    const delta = await call('/v1/deltas/rangeprobe/1.0.0/1.1.0', { method: 'HEAD' })
    routes = [
      { path: '/v1/artifacts/rangeprobe/1.1.0/blob', size: body.length },
      { path: '/v1/artifacts/rangeprobe/1.1.0/chunks', size: envelope.signed.chunkIndex?.size ?? 0 },
      { path: '/v1/deltas/rangeprobe/1.0.0/1.1.0', size: Number(delta.headers.get('content-length')) },
    ]
  })

  // What RFC 9110 lets a server do: ignore what it cannot parse or will not serve (multi-range),
  // 416 a well-formed range that selects nothing.
  const cases: Array<[string, (size: number) => string, 'full' | 416 | 'partial']> = [
    ['suffix zero', () => 'bytes=-0', 416],
    ['start at the end', (size) => `bytes=${size}-`, 416],
    ['start far past the end (16 digits)', () => 'bytes=9999999999999999-', 416],
    ['start beyond 2^53 (25 digits)', () => `bytes=${'9'.repeat(25)}-`, 416],
    ['end beyond 2^53 (20 digits)', () => 'bytes=0-99999999999999999999', 'partial'],
    ['suffix beyond 2^53', () => 'bytes=-99999999999999999999', 'partial'],
    ['unit in capitals', (size) => `BYTES=${size - 10}-`, 'partial'],
    ['leading zeros', (size) => `bytes=000000000000000000000${size - 10}-`, 'partial'],
    ['overlapping multi-range', () => 'bytes=0-99,50-149', 'full'],
    ['many ranges', () => `bytes=${Array.from({ length: 500 }, (_, i) => `${i}-${i}`).join(',')}`, 'full'],
    ['reversed', () => 'bytes=10-5', 'full'],
    ['non-numeric', () => 'bytes=a-b', 'full'],
    ['exponent', () => 'bytes=1e3-', 'full'],
    ['hex', () => 'bytes=0x10-0x20', 'full'],
    ['negative start', () => 'bytes=-5-10', 'full'],
    ['empty spec', () => 'bytes=-', 'full'],
    ['other unit', () => 'items=0-10', 'full'],
    ['full-width digits', () => 'bytes=０-９', 'full'],
    ['huge end', () => `bytes=0-${'9'.repeat(10_000)}`, 'partial'],
    ['suffix larger than the object', (size) => `bytes=-${size * 10}`, 'partial'],
    ['end clamped', (size) => `bytes=${size - 10}-${size * 10}`, 'partial'],
  ]

  it('answers each bad range with 416 problem+json, a full 200 or a consistent 206', async () => {
    for (const route of routes) {
      for (const [label, range, outcome] of cases) {
        const header = range(route.size)
        // A HEAD ignores Range (RFC 9110 §14.2): whatever the range, it is the whole object's HEAD.
        const head = await call(route.path, { method: 'HEAD', headers: { range: header } })
        expect(head.status, `HEAD ${route.path} ${label}`).toBe(200)
        expect(head.headers.get('content-length'), `HEAD ${route.path} ${label}`).toBe(String(route.size))
        expect(head.headers.get('content-range'), `HEAD ${route.path} ${label}`).toBeNull()
        await head.arrayBuffer()
        const response = await call(route.path, { headers: { range: header } })
        const context = `GET ${route.path} ${label}`
        if (outcome === 416) {
          expect(response.status, context).toBe(416)
          expect(response.headers.get('content-range'), context).toBe(`bytes */${route.size}`)
          await expectProblem(response, [416], context)
          continue
        }
        const bytes = (await response.arrayBuffer()).byteLength
        if (outcome === 'full') {
          expect(response.status, context).toBe(200)
          expect(bytes, context).toBe(route.size)
        } else {
          expect(response.status, context).toBe(206)
          const match = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(response.headers.get('content-range') ?? '')
          expect(match, context).not.toBeNull()
          const [start, end, size] = (match ?? []).slice(1).map(Number) as [number, number, number]
          expect(size).toBe(route.size)
          expect(end).toBe(route.size - 1)
          expect(Number(response.headers.get('content-length'))).toBe(end - start + 1)
          expect(bytes, context).toBe(end - start + 1)
        }
      }
    }
  })
})

describe('path tricks in names and versions', () => {
  const names = [
    '..',
    '.',
    '%2e%2e',
    '%2E%2E%2Fetc',
    '..%2F..%2Fpending',
    'a%2F..%2Fb',
    '%252e%252e',
    '%C0%AE%C0%AE',
    'a%00b',
    '%00',
    'a%5Cb',
    '@scope%2F..',
    '@%2F%2Fx',
    'UPPER',
    'a%20b',
    '%ff',
    'ä',
    'x'.repeat(4096),
    'a%2Fb%2Fc',
  ]
  const versions = [
    '..',
    '%2e%2e',
    '1.0.0%2F..',
    '1.0.0%00',
    'v1.0.0',
    '1.0.0+build',
    '01.0.0',
    '9'.repeat(300),
  ]

  it('never serves or stores anything for a name or version outside the grammar', async () => {
    await publishSingle('pathprobe', '1.0.0', bytesOf(100, 9), 1)
    const reads = (name: string, version: string) => [
      `/v1/artifacts/${name}`,
      `/v1/artifacts/${name}/${version}/manifest`,
      `/v1/artifacts/${name}/${version}/blob`,
      `/v1/artifacts/${name}/${version}/chunks`,
      `/v1/deltas/${name}/${version}/1.0.0`,
    ]
    for (const name of names) {
      for (const path of reads(name, '1.0.0')) {
        await expectProblem(await call(path), [400, 404], `GET ${path.slice(0, 120)}`)
      }
      const envelope = await envelopeFor('pathprobe', '2.0.0', bytesOf(10, 1), { serial: 9 })
      const publish = await call(`/v1/publish/${name}/2.0.0`, {
        method: 'POST',
        headers: { ...auth, 'content-type': 'application/json' },
        body: JSON.stringify(envelope),
      })
      await expectProblem(publish, [400, 404, 422], `POST publish ${name.slice(0, 60)}`)
    }
    for (const version of versions) {
      for (const path of reads('pathprobe', version).slice(1)) {
        await expectProblem(await call(path), [400, 404], `GET ${path.slice(0, 120)}`)
      }
    }
    // Every key in the bucket is made of grammar-valid names and versions.
    const listed = await env.ARTIFACTS.list({ limit: 1000 })
    for (const { key } of listed.objects) {
      const match = /^(?:artifacts|pending|deltas|locks\/deltas)\/((?:@[^/]+\/)?[^/@]+)\/(.+)$/.exec(key)
      expect(match, key).not.toBeNull()
      expect(ArtifactName.safeParse(match?.[1]).success, key).toBe(true)
      for (const segment of (match?.[2] ?? '').split('/')) {
        const plain = ['index.json', 'manifest.json', 'blob', 'chunks', 'vcdiff', 'approx', 'archive']
        expect(plain.includes(segment) || Version.safeParse(segment).success, key).toBe(true)
      }
    }
  })

  it('answers 404 problem+json for unknown routes and very long URLs, 405 with Allow for odd methods', async () => {
    for (const [method, path] of [
      ['GET', '/v2/artifacts/x'],
      ['GET', `/v1/${'a/'.repeat(2000)}`],
      ['GET', '/v1/artifacts/pathprobe/1.0.0/blob/extra'],
      ['GET', '/%2e%2e/%2e%2e/etc/passwd'],
    ] as const) {
      await expectProblem(await call(path, { method }), [404], `${method} ${path.slice(0, 60)}`)
    }
    for (const [method, path, allow] of [
      ['DELETE', '/v1/artifacts/pathprobe', 'GET, HEAD'],
      ['PATCH', '/v1/plan', 'POST'],
      ['GET', '/v1/plan', 'POST'],
      ['PUT', '/v1/artifacts/@scope%2Fpathprobe/1.0.0/blob', 'GET, HEAD'],
      ['POST', '/openapi.json', 'GET, HEAD'],
    ] as const) {
      const response = await call(path, { method })
      expect(response.headers.get('allow'), `${method} ${path}`).toBe(allow)
      await expectProblem(response, [405], `${method} ${path}`)
    }
  })
})

describe('multipart parameters', () => {
  it('refuses bad part numbers, upload ids and part lists, and foreign or unknown uploads', async () => {
    const body = bytesOf(2000, 5)
    await startPublish(await envelopeFor('mpprobe', '1.0.0', body))
    await startPublish(await envelopeFor('mpother', '1.0.0', body))
    const created = await call('/v1/publish/mpother/1.0.0/uploads', { method: 'POST', headers: auth })
    const { uploadId: foreign } = (await created.json()) as { uploadId: string }
    const base = '/v1/publish/mpprobe/1.0.0/uploads'
    const put = (path: string) =>
      call(path, { method: 'PUT', headers: { ...auth, 'content-length': String(body.length) }, body })
    // One spelling per number: hex, exponent, padding and leading zeros are not part 1.
    for (const part of ['0', '10001', 'abc', '-1', '1.5', '', '0x1', '1e0', '%201', '01']) {
      // An empty segment matches no route (404); the others fail validation (400).
      await expectProblem(await put(`${base}/u1/parts/${part}`), [400, 404], `part ${part}`)
    }
    await expectProblem(await put(`${base}/${'u'.repeat(1025)}/parts/1`), [400], 'long upload id')
    await expectProblem(await put(`${base}/${encodeURIComponent(foreign)}/parts/1`), [409], 'foreign upload')
    await expectProblem(await put(`${base}/not-an-upload/parts/1`), [409], 'unknown upload')
    // A well-formed id of an upload of another version. R2 answers completing it with a request error
    // (409 here); miniflare answers with its internal error 10001, which the edge, taking R2 at its
    // word, reports as a retryable 503. Either way a problem, and nothing is committed.
    const complete = (parts: unknown) =>
      call(`${base}/${encodeURIComponent(foreign)}/complete`, {
        method: 'POST',
        headers: { ...auth, 'content-type': 'application/json' },
        body: JSON.stringify({ parts }),
      })
    await expectProblem(await complete([]), [400], 'no parts')
    await expectProblem(await complete([{ partNumber: 0, etag: 'x' }]), [400], 'part 0')
    // A repeated or unordered list is refused before R2 sees it (miniflare would answer 10001: a 503).
    for (const numbers of [
      [1, 1],
      [2, 1],
    ]) {
      const parts = numbers.map((partNumber) => ({ partNumber, etag: 'x' }))
      await expectProblem(await complete(parts), [400], `parts ${numbers}`)
    }
    await expectProblem(await complete([{ partNumber: 1, etag: 'x' }]), [409, 503], 'foreign upload')
    expect(await env.ARTIFACTS.head('artifacts/mpprobe/1.0.0/manifest.json')).toBeNull()
    const abort = await call(`${base}/${encodeURIComponent(foreign)}`, { method: 'DELETE', headers: auth })
    await expectProblem(abort, [404, 503], 'abort a foreign upload')
    // The foreign upload and its staged manifest are untouched by all of that.
    expect(await env.ARTIFACTS.head('pending/mpother/1.0.0/manifest.json')).not.toBeNull()
  })
})

describe('manifest fields that end up in response headers', () => {
  it('refuses a media type that is not a plain type/subtype, so no blob read can fail on it', async () => {
    for (const [i, mediaType] of [
      'text/plain\r\nx-injected: 1',
      'text/plain\u0000',
      'not a media type',
      'application/octet-stream; name="a\nb"',
    ].entries()) {
      const envelope = await envelopeFor('mediaprobe', `1.0.${i}`, bytesOf(50, i), {
        serial: i + 1,
        mediaType,
      })
      const staged = await startPublish(envelope)
      await expectProblem(staged, [400, 422], JSON.stringify(mediaType))
    }
    for (const [i, mediaType] of [
      'application/gzip',
      'application/vnd.deltaport.test+json; charset=utf-8',
    ].entries()) {
      const body = bytesOf(50, 10 + i)
      await publishSingle(`mediaok${i}`, '1.0.0', body, 1)
      const envelope = await envelopeFor(`mediaok${i}x`, '1.0.0', body, { mediaType })
      expect((await startPublish(envelope)).status, mediaType).toBe(201)
    }
  })
})

describe('signed bodies are taken exactly as signed', () => {
  it('refuses fields the manifest schema does not know, by name, instead of dropping them from what is stored', async () => {
    const body = bytesOf(60, 3)
    const envelope = await envelopeFor('strictprobe', '1.0.0', body)
    const withExtras = {
      ...envelope,
      signed: {
        ...envelope.signed,
        note: 'x',
        deltas: [{ from: '0.9.0', method: 'vcdiff', size: 1, sha256: 'c'.repeat(64), level: 9 }],
      },
    }
    const refused = await call('/v1/publish/strictprobe/1.0.0', {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify(withExtras),
    })
    expect(refused.status).toBe(400)
    const problem = ProblemDetails.parse(await refused.json())
    const named = JSON.stringify(problem)
    expect(named).toContain('note')
    expect(named).toContain('level')
    expect(await env.ARTIFACTS.head('pending/strictprobe/1.0.0/manifest.json')).toBeNull()
    // The same manifest without them is staged, and stored as it was signed.
    expect((await startPublish(envelope)).status).toBe(201)
    const stored = await env.ARTIFACTS.get('pending/strictprobe/1.0.0/manifest.json')
    expect(await stored?.json()).toEqual(envelope)
  })
})

describe('replayed and expired manifests at publish time', () => {
  it('refuses a replayed envelope, an old envelope under a new path, a stale serial and an expired one', async () => {
    const first = await publishSingle('replay', '1.0.0', bytesOf(300, 1), 5)
    await expectProblem(await startPublish(first), [409], 'same envelope again')
    const moved = await call('/v1/publish/replay/1.0.1', {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify(first),
    })
    await expectProblem(moved, [422], 'old envelope, new version path')
    const stale = await envelopeFor('replay', '1.0.1', bytesOf(300, 2), { serial: 5 })
    await expectProblem(await startPublish(stale), [409], 'serial not above the latest')
    // A serial far beyond the latest (a stolen key running the serial out, so nothing could follow).
    for (const serial of [5 + 2 ** 32 + 1, Number.MAX_SAFE_INTEGER]) {
      const leap = await envelopeFor('replay', '1.0.1', bytesOf(300, 2), { serial })
      await expectProblem(await startPublish(leap), [422], `serial ${serial}`)
    }
    // Exactly 2^32 above is allowed (staged only; the index is unchanged until a commit).
    const longStep = await envelopeFor('replay', '0.9.0', bytesOf(300, 9), { serial: 5 + 2 ** 32 })
    expect((await startPublish(longStep)).status).toBe(201)
    const expired = await envelopeFor('replay', '1.0.2', bytesOf(300, 3), {
      serial: 6,
      createdAt: new Date(Date.now() - 3 * 86_400_000).toISOString(),
      expires: new Date(Date.now() - 86_400_000).toISOString(),
    })
    await expectProblem(await startPublish(expired), [422], 'expired manifest')
    // Larger than the operator's limits.maxPublishBytes (default 4 GiB): refused before any upload.
    const huge = await envelopeFor('replay', '1.0.2', bytesOf(300, 3), { serial: 6, size: 5 * 1024 ** 3 })
    await expectProblem(await startPublish(huge), [413], 'artifact over maxPublishBytes')
    expect(await env.ARTIFACTS.head('pending/replay/1.0.2/manifest.json')).toBeNull()
    const ref = await deltaRefOf({ from: '0.0.1', method: 'vcdiff', bytes: bytesOf(10, 4) })
    const unknownBase = await envelopeFor('replay', '1.0.3', bytesOf(300, 5), { serial: 7, deltas: [ref] })
    expect((await startPublish(unknownBase)).status).toBe(201)
    // A delta the manifest does not list is refused, listed or not by another version.
    const unlisted = await call('/v1/publish/replay/1.0.3/deltas/1.0.0/vcdiff', {
      method: 'PUT',
      headers: { ...auth, 'content-length': '10' },
      body: bytesOf(10, 4),
    })
    await expectProblem(unlisted, [404], 'unlisted delta')
  })
})
