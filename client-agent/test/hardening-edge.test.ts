import { createHash, randomBytes } from 'node:crypto'
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { dirname, join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createDelta } from '../../delta/index.ts'
import { frameStream } from '../../delta/stream/index.ts'
import type { ArtifactIndex } from '../../schemas/artifact-index.ts'
import type { ArtifactManifest, SignedManifest } from '../../schemas/manifest.ts'
import { EdgeClient } from '../edge-client.ts'
import { AgentError } from '../errors.ts'
import { installArtifact } from '../install.ts'
import { generateKeyPair, signManifest } from '../signing.ts'
import { ArtifactStore } from '../store.ts'
import { withHeaderTimeout } from '../transfer/header-timeout.ts'
import { makeWorkspace, type Workspace } from './fixtures.ts'

/**
 * A hostile edge (or a compromised mirror in front of it) answering the agent: every lie must end in
 * the right AgentError, quickly, with nothing installed and no partial file trusted. TUF's attacks
 * from the device's side: arbitrary software, mix-and-match, freeze, endless data, slow retrieval,
 * plus broken error pages and lying range answers.
 */

type Handler = (req: IncomingMessage, res: ServerResponse) => void

let server: Server
let baseUrl = ''
let handler: Handler = (_req, res) => res.writeHead(404).end()
let ws: Workspace

beforeAll(async () => {
  server = createServer((req, res) => handler(req, res))
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  ws = await makeWorkspace(baseUrl)
})

afterAll(async () => {
  server.closeAllConnections()
  await new Promise((resolve) => server.close(resolve))
  await rm(ws.dir, { recursive: true, force: true })
})

const BLOB = randomBytes(64 * 1024)
const SHA = createHash('sha256').update(BLOB).digest('hex')

function manifestOf(version: string, overrides: Partial<ArtifactManifest> = {}): ArtifactManifest {
  const now = Date.now()
  return {
    schemaVersion: 1,
    name: 'app',
    version,
    size: BLOB.length,
    sha256: SHA,
    mediaType: 'application/octet-stream',
    dependencies: [],
    channels: ['stable'],
    createdAt: new Date(now - 1000).toISOString(),
    expires: new Date(now + 86_400_000).toISOString(),
    serial: 1,
    chunkIndex: null,
    deltas: [],
    ...overrides,
  }
}

/** Writes an endless body until the client goes away. */
function endless(res: ServerResponse, chunk: Uint8Array, status = 200, type = 'application/json'): void {
  res.writeHead(status, { 'content-type': type })
  const pump = () => {
    while (!res.destroyed && res.write(chunk)) {
      // keep the socket buffer full
    }
    if (!res.destroyed) res.once('drain', pump)
  }
  res.on('close', () => res.removeAllListeners('drain'))
  pump()
}

function json(res: ServerResponse, body: unknown, status = 200): void {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body))
}

/** A well-behaved blob route (Range honoured) for cases where only the manifest lies. */
function honestBlob(req: IncomingMessage, res: ServerResponse): void {
  const match = /^bytes=(\d+)-$/.exec(req.headers.range ?? '')
  const start = match ? Number(match[1]) : 0
  res.writeHead(match ? 206 : 200, {
    'content-length': String(BLOB.length - start),
    ...(match ? { 'content-range': `bytes ${start}-${BLOB.length - 1}/${BLOB.length}` } : {}),
  })
  res.end(BLOB.subarray(start))
}

interface Case {
  label: string
  target: string
  /** Routes of the hostile edge; anything else is 404. */
  routes: (signed: (m: ArtifactManifest) => Promise<SignedManifest>) => Promise<Record<string, Handler>>
  /** The failure expected, or `installs` for an honest answer the agent must install. */
  code: AgentError['code'] | 'installs'
  message?: RegExp
  /** Start with the first 1000 bytes already downloaded (a resume). */
  seedPartial?: boolean
  /** The channel a version target was chosen for (as a rollout's version is). */
  channel?: string
  /** For `installs`: the version installed, 1.0.0 unless said. */
  installs?: string
}

