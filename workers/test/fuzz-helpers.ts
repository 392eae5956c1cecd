import { exports } from 'cloudflare:workers'
import fc from 'fast-check'
import { expect } from 'vitest'
import { PROBLEM_CONTENT_TYPE, ProblemDetails } from '../../schemas/problem.ts'
import { app } from '../app.ts'
import { OPERATOR_TOKEN } from './dashboard-helpers.ts'
import { call, TOKEN } from './publish-helpers.ts'

/**
 * Property-based fuzzing of the edge's HTTP surface (workers/test/fuzz-routes.test.ts and
 * fuzz-enroll.test.ts). The operations come from GET /openapi.json, so a route added to the registry
 * is fuzzed without touching the tests. Generated values are small descriptions of a request (sizes
 * and kinds, not the bytes), so a failing one prints readably with its seed.
 */

type Json = { [key: string]: unknown }

export interface Operation {
  method: string
  /** OpenAPI form: `/v1/artifacts/{name}`. */
  path: string
  operationId: string
  op: Json
  /** The operations of the same path by method (the one a request with another method reaches). */
  siblings: Map<string, Json>
}

const METHODS = ['get', 'head', 'post', 'put', 'delete'] as const

export async function fetchDocument(): Promise<Json> {
  const response = await call('/openapi.json')
  expect(response.status).toBe(200)
  return (await response.json()) as Json
}

export function operationsOf(doc: Json): Operation[] {
  const out: Operation[] = []
  for (const [path, item] of Object.entries(doc.paths as Record<string, Json>)) {
    const siblings = new Map<string, Json>()
    for (const method of METHODS) {
      const op = item[method] as Json | undefined
      if (!op) continue
      siblings.set(method.toUpperCase(), op)
      out.push({ method: method.toUpperCase(), path, operationId: String(op.operationId), op, siblings })
    }
  }
  return out
}

/** `METHOD /path/{param}` of every route the Hono app serves, a HEAD counted as covered by its GET. */
export function undocumentedAppRoutes(doc: Json): string[] {
  const documented = new Set(operationsOf(doc).map((o) => `${o.method} ${o.path}`))
  return [
    ...new Set(
      app.routes
        .filter((r) => !(r.method === 'ALL' && r.path.endsWith('*')))
        .map((r) => `${r.method} ${r.path.replace(/:([A-Za-z0-9_]+)/g, '{$1}')}`),
    ),
  ]
    .filter((op) => !documented.has(op))
    .filter((op) => !(op.startsWith('HEAD ') && documented.has(op.replace(/^HEAD /, 'GET '))))
    .sort()
}

// ---------------------------------------------------------------------------------------------------
// Request descriptions

/** A path parameter: the seeded valid value, or one of the hostile kinds. */
export type ParamValue =
  | { kind: 'valid'; pick: number }
  | { kind: 'text'; value: string }
  | { kind: 'raw'; value: string }
  | { kind: 'long'; length: number }

export type BodySpec =
  | { kind: 'none' }
  | { kind: 'json'; value: unknown }
  | { kind: 'schema'; value: unknown }
  | { kind: 'deep'; depth: number; open: '[' | '{"a":' }
  | { kind: 'hugeString'; length: number }
  | { kind: 'bigNumber'; literal: string }
  | { kind: 'text'; value: string }
  | { kind: 'bytes'; length: number; seed: number }
  | { kind: 'gzip'; inner: 'schema' | 'garbage' | 'bomb' }

export interface RequestSpec {
  /** `same`: the documented method; else one of METHOD_POOL (wrong methods, 405). */
  method: string
  params: Record<string, ParamValue>
  query: Array<[string, string]> | { raw: string }
  headers: Record<string, string>
  auth: 'none' | 'right' | 'wrong' | 'garbage' | 'device'
  body: BodySpec
  /** Content-Length sent: the body's, none, or a wrong one. */
  length: 'actual' | 'shorter' | 'longer' | 'garbage'
  /** The body as a stream the runtime knows no length of, rather than bytes. */
  stream: boolean
}

