import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { MAX_ROOT_BYTES, SignedRoot } from '../../schemas/root.ts'
import { nextRootProblem, selfSignedProblem } from '../../schemas/root-chain.ts'

/**
 * A stand-in for the edge's root routes (ADR 0035) while they are built on another branch: the HTTP
 * contract only, on a real loopback server, with the chain rules the edge shares (schemas/root-chain.ts).
 *   GET /v1/roots/latest and /v1/roots/:version: 200 SignedRoot, 404 none.
 *   PUT /v1/roots/:version (Bearer publish token): 201 stored, 200 the same bytes again, 409 other bytes
 *   under that version or the previous version missing, 422 a chain or signature problem, 400 a bad
 *   body, 413 over MAX_ROOT_BYTES, 401 a wrong token.
 * Once the edge serves these routes, root-cli.test.ts starts the real one (local-edge.ts) instead.
 */
export interface RootEdgeStub {
  url: string
  dispose(): Promise<void>
}

export async function startRootEdgeStub(token: string): Promise<RootEdgeStub> {
  /** What each version was stored as: the exact bytes, and the parsed root. */
  const stored = new Map<number, { bytes: Buffer; root: SignedRoot }>()

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const match = /^\/v1\/roots\/(latest|[1-9][0-9]{0,6})$/.exec(req.url ?? '')
    if (!match?.[1]) return problem(res, 404, 'no such route')
    const which = match[1]
    if (req.method === 'GET') {
      const version = which === 'latest' ? Math.max(0, ...stored.keys()) : Number(which)
      const entry = stored.get(version)
      if (!entry) return problem(res, 404, `no root ${which}`)
      res.writeHead(200, { 'content-type': 'application/json' })
      return res.end(entry.bytes)
    }
    if (req.method !== 'PUT' || which === 'latest') return problem(res, 405, 'method not allowed')
    if (req.headers.authorization !== `Bearer ${token}`) return problem(res, 401, 'bad publish token')
    const version = Number(which)
    const bytes = await readCapped(req, MAX_ROOT_BYTES)
    if (!bytes) return problem(res, 413, `a root is at most ${MAX_ROOT_BYTES} bytes`)
    let json: unknown
    try {
      json = JSON.parse(bytes.toString('utf8'))
    } catch {
      return problem(res, 400, 'not JSON')
    }
    const parsed = SignedRoot.safeParse(json)
    if (!parsed.success) return problem(res, 400, 'not a signed root')
    const root = parsed.data
    if (root.signed.version !== version) return problem(res, 400, `the body is root ${root.signed.version}`)
    const existing = stored.get(version)
    if (existing) {
      if (existing.bytes.equals(bytes)) return answer(res, 200, { version, created: false })
      return problem(res, 409, `root ${version} exists with other bytes`)
    }
    const previous = stored.get(version - 1)
    if (version > 1 && !previous) return problem(res, 409, `root ${version - 1} is missing`)
    const chainProblem = previous
      ? await nextRootProblem(previous.root.signed, root)
      : await selfSignedProblem(root)
    if (chainProblem) return problem(res, 422, chainProblem)
    stored.set(version, { bytes, root })
    return answer(res, 201, { version, created: true })
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((error: unknown) => problem(res, 500, String(error)))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    dispose: () =>
      new Promise((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}

/** The body, or null past `max` bytes (the rest is drained, not kept). */
async function readCapped(req: IncomingMessage, max: number): Promise<Buffer | null> {
  const parts: Buffer[] = []
  let total = 0
  for await (const chunk of req) {
    const part = chunk as Buffer
    total += part.length
    if (total <= max) parts.push(part)
  }
  return total > max ? null : Buffer.concat(parts)
}

function answer(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' })
  res.end(JSON.stringify(body))
}

function problem(res: ServerResponse, status: number, detail: string): void {
  res.writeHead(status, { 'content-type': 'application/problem+json' })
  res.end(JSON.stringify({ type: 'about:blank', title: 'root refused', status, detail }))
}