const index = (channels: Record<string, string>): ArtifactIndex => ({
  name: 'app',
  latestSerial: 1,
  versions: [],
  channels,
})

/** An index whose `stable` and `beta` both point at 2.0.0, a build signed for `beta` only. */
const bothChannelsOnBetaBuild: Case['routes'] = async (signed) => {
  const beta = await signed(manifestOf('2.0.0', { channels: ['beta'], serial: 2 }))
  return {
    '/v1/artifacts/app': (_q, s) => json(s, index({ stable: '2.0.0', beta: '2.0.0' })),
    '/v1/artifacts/app/2.0.0/manifest': (_q, s) => json(s, beta),
    '/v1/artifacts/app/2.0.0/blob': honestBlob,
  }
}

const cases: Case[] = [
  {
    label: 'mix-and-match: the manifest of another version',
    target: '2.0.0',
    routes: async (signed) => {
      const old = await signed(manifestOf('1.0.0'))
      return { '/v1/artifacts/app/2.0.0/manifest': (_q, s) => json(s, old) }
    },
    code: 'untrusted-manifest',
    message: /asked for app@2.0.0/,
  },
  {
    label: 'mix-and-match: a channel pointed at a version signed for another channel only',
    target: 'stable',
    routes: bothChannelsOnBetaBuild,
    code: 'untrusted-manifest',
    message: /app@2\.0\.0 was not signed for channel "stable" \(its manifest lists: beta\)/,
  },
  {
    label: 'arbitrary software: signed by a key the device does not trust',
    target: '1.0.0',
    routes: async () => {
      const stranger = await signManifest(manifestOf('1.0.0'), await generateKeyPair())
      return { '/v1/artifacts/app/1.0.0/manifest': (_q, s) => json(s, stranger) }
    },
    code: 'untrusted-manifest',
  },
  {
    label: 'arbitrary software: a signed field changed after signing',
    target: '1.0.0',
    routes: async (signed) => {
      const honest = await signed(manifestOf('1.0.0'))
      const forged = { ...honest, signed: { ...honest.signed, sha256: 'f'.repeat(64) } }
      return { '/v1/artifacts/app/1.0.0/manifest': (_q, s) => json(s, forged) }
    },
    code: 'untrusted-manifest',
  },
  {
    label: 'freeze: an expired manifest replayed',
    target: '1.0.0',
    routes: async (signed) => {
      const stale = await signed(manifestOf('1.0.0', { expires: new Date(Date.now() - 1000).toISOString() }))
      return { '/v1/artifacts/app/1.0.0/manifest': (_q, s) => json(s, stale) }
    },
    code: 'untrusted-manifest',
    message: /expired/,
  },
  {
    label: 'endless data: a manifest that never ends',
    target: '1.0.0',
    routes: async () => ({
      '/v1/artifacts/app/1.0.0/manifest': (_q, s) => endless(s, new TextEncoder().encode(' '.repeat(16384))),
    }),
    code: 'untrusted-manifest',
    message: /more than 65536 bytes/,
  },
  {
    label: 'endless data: an index that never ends',
    target: 'stable',
    routes: async () => ({
      '/v1/artifacts/app': (_q, s) => endless(s, new TextEncoder().encode('[1,'.repeat(8192))),
    }),
    code: 'edge-rejected',
    message: /more than/,
  },
  {
    label: 'a malformed index (not JSON)',
    target: 'stable',
    routes: async () => ({
      '/v1/artifacts/app': (_q, s) =>
        s.writeHead(200, { 'content-type': 'application/json' }).end('{"name":'),
    }),
    code: 'edge-rejected',
  },
  {
    label: 'an index whose channel points outside the grammar',
    target: 'stable',
    routes: async () => ({ '/v1/artifacts/app': (_q, s) => json(s, index({ stable: '../../etc' })) }),
    code: 'edge-rejected',
  },
  {
    label: 'endless data: a blob longer than its signed size',
    target: '1.0.0',
    routes: async (signed) => {
      const honest = await signed(manifestOf('1.0.0'))
      return {
        '/v1/artifacts/app/1.0.0/manifest': (_q, s) => json(s, honest),
        '/v1/artifacts/app/1.0.0/blob': (_q, s) => endless(s, BLOB, 200, 'application/octet-stream'),
      }
    },
    code: 'integrity-mismatch',
    message: /more than the manifest/,
  },
  {
    label: 'arbitrary software: other bytes of the signed size',
    target: '1.0.0',
    routes: async (signed) => {
      const honest = await signed(manifestOf('1.0.0'))
      return {
        '/v1/artifacts/app/1.0.0/manifest': (_q, s) => json(s, honest),
        '/v1/artifacts/app/1.0.0/blob': (_q, s) => s.writeHead(200).end(randomBytes(BLOB.length)),
      }
    },
    code: 'integrity-mismatch',
  },
  {
    label: 'a resumed download answered with a 206 of the wrong offset (healed by one restart from 0)',
    target: '1.0.0',
    seedPartial: true,
    routes: async (signed) => {
      const honest = await signed(manifestOf('1.0.0'))
      return {
        '/v1/artifacts/app/1.0.0/manifest': (_q, s) => json(s, honest),
        // Claims the requested range but sends the object from its start.
        '/v1/artifacts/app/1.0.0/blob': (req, s) => {
          const start = Number(/^bytes=(\d+)-/.exec(req.headers.range ?? '')?.[1] ?? 0)
          s.writeHead(206, { 'content-range': `bytes ${start}-${BLOB.length - 1}/${BLOB.length}` })
          s.end(BLOB.subarray(0, BLOB.length - start))
        },
      }
    },
    // The spliced file fails its hash; the partial it resumed is thrown away and the download from
    // byte 0 (no Range, so this edge sends the right bytes) installs in the same command.
    code: 'installs',
  },
  {
    label: 'an endless HTML error page',
    target: '1.0.0',
    routes: async () => ({
      '/v1/artifacts/app/1.0.0/manifest': (_q, s) =>
        endless(s, new TextEncoder().encode('<html>busy</html>'.repeat(1000)), 502, 'text/html'),
    }),
    code: 'edge-rejected',
    message: /HTTP 502/,
  },
  {
    label: 'a problem+json whose detail is far beyond its schema',
    target: '1.0.0',
    routes: async () => ({
      '/v1/artifacts/app/1.0.0/manifest': (_q, s) =>
        s
          .writeHead(500, { 'content-type': 'application/problem+json' })
          .end(JSON.stringify({ type: 'x', title: 'x', status: 500, detail: 'y'.repeat(100_000) })),
    }),
    code: 'edge-rejected',
    message: /HTTP 500/,
  },
  {
    label: 'sanity: the same server answering honestly installs',
    target: '1.0.0',
    routes: async (signed) => {
      const honest = await signed(manifestOf('1.0.0'))
      return {
        '/v1/artifacts/app/1.0.0/manifest': (_q, s) => json(s, honest),
        '/v1/artifacts/app/1.0.0/blob': honestBlob,
      }
    },
    code: 'installs',
  },
  {
    label: "mix-and-match: a rollout's version for a channel its manifest does not list",
    target: '2.0.0',
    channel: 'stable',
    routes: async (signed) => {
      const beta = await signed(manifestOf('2.0.0', { channels: ['beta'], serial: 2 }))
      return {
        '/v1/artifacts/app/2.0.0/manifest': (_q, s) => json(s, beta),
        '/v1/artifacts/app/2.0.0/blob': honestBlob,
      }
    },
    code: 'untrusted-manifest',
    message: /not signed for channel "stable"/,
  },
  {
    label: 'sanity: a channel head whose manifest lists the channel installs',
    target: 'beta',
    installs: '2.0.0',
    routes: bothChannelsOnBetaBuild,
    code: 'installs',
  },
]