const HOSTILE_TEXT = [
  '',
  ' ',
  '..',
  '.',
  '../../etc/passwd',
  '@scope/name',
  '@scope',
  '@',
  'a/b',
  '0',
  '-1',
  '1e309',
  '00000000000000000001',
  '18446744073709551616',
  'NaN',
  'null',
  '__proto__',
  'constructor',
  '1.0.0-',
  '1.0.0+build.1',
  '01.0.0',
  'v1.0.0',
  '1.0.0\u0000',
  '\u202e1.0.0',
  '\ud83d\ude00',
  '\ufffd',
  'SELECT * FROM x',
  '<script>',
  'a'.repeat(129),
  `dpe1_${'A'.repeat(32)}`,
  `c${'A'.repeat(12)}`,
  `d${'A'.repeat(20)}`,
]
/** Put in the URL as they are: malformed percent-encoding and encoded separators. */
const RAW_SEGMENTS = [
  '%',
  '%zz',
  '%C0%AF',
  '%ED%A0%80',
  '%00',
  '%2F',
  '%2e%2e',
  '%252F',
  '%FF%FE',
  'a%2Fb',
  '%40scope%2F',
]

const paramValue: fc.Arbitrary<ParamValue> = fc.oneof(
  { weight: 4, arbitrary: fc.nat(7).map((pick) => ({ kind: 'valid' as const, pick })) },
  {
    weight: 3,
    arbitrary: fc
      .oneof(fc.constantFrom(...HOSTILE_TEXT), fc.string({ maxLength: 40, unit: 'binary' }))
      .map((value) => ({ kind: 'text' as const, value })),
  },
  {
    weight: 2,
    arbitrary: fc.constantFrom(...RAW_SEGMENTS).map((value) => ({ kind: 'raw' as const, value })),
  },
  {
    weight: 1,
    arbitrary: fc.integer({ min: 200, max: 9000 }).map((length) => ({ kind: 'long' as const, length })),
  },
)

const HEADER_VALUES: Record<string, string[]> = {
  range: [
    'bytes=0-0',
    'bytes=0-',
    'bytes=-1',
    'bytes=5-2',
    'bytes=0-99999999999999999999',
    'bytes=-0',
    'bytes=0-1,2-3',
    'bytes=',
    'bytes=a-b',
    'items=0-1',
    'bytes=18446744073709551615-',
    'bytes= 0 - 1',
    '',
  ],
  'if-none-match': ['*', '"x"', 'W/"x"', '"', 'garbage', ',,,', `${'"a",'.repeat(500)}"b"`],
  'if-match': ['*', '"x"', 'W/"x"', '"', 'garbage'],
  'if-range': ['"x"', 'W/"x"', 'Thu, 01 Jan 1970 00:00:00 GMT', 'garbage'],
  'content-type': [
    'application/json',
    'application/json; charset=utf-16',
    'application/problem+json',
    'text/plain',
    'application/x-www-form-urlencoded',
    'multipart/form-data; boundary=x',
    'application/octet-stream',
    'application/vnd.deltaport.chunk-index',
    '*/*',
    ';;;',
    'application/jsonx',
  ],
  'content-encoding': ['gzip', 'br', 'deflate', 'identity', 'gzip, gzip', 'x'],
  accept: ['text/html', 'application/json', '*/*', 'image/png'],
  'accept-encoding': ['gzip', 'br', 'identity;q=0', '*'],
  origin: ['https://edge.test', 'https://evil.test', 'null'],
  cookie: ['dp_session=garbage', 'dp_session=', `dp_session=${'x'.repeat(4000)}`, '=;=;='],
  'x-deltaport-region': ['eu', 'weur', '', '../x', 'a'.repeat(300)],
  'x-deltaport-zone': ['eu', '', 'a'.repeat(300)],
  'if-modified-since': ['garbage', 'Thu, 01 Jan 1970 00:00:00 GMT'],
  'transfer-encoding': ['chunked', 'gzip'],
}

