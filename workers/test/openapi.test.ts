import { describe, expect, it } from 'vitest'
import { app } from '../app.ts'
import { OPERATOR_TOKEN } from './dashboard-helpers.ts'
import { call, TOKEN } from './publish-helpers.ts'

type Json = { [key: string]: unknown }

const METHODS = ['get', 'head', 'post', 'put', 'delete', 'patch', 'options'] as const

async function fetchDocument(): Promise<Json> {
  const response = await call('/openapi.json')
  expect(response.status).toBe(200)
  expect(response.headers.get('content-type')).toContain('application/json')
  return (await response.json()) as Json
}

function documentedOperations(doc: Json): Set<string> {
  const ops = new Set<string>()
  for (const [path, item] of Object.entries(doc.paths as Record<string, Json>)) {
    for (const method of METHODS) if (item[method]) ops.add(`${method.toUpperCase()} ${path}`)
  }
  return ops
}

/** The app's routes as `METHOD /path/{param}`, without `use` middleware entries and HEADs covered by a GET. */
function appOperations(): Set<string> {
  const all = new Set(
    app.routes
      .filter((r) => !(r.method === 'ALL' && r.path.endsWith('*')))
      .map((r) => `${r.method} ${r.path.replace(/:([A-Za-z0-9_]+)/g, '{$1}')}`),
  )
  return all
}

function collectRefs(value: unknown, out: string[] = []): string[] {
  if (Array.isArray(value)) for (const v of value) collectRefs(v, out)
  else if (value && typeof value === 'object') {
    for (const [key, v] of Object.entries(value)) {
      if (key === '$ref' && typeof v === 'string') out.push(v)
      else collectRefs(v, out)
    }
  }
  return out
}

function resolvePointer(doc: Json, pointer: string): unknown {
  if (!pointer.startsWith('#/')) return undefined
  let node: unknown = doc
  for (const raw of pointer.slice(2).split('/')) {
    const key = raw.replaceAll('~1', '/').replaceAll('~0', '~')
    if (!node || typeof node !== 'object' || !(key in node)) return undefined
    node = (node as Json)[key]
  }
  return node
}

describe('GET /openapi.json', () => {
  it('is an OpenAPI 3.1 document', async () => {
    const doc = await fetchDocument()
    expect(doc.openapi).toBe('3.1.0')
    const components = doc.components as Json
    expect(Object.keys(components.schemas as Json)).toEqual(
      expect.arrayContaining([
        'SignedManifest',
        'CompleteMultipart',
        'PlanRequest',
        'TelemetryBatch',
        'ProblemDetails',
      ]),
    )
    expect((components.securitySchemes as Json).bearerAuth).toMatchObject({ type: 'http', scheme: 'bearer' })
  })

  it('resolves every $ref', async () => {
    const doc = await fetchDocument()
    const refs = collectRefs(doc)
    expect(refs.length).toBeGreaterThan(0)
    const unresolved = [...new Set(refs)].filter((ref) => resolvePointer(doc, ref) === undefined)
    expect(unresolved, `unresolved $refs: ${unresolved.join(', ')}`).toEqual([])
  })

  it('documents every route of the Hono app, and nothing else', async () => {
    const documented = documentedOperations(await fetchDocument())
    const served = appOperations()
    const missing = [...served]
      .filter((op) => !documented.has(op))
      // A HEAD is covered by the GET of the same path.
      .filter((op) => !(op.startsWith('HEAD ') && documented.has(op.replace(/^HEAD /, 'GET '))))
      .sort()
    expect(
      missing,
      `routes served by the app but missing from workers/openapi/routes.ts: ${missing.join(', ')}`,
    ).toEqual([])
    const stale = [...documented]
      .filter(
        (op) => !served.has(op) && !(op.startsWith('HEAD ') && served.has(op.replace(/^HEAD /, 'GET '))),
      )
      .sort()
    expect(stale, `documented operations the app does not serve: ${stale.join(', ')}`).toEqual([])
  })

  it('marks maintainer routes with bearer auth and errors as problem+json', async () => {
    const doc = await fetchDocument()
    const paths = doc.paths as Record<string, Record<string, Json>>
    const start = paths['/v1/publish/{name}/{version}']?.post
    expect(start?.security).toEqual([{ bearerAuth: [] }])
    expect(paths['/v1/config']?.get?.security).toEqual([{ bearerAuth: [] }])
    expect(paths['/v1/plan']?.post?.security).toBeUndefined()
    const blob = paths['/v1/artifacts/{name}/{version}/blob']?.get?.responses as Json
    expect(Object.keys(blob)).toEqual(expect.arrayContaining(['200', '206', '304', '416']))
    expect((blob['416'] as Json).content).toEqual({
      'application/problem+json': { schema: { $ref: '#/components/schemas/ProblemDetails' } },
    })
  })
})