describe('the agent against a hostile edge', () => {
  for (const testCase of cases) {
    it(testCase.label, async () => {
      const routes = await testCase.routes((m) => signManifest(m, ws.key))
      handler = (req, res) => {
        const path = new URL(req.url ?? '/', baseUrl).pathname
        const route = routes[path]
        if (route) return route(req, res)
        if (path === '/v1/telemetry') return json(res, { region: 'x', accepted: 1, duplicate: false }, 202)
        res.writeHead(404, { 'content-type': 'application/problem+json' }).end('{}')
      }
      const installRoot = `${ws.dir}/store-${cases.indexOf(testCase)}`
      const config = { ...ws.config, installRoot }
      const partial = new ArtifactStore(installRoot, 'app').partialPath('1.0.0')
      if (testCase.seedPartial) {
        await mkdir(dirname(partial), { recursive: true })
        await writeFile(partial, BLOB.subarray(0, 1000))
      }
      const started = Date.now()
      const outcome = await installArtifact(config, {
        name: 'app',
        target: testCase.target,
        ...(testCase.channel ? { channel: testCase.channel } : {}),
        fullOnly: true,
      }).then(
        (result) => result,
        (error: unknown) => error,
      )
      expect(Date.now() - started, 'bounded time').toBeLessThan(20_000)
      const store = new ArtifactStore(installRoot, 'app')
      if (testCase.code === 'installs') {
        const version = testCase.installs ?? '1.0.0'
        expect(outcome).toMatchObject({ version, method: 'full' })
        expect(await store.installedVersions()).toEqual([version])
        return
      }
      expect(outcome, String(outcome)).toBeInstanceOf(AgentError)
      const error = outcome as AgentError
      expect(error.code, error.message).toBe(testCase.code)
      if (testCase.message) expect(error.message).toMatch(testCase.message)
      expect(error.message.length).toBeLessThan(2000)
      expect(await store.installedVersions()).toEqual([])
      // One lie does not poison the device: whatever partial bytes it left, the next honest answer
      // installs exactly the signed bytes.
      const honest = await signManifest(manifestOf('1.0.0'), ws.key)
      routes['/v1/artifacts/app'] = (_q, s) => json(s, index({ stable: '1.0.0' }))
      routes['/v1/artifacts/app/1.0.0/manifest'] = (_q, s) => json(s, honest)
      routes['/v1/artifacts/app/1.0.0/blob'] = honestBlob
      const retried = await installArtifact(config, { name: 'app', target: '1.0.0', fullOnly: true })
      expect(retried).toMatchObject({ version: '1.0.0' })
      const installed = await readFile(join(store.currentLink, 'blob'))
      expect(createHash('sha256').update(installed).digest('hex')).toBe(SHA)
    }, 30_000)
  }

  it('endless data: an unsigned delta that expands past the signed size is cut off while writing', async () => {
    const v1 = BLOB
    const v2 = Buffer.from(v1)
    v2.set(randomBytes(2000), 10_000)
    const sha2 = createHash('sha256').update(v2).digest('hex')
    const m1 = await signManifest(manifestOf('1.0.0'), ws.key)
    const m2 = await signManifest(manifestOf('1.1.0', { serial: 2, sha256: sha2, size: v2.length }), ws.key)
    // A few hundred bytes of VCDIFF that decode to 4 MiB: 64 times the signed target size.
    const bomb = createDelta(v1, new Uint8Array(4 * 1024 * 1024), { methods: ['vcdiff'] }).delta
    const honest = createDelta(v1, v2, { methods: ['approx'] }).delta
    const framed = async (payload: Uint8Array, method: string) => {
      const meta = { artifact: 'app', fromVersion: '1.0.0', toVersion: '1.1.0', method, blockSize: 1024 }
      const wire = await frameStream(payload, meta, { k: 4, m: 2 })
      const sha256 = createHash('sha256').update(payload).digest('hex')
      const layout = {
        blockSize: 1024,
        k: 4,
        m: 2,
        framedLength: wire.length,
        payloadLength: payload.length,
        payloadSha256: sha256,
      }
      return {
        wire,
        step: { kind: 'delta', from: '1.0.0', to: '1.1.0', method, size: payload.length, sha256, layout },
      }
    }
    const streams = { vcdiff: await framed(bomb, 'vcdiff'), approx: await framed(honest, 'approx') }
    const ranged =
      (wire: Uint8Array): Handler =>
      (req, res) => {
        const [, a, b] = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '') ?? []
        const start = Number(a ?? 0)
        const end = Math.min(Number(b ?? wire.length - 1), wire.length - 1)
        res.writeHead(206, { 'content-range': `bytes ${start}-${end}/${wire.length}`, etag: '"s"' })
        res.end(wire.subarray(start, end + 1))
      }
    handler = (req, res) => {
      const url = new URL(req.url ?? '/', baseUrl)
      if (url.pathname === '/v1/artifacts/app/1.0.0/manifest') return json(res, m1)
      if (url.pathname === '/v1/artifacts/app/1.1.0/manifest') return json(res, m2)
      if (url.pathname === '/v1/artifacts/app/1.0.0/blob') return honestBlob(req, res)
      if (url.pathname.startsWith('/v1/deltas/')) {
        const method = url.searchParams.get('method') === 'approx' ? 'approx' : 'vcdiff'
        return ranged(streams[method].wire)(req, res)
      }
      if (url.pathname === '/v1/plan') {
        let body = ''
        req.on('data', (chunk: Buffer) => {
          body += chunk.toString()
        })
        req.on('end', () => {
          const asked = JSON.parse(body) as { capabilities: { methods: string[] } }
          const method = asked.capabilities.methods.includes('vcdiff') ? 'vcdiff' : 'approx'
          const { step } = streams[method]
          json(res, {
            name: 'app',
            from: '1.0.0',
            to: '1.1.0',
            strategy: 'delta',
            totalBytes: step.layout.framedLength,
            steps: [{ ...step, url: `/v1/deltas/app/1.0.0/1.1.0?method=${method}` }],
            considered: [],
          })
        })
        return
      }
      if (url.pathname === '/v1/telemetry')
        return json(res, { region: 'x', accepted: 1, duplicate: false }, 202)
      res.writeHead(404).end()
    }
    const config = { ...ws.config, installRoot: `${ws.dir}/store-bomb` }
    await installArtifact(config, { name: 'app', target: '1.0.0', fullOnly: true })
    const updated = await installArtifact(config, { name: 'app', target: '1.1.0' })
    expect(updated).toMatchObject({ version: '1.1.0', method: 'delta' })
    expect(updated.fallbacks).toHaveLength(1)
    expect(updated.fallbacks[0]).toMatch(/produced more than its signed 65536 bytes/)
    const store = new ArtifactStore(config.installRoot, 'app')
    const installed = await readFile(join(store.currentLink, 'blob'))
    expect(createHash('sha256').update(installed).digest('hex')).toBe(sha2)
  })

  it('a plan pointing anywhere but the edge itself is refused as malformed, never fetched; the full artifact follows', async () => {
    const v2 = Buffer.from(BLOB)
    v2.set(randomBytes(100), 0)
    const sha2 = createHash('sha256').update(v2).digest('hex')
    const m1 = await signManifest(manifestOf('1.0.0'), ws.key)
    const m2 = await signManifest(manifestOf('1.1.0', { serial: 2, sha256: sha2 }), ws.key)
    const foreign = [
      'http://169.254.169.254/latest/meta-data',
      '//evil.example/x',
      'file:///etc/passwd',
      'x'.repeat(10),
    ]
    let planned = 0
    const fetched: string[] = []
    handler = (req, res) => {
      const url = new URL(req.url ?? '/', baseUrl)
      fetched.push(url.pathname)
      if (url.pathname === '/v1/artifacts/app/1.0.0/manifest') return json(res, m1)
      if (url.pathname === '/v1/artifacts/app/1.1.0/manifest') return json(res, m2)
      if (url.pathname === '/v1/artifacts/app/1.0.0/blob') return honestBlob(req, res)
      if (url.pathname === '/v1/artifacts/app/1.1.0/blob')
        return res.writeHead(200, { 'content-length': String(v2.length) }).end(v2)
      if (url.pathname === '/v1/plan') {
        const target = foreign[planned++ % foreign.length] ?? ''
        const layout = {
          blockSize: 1024,
          k: 4,
          m: 2,
          framedLength: 2048,
          payloadLength: 100,
          payloadSha256: 'a'.repeat(64),
        }
        const step = {
          kind: 'delta',
          from: '1.0.0',
          to: '1.1.0',
          method: 'vcdiff',
          url: target,
          size: 100,
          sha256: 'a'.repeat(64),
          layout,
        }
        return json(res, {
          name: 'app',
          from: '1.0.0',
          to: '1.1.0',
          strategy: 'delta',
          totalBytes: 2048,
          steps: [step],
          considered: [],
        })
      }
      if (url.pathname === '/v1/telemetry')
        return json(res, { region: 'x', accepted: 1, duplicate: false }, 202)
      res.writeHead(404).end()
    }
    for (let i = 0; i < foreign.length; i++) {
      const config = { ...ws.config, installRoot: `${ws.dir}/store-foreign-${i}` }
      await installArtifact(config, { name: 'app', target: '1.0.0', fullOnly: true })
      const before = fetched.length
      // Refused as a malformed plan, so the agent takes the signed full artifact from the edge (ADR 0033).
      const result = await installArtifact(config, { name: 'app', target: '1.1.0' })
      expect(result).toMatchObject({
        method: 'full',
        planFailed: expect.stringMatching(/outside its own paths/),
      })
      // Nothing but manifests, the plan and the blob was requested, all from the edge.
      expect(fetched.slice(before).every((p) => p.startsWith('/v1/artifacts/') || p === '/v1/plan')).toBe(
        true,
      )
      const installed = await readFile(join(new ArtifactStore(config.installRoot, 'app').currentLink, 'blob'))
      expect(createHash('sha256').update(installed).digest('hex')).toBe(sha2)
    }
  })

  it("honours a short Retry-After on 503 (the edge's storage-fault answer) a bounded number of times", async () => {
    const honest = await signManifest(manifestOf('1.0.0'), ws.key)
    const scenarios: Array<{ failures: number; retryAfter: string; ok: boolean; requests: number }> = [
      { failures: 2, retryAfter: '1', ok: true, requests: 3 },
      { failures: 99, retryAfter: '0', ok: false, requests: 3 },
      { failures: 1, retryAfter: '3600', ok: false, requests: 1 },
      // Not delta-seconds: read as no Retry-After, so the agent's own back-off applies.
      { failures: 1, retryAfter: 'soon', ok: true, requests: 2 },
    ]
    for (const [i, scenario] of scenarios.entries()) {
      let manifestRequests = 0
      handler = (req, res) => {
        const path = new URL(req.url ?? '/', baseUrl).pathname
        if (path === '/v1/artifacts/app/1.0.0/manifest') {
          if (++manifestRequests <= scenario.failures) {
            res.writeHead(503, {
              'content-type': 'application/problem+json',
              'retry-after': scenario.retryAfter,
            })
            return res.end(JSON.stringify({ type: 'x', title: 'unavailable', status: 503 }))
          }
          return json(res, honest)
        }
        if (path === '/v1/artifacts/app/1.0.0/blob') return honestBlob(req, res)
        if (path === '/v1/telemetry') return json(res, { region: 'x', accepted: 1, duplicate: false }, 202)
        res.writeHead(404).end()
      }
      const config = { ...ws.config, installRoot: `${ws.dir}/store-retry-${i}` }
      const outcome = await installArtifact(config, { name: 'app', target: '1.0.0', fullOnly: true }).then(
        (r) => r,
        (e: unknown) => e,
      )
      expect(manifestRequests, JSON.stringify(scenario)).toBe(scenario.requests)
      if (scenario.ok) expect(outcome).toMatchObject({ version: '1.0.0' })
      else {
        expect(outcome).toBeInstanceOf(AgentError)
        expect((outcome as AgentError).message).toContain('HTTP 503')
      }
    }
  })

  it('slow retrieval: a manifest answer that trickles a byte at a time ends in a network error', async () => {
    let trickling: ReturnType<typeof setInterval> | undefined
    handler = (_req, res) => {
      // Not kept alive: the next test must not get this socket, which the agent gave up on.
      res.writeHead(200, { 'content-type': 'application/json', connection: 'close' })
      res.write('{"signed":')
      // Never silent long enough for the stall timer: a space every 20 ms, forever.
      trickling = setInterval(() => res.write(' '), 20)
      res.on('close', () => clearInterval(trickling))
    }
    const edge = new EdgeClient(baseUrl, fetch, { minRate: { bytesPerSecond: 1024, windowMs: 400 } })
    const started = Date.now()
    const error = await edge.manifest('app', '1.0.0').then(
      () => null,
      (e: unknown) => e,
    )
    clearInterval(trickling)
    expect(error).toBeInstanceOf(AgentError)
    expect((error as AgentError).code).toBe('network')
    expect((error as AgentError).details.slow).toBe(true)
    expect(Date.now() - started).toBeLessThan(5000)
    // No closeAllConnections(): the agent dropped this socket itself, and closing the idle sockets
    // undici keeps would fail the next test's first fetch.
  })

  it('slow retrieval: a manifest answer that stalls ends in a network error, not a hang', async () => {
    handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.write('{"signed":')
      // …and nothing more, with the connection left open.
    }
    const edge = new EdgeClient(baseUrl, fetch, { stallMs: 300 })
    const started = Date.now()
    const error = await edge.manifest('app', '1.0.0').then(
      () => null,
      (e: unknown) => e,
    )
    expect(error).toBeInstanceOf(AgentError)
    expect((error as AgentError).code).toBe('network')
    expect((error as AgentError).details.stalled).toBe(true)
    expect(Date.now() - started).toBeLessThan(5000)
    server.closeAllConnections()
  })

  it("slow retrieval: an edge that never sends headers ends in a network error, not undici's 300 s", async () => {
    // Its own server (a fresh origin, so no connection a test before left half-used is reused): it
    // accepts the connection and then says nothing at all.
    const silent = createServer(() => undefined)
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve))
    const silentUrl = `http://127.0.0.1:${(silent.address() as AddressInfo).port}`
    const edge = new EdgeClient(silentUrl, fetch, { stallMs: 300 })
    const started = Date.now()
    const error = await edge.index('app').then(
      () => null,
      (e: unknown) => e,
    )
    expect(error).toBeInstanceOf(AgentError)
    expect((error as AgentError).code).toBe('network')
    expect((error as AgentError).message).toBe('the edge sent no answer within 300 ms')
    expect(Date.now() - started).toBeLessThan(5000)
    // A caller's own abort still reads as an abort, not as the edge's silence.
    const caller = new AbortController()
    const asked = withHeaderTimeout(fetch, 10_000)(`${silentUrl}/v1/artifacts/app`, { signal: caller.signal })
    caller.abort(new Error('stopped by the caller'))
    await expect(asked).rejects.toThrow('stopped by the caller')
    silent.closeAllConnections()
    await new Promise((resolve) => silent.close(resolve))
  })
})