/** Header names and values, with values a Headers object accepts (no CR, LF or NUL). */
function headersArbitrary(): fc.Arbitrary<Record<string, string>> {
  const names = Object.keys(HEADER_VALUES)
  return fc
    .uniqueArray(
      fc.tuple(
        fc.constantFrom(...names),
        fc.oneof(
          { weight: 4, arbitrary: fc.nat().map(String) },
          { weight: 1, arbitrary: fc.string({ maxLength: 64 }).map((s) => `=${s}`) },
        ),
      ),
      { maxLength: 5, selector: ([name]) => name },
    )
    .map((pairs) => {
      const out: Record<string, string> = {}
      for (const [name, pick] of pairs) {
        const pool = HEADER_VALUES[name] ?? ['']
        const value = pick.startsWith('=') ? pick.slice(1) : (pool[Number(pick) % pool.length] ?? '')
        out[name] = value.replace(/[\r\n\0]/g, ' ')
      }
      return out
    })
}

const QUERY_VALUES = [
  '',
  '0',
  '-1',
  '1',
  '1.5',
  '1e3',
  '672',
  '673',
  '99999999999999999999',
  'abc',
  'true',
  '%',
  '%zz',
  'x'.repeat(20_000),
]

function queryArbitrary(op: Operation): fc.Arbitrary<RequestSpec['query']> {
  const documented = ((op.op.parameters as Json[] | undefined) ?? [])
    .filter((p) => p.in === 'query')
    .map((p) => String(p.name))
  const names = [...documented, 'client', 'limit', 'cursor', 'window', 'v', 'method', 'x']
  const pair = fc.tuple(
    fc.constantFrom(...names),
    fc.oneof(fc.constantFrom(...QUERY_VALUES), fc.string({ maxLength: 40, unit: 'binary' })),
  )
  return fc.oneof(
    { weight: 4, arbitrary: fc.array(pair, { maxLength: 6 }) },
    {
      weight: 1,
      arbitrary: fc
        .constantFrom('&&&', '=', 'a=1&a=2&a=3', '%', 'a=%', '?', '#', 'x=%ff%fe', 'a[]=1&a[b]=2', '=x=y=')
        .map((raw) => ({ raw })),
    },
  )
}

// ---------------------------------------------------------------------------------------------------
// JSON bodies that follow the operation's schema, with hostile leaves

const HOSTILE_LEAVES: unknown[] = [
  null,
  true,
  0,
  -1,
  -0,
  1.5,
  1e308,
  -1e308,
  2 ** 53 + 2,
  Number.MAX_SAFE_INTEGER,
  '',
  'x',
  '\u0000',
  '\ud800',
  '1.0.0',
  'stable',
  '1970-01-01T00:00:00.000Z',
  '9999-12-31T23:59:59.999Z',
  'not-a-date',
  'a'.repeat(64),
  '0'.repeat(64),
  'f'.repeat(65),
  [],
  {},
  JSON.parse('{"__proto__":{"polluted":true}}'),
  [[[[[]]]]],
]

const hostileLeaf = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(...HOSTILE_LEAVES) },
  { weight: 1, arbitrary: fc.string({ maxLength: 30, unit: 'grapheme' }) },
  { weight: 1, arbitrary: fc.double() },
  { weight: 1, arbitrary: fc.integer({ min: -(2 ** 40), max: 2 ** 40 }) },
)

function resolve(doc: Json, schema: Json): Json {
  const ref = schema.$ref
  if (typeof ref !== 'string') return schema
  const name = ref.split('/').pop() ?? ''
  return ((doc.components as Json).schemas as Json)[name] as Json
}

const ISO = fc
  .date({ min: new Date('2020-01-01'), max: new Date('2100-01-01'), noInvalidDate: true })
  .map((d) => d.toISOString())

/**
 * Values shaped like `schema` (a JSON Schema of the document), each node replaced by a hostile value
 * now and then: bodies that get past "not an object" into the per-field checks of the handlers.
 */