describe('documented media types of the dashboard', () => {
  // Found by workers/test/fuzz-routes.test.ts: the document listed the problem+json a 401 and 429 can be,
  // not the HTML login page a browser gets for them, so a client reading the document misread those.
  it('lists the HTML login page beside the problem a 401 of GET /dashboard can be', async () => {
    const doc = await fetchDocument()
    const paths = doc.paths as Record<string, Record<string, { responses: Record<string, Json> }>>
    const unauthorized = paths['/dashboard']?.get?.responses['401']
    expect(Object.keys((unauthorized?.content ?? {}) as Json).sort()).toEqual([
      'application/problem+json',
      'text/html',
    ])
    const browser = await call('/dashboard', { headers: { accept: 'text/html' } })
    expect(browser.status).toBe(401)
    expect(browser.headers.get('content-type')).toContain('text/html')
    const api = await call('/dashboard', { headers: { accept: 'application/json' } })
    expect(api.status).toBe(401)
    expect(api.headers.get('content-type')).toBe('application/problem+json')
  })

  it('lists the HTML login form as the 429 of POST /dashboard/login', async () => {
    const doc = await fetchDocument()
    const paths = doc.paths as Record<string, Record<string, { responses: Record<string, Json> }>>
    const limited = paths['/dashboard/login']?.post?.responses['429']
    expect(Object.keys((limited?.content ?? {}) as Json)).toEqual(['text/html'])
  })
})

/** A value for each path parameter the routes take, valid enough to reach the handler's own checks. */
const PATH_VALUES: Record<string, string> = {
  name: 'probe-app',
  version: '1.0.0',
  from: '0.9.0',
  to: '1.0.0',
  uploadId: 'not-an-issued-upload',
  part: '1',
  attempt: '0'.repeat(64),
  method: 'bsdiff',
  id: 'probe-code',
  deviceId: 'probe-device',
  channel: 'stable',
}

describe('documented responses', () => {
  it('list what a route answers to a body in an encoding it does not accept', async () => {
    // Every route that takes a body is asked with one in brotli, with the token it wants: whatever it
    // answers (415, or an earlier 4xx) must be among the statuses its operation documents.
    const doc = await fetchDocument()
    const undocumented: string[] = []
    for (const [path, item] of Object.entries(doc.paths as Record<string, Record<string, Json>>)) {
      for (const method of ['post', 'put', 'delete'] as const) {
        const operation = item[method]
        if (!operation?.requestBody) continue
        const url = path.replace(/\{([^}]+)\}/g, (_, param: string) => {
          const value = PATH_VALUES[param]
          if (value === undefined) throw new Error(`no probe value for {${param}} in ${path}`)
          return value
        })
        const token = path.startsWith('/v1/devices') || path.startsWith('/dashboard') ? OPERATOR_TOKEN : TOKEN
        const response = await call(url, {
          method: method.toUpperCase(),
          headers: {
            authorization: `Bearer ${token}`,
            'content-type': Object.keys((operation.requestBody as { content: Json }).content)[0] ?? '',
            // Same-origin, so the dashboard's form posts get past their Origin check to the body.
            origin: 'https://edge.test',
            'content-encoding': 'br',
            'content-length': '2',
          },
          body: '{}',
        })
        const documented = Object.keys(operation.responses as Json)
        if (!documented.includes(String(response.status)))
          undocumented.push(`${method.toUpperCase()} ${path} answered ${response.status}`)
      }
    }
    expect(undocumented).toEqual([])
  })

  it('list the 503 of a backing fault on every route that reads R2, KV or a Durable Object', async () => {
    const doc = await fetchDocument()
    const paths = doc.paths as Record<string, Record<string, { operationId: string; responses: Json }>>
    const abort = paths['/v1/publish/{name}/{version}/uploads/{uploadId}']?.delete?.responses ?? {}
    // R2 refusing the abort for another reason than "no such upload" is a 409; an R2 fault a 503.
    expect(Object.keys(abort)).toEqual(expect.arrayContaining(['204', '404', '409', '503']))
    const selfContained = [
      'getServiceInfo',
      'getOpenApi',
      'getDashboardLogin',
      'postDashboardLogin',
      'postDashboardLogout',
    ]
    const without503 = Object.values(paths)
      .flatMap((item) => Object.values(item))
      .filter(
        (operation) => !selfContained.includes(operation.operationId) && !('503' in operation.responses),
      )
      .map((operation) => operation.operationId)
    expect(without503).toEqual([])
  })
})