export function schemaValue(doc: Json, raw: Json, depth = 0): fc.Arbitrary<unknown> {
  const schema = resolve(doc, raw)
  if (depth > 6) return hostileLeaf
  const shaped = shapedValue(doc, schema, depth)
  return fc.oneof({ weight: 6, arbitrary: shaped }, { weight: 1, arbitrary: hostileLeaf })
}

function shapedValue(doc: Json, schema: Json, depth: number): fc.Arbitrary<unknown> {
  const variants = (schema.anyOf ?? schema.oneOf) as Json[] | undefined
  if (variants?.length) return fc.oneof(...variants.map((v) => schemaValue(doc, v, depth + 1)))
  if ('const' in schema) return fc.constant(schema.const)
  if (Array.isArray(schema.enum)) return fc.constantFrom(...(schema.enum as unknown[]))
  const type = Array.isArray(schema.type) ? schema.type[0] : schema.type
  switch (type) {
    case 'object': {
      const properties = (schema.properties ?? {}) as Record<string, Json>
      const entries = Object.entries(properties).map(
        ([key, sub]) => [key, schemaValue(doc, sub, depth + 1)] as const,
      )
      if (entries.length === 0) return fc.dictionary(fc.string({ maxLength: 8 }), hostileLeaf, { maxKeys: 4 })
      return fc.record(Object.fromEntries(entries), {
        requiredKeys: ((schema.required ?? []) as string[]).filter((k) => k in properties),
      })
    }
    case 'array': {
      const items = (schema.items ?? {}) as Json
      return fc.array(schemaValue(doc, items, depth + 1), { maxLength: 4 })
    }
    case 'string': {
      if (schema.format === 'date-time') return ISO
      const max = typeof schema.maxLength === 'number' ? schema.maxLength : 32
      return fc.oneof(
        fc.constantFrom('1.0.0', '1.1.0', 'fuzz-app', 'stable', 'a'.repeat(64), 'vcdiff'),
        fc.string({ minLength: 0, maxLength: Math.min(max + 2, 80) }),
      )
    }
    case 'integer':
    case 'number': {
      const min = typeof schema.minimum === 'number' ? schema.minimum : -10
      const max = typeof schema.maximum === 'number' ? schema.maximum : 1e6
      return fc.oneof(
        fc.integer({ min: Math.max(min, -(2 ** 31)), max: Math.min(max, 2 ** 31) }),
        fc.constantFrom(min - 1, max + 1, min, max),
      )
    }
    case 'boolean':
      return fc.boolean()
    case 'null':
      return fc.constant(null)
    default:
      return hostileLeaf
  }
}

function requestSchema(op: Operation): Json | undefined {
  const content = (op.op.requestBody as Json | undefined)?.content as Record<string, Json> | undefined
  if (!content) return undefined
  const json = Object.entries(content).find(([type]) => type.includes('json'))
  return json?.[1].schema as Json | undefined
}

function bodyArbitrary(doc: Json, op: Operation): fc.Arbitrary<BodySpec> {
  const schema = requestSchema(op)
  const shaped = schema
    ? schemaValue(doc, schema).map((value) => ({ kind: 'schema' as const, value }))
    : fc.jsonValue({ maxDepth: 3 }).map((value) => ({ kind: 'json' as const, value }))
  return fc.oneof(
    { weight: 2, arbitrary: fc.constant({ kind: 'none' as const }) },
    { weight: 8, arbitrary: shaped },
    {
      weight: 2,
      arbitrary: fc.jsonValue({ maxDepth: 4 }).map((value) => ({ kind: 'json' as const, value })),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        kind: fc.constant('deep' as const),
        depth: fc.integer({ min: 500, max: 200_000 }),
        open: fc.constantFrom('[' as const, '{"a":' as const),
      }),
    },
    {
      weight: 1,
      arbitrary: fc
        .integer({ min: 10_000, max: 300_000 })
        .map((length) => ({ kind: 'hugeString' as const, length })),
    },
    {
      weight: 1,
      arbitrary: fc
        .constantFrom(
          '1e999',
          '-1e999',
          '123456789012345678901234567890',
          '0.0000000000000000000001',
          '-0',
          '1E+400',
        )
        .map((literal) => ({ kind: 'bigNumber' as const, literal })),
    },
    {
      weight: 1,
      arbitrary: fc
        .oneof(
          fc.constantFrom('{', '{"a":', '[1,2', 'nul', '"', '\ufeff{}', '{}{}', 'token=x', 'token=&token='),
          fc.string({ maxLength: 200 }),
        )
        .map((value) => ({ kind: 'text' as const, value })),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        kind: fc.constant('bytes' as const),
        length: fc.integer({ min: 1, max: 70_000 }),
        seed: fc.nat(),
      }),
    },
    {
      weight: 1,
      arbitrary: fc
        .constantFrom('schema' as const, 'garbage' as const, 'bomb' as const)
        .map((inner) => ({ kind: 'gzip' as const, inner })),
    },
  )
}

const METHOD_POOL = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS']

export function requestArbitrary(doc: Json, op: Operation): fc.Arbitrary<RequestSpec> {
  const names = [...op.path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1] ?? '')
  return fc.record({
    method: fc.oneof(
      { weight: 6, arbitrary: fc.constant('same') },
      { weight: 1, arbitrary: fc.constantFrom(...METHOD_POOL) },
    ),
    params: fc.record(Object.fromEntries(names.map((n) => [n, paramValue]))) as fc.Arbitrary<
      Record<string, ParamValue>
    >,
    query: queryArbitrary(op),
    headers: headersArbitrary(),
    auth: fc.oneof(
      { weight: 5, arbitrary: fc.constant('right' as const) },
      {
        weight: 2,
        arbitrary: fc.constantFrom('none' as const, 'wrong' as const, 'garbage' as const, 'device' as const),
      },
    ),
    body: bodyArbitrary(doc, op),
    length: fc.oneof(
      { weight: 6, arbitrary: fc.constant('actual' as const) },
      { weight: 1, arbitrary: fc.constantFrom('shorter' as const, 'longer' as const, 'garbage' as const) },
    ),
    stream: fc.boolean(),
  })
}

/** Bytes of the staged version's blob (fuzz-routes.test.ts stages it with this size). */
export const STAGED_BLOB_BYTES = 8192

/**
 * Requests every run sends to every operation before the generated ones, so the hostile cases the
 * standard names are never left to chance: bodies whose Content-Length is wrong (a stream that ends
 * early or runs long), a gzip bomb, deep nesting, a huge string, and a browser without a session.
 * `pick: 2` names the staged version (fuzz-routes.test.ts), whose upload routes read the body.
 */
export function fixedExamples(op: Operation): RequestSpec[] {
  const names = [...op.path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1] ?? '')
  const params = Object.fromEntries(names.map((n) => [n, { kind: 'valid' as const, pick: 2 }]))
  const base: RequestSpec = {
    method: 'same',
    params,
    query: [],
    headers: {},
    auth: 'right',
    body: { kind: 'bytes', length: 5000, seed: 1 },
    length: 'longer',
    stream: true,
  }
  return [
    base,
    { ...base, length: 'shorter' },
    { ...base, length: 'shorter', stream: false },
    // Bodies whose Content-Length is the staged blob's size, so the blob route's size check passes and
    // the body reaches R2: one runs past its Content-Length, one ends short (a 400, never a storage fault).
    { ...base, body: { kind: 'bytes', length: STAGED_BLOB_BYTES + 1, seed: 1 }, length: 'shorter' },
    { ...base, body: { kind: 'bytes', length: STAGED_BLOB_BYTES - 1000, seed: 1 }, length: 'longer' },
    { ...base, body: { kind: 'gzip', inner: 'bomb' }, length: 'actual', stream: false },
    { ...base, body: { kind: 'deep', depth: 100_000, open: '[' }, length: 'actual' },
    { ...base, body: { kind: 'hugeString', length: 300_000 }, length: 'actual', stream: false },
    { ...base, auth: 'none', headers: { accept: 'text/html' }, body: { kind: 'none' }, length: 'actual' },
  ]
}

// ---------------------------------------------------------------------------------------------------
// Turning a description into a request

/** State the requests may name, by path parameter: the seeded artifact and whatever else the test set up. */
export type ValidParams = Record<string, string[]>

function bytesOf(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length)
  let x = seed >>> 0 || 1
  for (let i = 0; i < length; i++) {
    x = (x * 1103515245 + 12345) >>> 0
    out[i] = x >>> 24
  }
  return out
}

export async function gzip(bytes: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([bytes]).stream().pipeThrough(new CompressionStream('gzip'))
  return new Uint8Array(await new Response(stream).arrayBuffer())
}

/** 64 MiB of zeros, gzip-compressed once (≈ 64 KiB): a decompression bomb. */
let bomb: Promise<Uint8Array> | undefined
function gzipBomb(): Promise<Uint8Array> {
  bomb ??= gzip(new Uint8Array(64 * 1024 * 1024))
  return bomb
}

async function bodyBytes(body: BodySpec): Promise<Uint8Array | null> {
  const text = (s: string) => new TextEncoder().encode(s)
  switch (body.kind) {
    case 'none':
      return null
    case 'json':
    case 'schema':
      return text(JSON.stringify(body.value) ?? 'null')
    case 'deep': {
      const close = body.open === '[' ? ']' : '}'
      return text(`${body.open.repeat(body.depth)}1${close.repeat(body.depth)}`)
    }
    case 'hugeString':
      return text(JSON.stringify({ name: 'x'.repeat(body.length), reason: 'y'.repeat(body.length) }))
    case 'bigNumber':
      return text(`{"serial":${body.literal},"batchSeq":${body.literal},"maxDevices":${body.literal}}`)
    case 'text':
      return text(body.value)
    case 'bytes':
      return bytesOf(body.length, body.seed)
    case 'gzip':
      if (body.inner === 'bomb') return gzipBomb()
      if (body.inner === 'garbage') return bytesOf(300, 7)
      return gzip(text('{"clientId":"fuzz-client","events":[]}'))
  }
}

function segment(param: string, value: ParamValue, valid: ValidParams): string {
  switch (value.kind) {
    case 'valid': {
      const values = valid[param] ?? ['x1']
      return encodeURIComponent(values[value.pick % values.length] ?? 'x1')
    }
    case 'text':
      return encodeURIComponent(value.value)
    case 'raw':
      return value.value
    case 'long':
      return 'a'.repeat(value.length)
  }
}

function tokenFor(op: Operation): string {
  return op.path.startsWith('/v1/devices') || op.path.startsWith('/dashboard') ? OPERATOR_TOKEN : TOKEN
}

export async function buildRequest(op: Operation, spec: RequestSpec, valid: ValidParams): Promise<Request> {
  const path = op.path.replace(/\{([^}]+)\}/g, (_, param: string) =>
    segment(param, spec.params[param] ?? { kind: 'valid', pick: 0 }, valid),
  )
  const query = Array.isArray(spec.query)
    ? spec.query.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join('&')
    : spec.query.raw
  const method = spec.method === 'same' ? op.method : spec.method
  const headers = new Headers(spec.headers)
  if (spec.auth === 'right') headers.set('authorization', `Bearer ${tokenFor(op)}`)
  if (spec.auth === 'wrong') headers.set('authorization', `Bearer ${tokenFor(op)}x`)
  if (spec.auth === 'garbage') headers.set('authorization', 'Bearer')
  if (spec.auth === 'device') headers.set('authorization', 'Device dpd1.garbage.garbage')
  if (!headers.has('content-type') && spec.body.kind !== 'none' && spec.body.kind !== 'bytes')
    headers.set('content-type', 'application/json')
  if (spec.body.kind === 'gzip') headers.set('content-encoding', 'gzip')
  const bytes = method === 'GET' || method === 'HEAD' ? null : await bodyBytes(spec.body)
  const actual = bytes?.length ?? 0
  if (spec.length === 'actual' && bytes) headers.set('content-length', String(actual))
  if (spec.length === 'shorter') headers.set('content-length', String(Math.max(0, actual - 1)))
  if (spec.length === 'longer') headers.set('content-length', String(actual + 1000))
  if (spec.length === 'garbage') headers.set('content-length', '-5')
  return new Request(`https://edge.test${path}${query ? `?${query}` : ''}`, {
    method,
    headers,
    ...(bytes ? { body: spec.stream ? streamOf(bytes) : bytes } : {}),
  })
}

/** The bytes as a stream in 16 KiB pieces. */
function streamOf(bytes: Uint8Array): ReadableStream<Uint8Array> {
  let offset = 0
  return new ReadableStream({
    pull(controller) {
      if (offset >= bytes.length) return controller.close()
      controller.enqueue(bytes.slice(offset, offset + 16 * 1024))
      offset += 16 * 1024
    },
  })
}

// ---------------------------------------------------------------------------------------------------
// What every answer must be

const REQUEST_TIMEOUT_MS = 10_000

async function withTimeout<T>(what: string, work: Promise<T>): Promise<T> {
  let timer: number | null = null
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`${what}: no answer within ${REQUEST_TIMEOUT_MS} ms`)),
      REQUEST_TIMEOUT_MS,
    )
  })
  try {
    return await Promise.race([work, timeout])
  } finally {
    clearTimeout(timer)
  }
}

/** The content types the operation documents for `status` (the `default` problem when it lists none). */
function documentedTypes(op: Json | undefined, status: number): string[] {
  const responses = (op?.responses ?? {}) as Record<string, Json>
  const response = responses[String(status)] ?? responses.default
  return Object.keys((response?.content ?? {}) as Json)
}

/**
 * Sends the request and holds the answer to the standard: no 5xx but a documented 503 (and never a
 * `storage-unavailable` one: no R2 fault is injected here), every error a
 * problem+json body whose status is the answer's (or a content type the operation documents for that
 * status, like the dashboard's HTML login page), and an answer within the timeout.
 */
export async function sendAndCheck(op: Operation, request: Request): Promise<number> {
  const what = `${request.method} ${new URL(request.url).pathname.slice(0, 200)}`
  const response = await withTimeout(what, exports.default.fetch(request))
  const bytes = await withTimeout(`${what} (body)`, response.arrayBuffer())
  const text = new TextDecoder().decode(bytes.slice(0, 64 * 1024))
  const status = response.status
  const context = `${what} → ${status} ${response.headers.get('content-type')} ${text.slice(0, 300)}`
  // A request with another method reaches that method's operation of the path (a HEAD its GET's), or none.
  const reached =
    op.siblings.get(request.method) ?? (request.method === 'HEAD' ? op.siblings.get('GET') : undefined)
  const documented503 = status === 503 && reached !== undefined && '503' in (reached.responses as Json)
  if (status >= 500 && !documented503) throw new Error(`server error: ${context}`)
  if (status < 400) return status
  const type = (response.headers.get('content-type') ?? '').split(';')[0]?.trim() ?? ''
  if (type !== PROBLEM_CONTENT_TYPE) {
    if (documentedTypes(reached, status).includes(type)) return status
    throw new Error(`error without a problem body: ${context}`)
  }
  if (request.method === 'HEAD') return status
  let parsed: ProblemDetails
  try {
    parsed = ProblemDetails.parse(JSON.parse(text))
  } catch (error) {
    throw new Error(`malformed problem body (${String(error).slice(0, 200)}): ${context}`)
  }
  if (parsed.status !== status) throw new Error(`problem status ${parsed.status} on a ${status}: ${context}`)
  if (!parsed.type.startsWith('https://deltaport.dev/problems/') || parsed.title.length === 0)
    throw new Error(`problem without a type or title: ${context}`)
  // The fuzz runs on the real local R2 with no fault injected, so a storage fault here is always a
  // request's own failure blamed on R2 (an upload body shorter or longer than its Content-Length, or of
  // unknown length, was one): never an allowed 503.
  if (parsed.type.endsWith('/storage-unavailable'))
    throw new Error(`a storage fault with no fault injected: ${context}`)
  return status
}
