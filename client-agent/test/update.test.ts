import { spawnSync } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { readFile, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { gunzipSync, gzipSync } from 'node:zlib'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { applyDelta } from '../../delta/index.ts'
import { PlanRequest, PlanResponse } from '../../schemas/plan.ts'
import { APPLY_BYTES_PER_EXPANDED_BYTE, APPLY_FIXED_BYTES } from '../codec/archive-budget.ts'
import { nativeDeflateEngine } from '../codec/native-deflate.ts'
import { installArtifact } from '../install.ts'
import { publishArtifact } from '../publish.ts'
import { buildDeltasFromPrevious } from '../publish-deltas.ts'
import { ArtifactStore } from '../store.ts'
import {
  agentFailure,
  editedTextGzip,
  expectSameBytes,
  longestStall,
  makeWorkspace,
  patchedCode,
  type Workspace,
} from './fixtures.ts'
import { type LocalEdge, startLocalEdge, TEST_TOKEN } from './local-edge.ts'

let edge: LocalEdge
let ws: Workspace
const versions: Buffer[] = []

/** Three releases of a 2 MiB "binary": each edits a few places, as a patch release would. */
function release(previous: Buffer | undefined, seed: number): Buffer {
  if (!previous) return randomBytes(2 * 1024 * 1024)
  const next = Buffer.from(previous)
  for (let i = 0; i < 6; i++) randomBytes(300).copy(next, (seed * 7919 + i * 300_007) % (next.length - 300))
  return Buffer.concat([next.subarray(0, 1_000_000), randomBytes(2000), next.subarray(1_000_000)])
}

async function publishWithDeltas(name: string, version: string, bytes: Buffer, fromLast: number) {
  const file = join(ws.dir, `${name}-${version}.bin`)
  await writeFile(file, bytes)
  const deltas = await buildDeltasFromPrevious(edge.url, name, file, fromLast)
  await publishArtifact({
    edgeUrl: edge.url,
    token: TEST_TOKEN,
    keyFile: ws.keyFile,
    file,
    name,
    version,
    deltas,
  })
  return deltas
}

beforeAll(async () => {
  edge = await startLocalEdge()
  ws = await makeWorkspace(edge.url)
  for (let i = 0; i < 3; i++) versions.push(release(versions[i - 1], i))
  await publishWithDeltas('app', '1.0.0', versions[0]!, 3)
  // 1.1.0 gets a delta from 1.0.0; 1.2.0 only from 1.1.0, so 1.0.0 → 1.2.0 must chain.
  expect((await publishWithDeltas('app', '1.1.0', versions[1]!, 1)).map((d) => d.from)).toEqual(['1.0.0'])
})
afterAll(async () => {
  await edge?.dispose()
})

describe('deltaport update through the planner', () => {
  it('updates by one delta, moving a small fraction of the artifact', async () => {
    await installArtifact(ws.config, { name: 'app', target: '1.0.0' })
    const result = await installArtifact(ws.config, { name: 'app', target: '1.1.0' })
    expect(result.method).toBe('delta')
    expect(result.transfer?.reason).toEqual(expect.any(String))
    expect(result.bytesDownloaded).toBeLessThan(versions[1]!.length / 20)
    const store = new ArtifactStore(ws.config.installRoot, 'app')
    expectSameBytes(await readFile(join(store.currentLink, 'blob')), versions[1]!)
  })

  it('updates a GNU gzip release tarball by a delta, rebuilding its exact bytes', async () => {
    // `tar czf` tarballs are deflated by GNU gzip, which no zlib setting reproduces.
    const gnuGzip = (content: Uint8Array) => {
      const r = spawnSync('gzip', ['-9nc'], { input: content, maxBuffer: 1 << 26 })
      expect(r.status).toBe(0)
      return Buffer.from(r.stdout)
    }
    const { text, edited } = patchedCode()
    const [v1, v2] = [gnuGzip(text), gnuGzip(edited)]
    await publishWithDeltas('tarball', '1.0.0', v1, 1)
    const [delta] = await publishWithDeltas('tarball', '1.1.0', v2, 1)
    expect(delta?.from).toBe('1.0.0')
    await installArtifact(ws.config, { name: 'tarball', target: '1.0.0' })
    const result = await installArtifact(ws.config, { name: 'tarball', target: '1.1.0' })
    expect(result.method).toBe('delta')
    // Manifest and delta only: the content diff plus a few bytes per block (about 4 KB of 114 KB).
    expect(result.bytesDownloaded).toBeLessThan(v2.length / 15)
    const store = new ArtifactStore(ws.config.installRoot, 'tarball')
    expectSameBytes(await readFile(join(store.currentLink, 'blob')), v2)
  })

  it('holds delta streams to the device bandwidth cap', async () => {
    const capped = await makeWorkspace(edge.url)
    capped.config.trustedKeys = ws.config.trustedKeys
    capped.config.bandwidthCapBps = 20_000
    await installArtifact({ ...capped.config, bandwidthCapBps: 0 }, { name: 'app', target: '1.0.0' })
    const began = Date.now()
    const result = await installArtifact(capped.config, { name: 'app', target: '1.1.0' })
    expect(result.method).toBe('delta')
    // Loopback moves this in milliseconds uncapped; at 20 kB/s it cannot take less than bytes / cap.
    expect(result.bytesDownloaded).toBeGreaterThan(5_000)
    expect(Date.now() - began).toBeGreaterThanOrEqual((result.bytesDownloaded / 20_000) * 1000 * 0.95)
  })

  it('chains deltas when there is no direct one, verifying the intermediate version', async () => {
    await publishWithDeltas('app', '1.2.0', versions[2]!, 1)
    const other = await makeWorkspace(edge.url)
    other.config.trustedKeys = ws.config.trustedKeys
    await installArtifact(other.config, { name: 'app', target: '1.0.0' })
    const result = await installArtifact(other.config, { name: 'app', target: 'stable' })
    expect(result).toMatchObject({ version: '1.2.0', method: 'chain' })
    expect(result.bytesDownloaded).toBeLessThan(versions[2]!.length / 10)
    const store = new ArtifactStore(other.config.installRoot, 'app')
    expectSameBytes(await readFile(join(store.currentLink, 'blob')), versions[2]!)
  })

  it('falls to chunk-sync when the installed bytes were modified locally', async () => {
    const local = await makeWorkspace(edge.url)
    local.config.trustedKeys = ws.config.trustedKeys
    await installArtifact(local.config, { name: 'app', target: '1.0.0' })
    const store = new ArtifactStore(local.config.installRoot, 'app')
    const blob = store.blobPath('1.0.0')
    const edited = await readFile(blob)
    edited.fill(0, 500_000, 520_000)
    await writeFile(blob, edited)
    const result = await installArtifact(local.config, { name: 'app', target: '1.1.0' })
    expect(result.method).toBe('chunk-sync')
    expect(result.fallbacks).toEqual([
      `delta: the installed app@1.0.0 (${blob}) no longer has its signed bytes, so no delta applies to it`,
    ])
    expect(result.bytesDownloaded).toBeLessThan(versions[1]!.length / 4)
    expectSameBytes(await readFile(join(store.currentLink, 'blob')), versions[1]!)
  })

  it('downloads the whole artifact when the installed blob is missing, and says why', async () => {
    const local = await makeWorkspace(edge.url)
    local.config.trustedKeys = ws.config.trustedKeys
    await installArtifact(local.config, { name: 'app', target: '1.0.0' })
    const store = new ArtifactStore(local.config.installRoot, 'app')
    await rm(store.blobPath('1.0.0'))
    const result = await installArtifact(local.config, { name: 'app', target: '1.1.0' })
    expect(result).toMatchObject({ method: 'full', previous: '1.0.0' })
    expect(result.fallbacks).toEqual([
      `delta: the installed app@1.0.0 has no usable blob (${store.blobPath('1.0.0')} is missing); downloading the whole artifact`,
    ])
    expectSameBytes(await readFile(join(store.currentLink, 'blob')), versions[1]!)
  })

  it('downloads the whole artifact when the edge cannot plan (5xx, not a plan, unreachable); a 4xx still fails', async () => {
    const answers: Record<string, () => Response | Promise<Response>> = {
      'HTTP 500': () => new Response('boom', { status: 500 }),
      'not JSON': () => new Response('<html>', { status: 200, headers: { 'content-type': 'text/html' } }),
      'not a plan': () => Response.json({ strategy: 'teleport' }),
      unreachable: () => Promise.reject(new TypeError('fetch failed')),
    }
    for (const [label, answer] of Object.entries(answers)) {
      const device = await makeWorkspace(edge.url)
      device.config.trustedKeys = ws.config.trustedKeys
      await installArtifact(device.config, { name: 'app', target: '1.0.0' })
      const planless: typeof fetch = (input, init) =>
        String(input).endsWith('/v1/plan') ? Promise.resolve(answer()) : fetch(input, init)
      const result = await installArtifact(device.config, {
        name: 'app',
        target: '1.1.0',
        fetchImpl: planless,
      })
      expect(result, label).toMatchObject({ method: 'full', planFailed: expect.any(String) })
      const store = new ArtifactStore(device.config.installRoot, 'app')
      expectSameBytes(await readFile(join(store.currentLink, 'blob')), versions[1]!)
    }

    // A refused request is not the edge failing: nothing is switched.
    const device = await makeWorkspace(edge.url)
    device.config.trustedKeys = ws.config.trustedKeys
    await installArtifact(device.config, { name: 'app', target: '1.0.0' })
    const refusing: typeof fetch = (input, init) =>
      String(input).endsWith('/v1/plan')
        ? Promise.resolve(Response.json({ title: 'unknown artifact' }, { status: 404 }))
        : fetch(input, init)
    const error = await agentFailure(
      installArtifact(device.config, { name: 'app', target: '1.1.0', fetchImpl: refusing }),
    )
    expect(error.code).toBe('not-found')
    expect((await new ArtifactStore(device.config.installRoot, 'app').state()).current).toBe('1.0.0')
  })

  it('falls back to a cheaper working plan when a delta stream stays corrupt', async () => {
    const broken = await makeWorkspace(edge.url)
    broken.config.trustedKeys = ws.config.trustedKeys
    await installArtifact(broken.config, { name: 'app', target: '1.0.0' })
    // Every delta-stream response arrives with all its bytes flipped: FEC and re-fetches cannot help.
    const corrupting: typeof fetch = async (input, init) => {
      const response = await fetch(input, init)
      if (!String(input).includes('/v1/deltas/') || response.status !== 206) return response
      const bytes = new Uint8Array(await response.arrayBuffer())
      const first = /bytes (\d+)-/.exec(response.headers.get('content-range') ?? '')?.[1]
      if (first !== '0') for (let i = 0; i < bytes.length; i++) bytes[i]! ^= 0x5a
      return new Response(bytes, { status: 206, headers: response.headers })
    }
    const result = await installArtifact(broken.config, {
      name: 'app',
      target: '1.1.0',
      fetchImpl: corrupting,
    })
    expect(result.fallbacks.length).toBeGreaterThan(0)
    expect(['chunk-sync', 'full']).toContain(result.method)
    const store = new ArtifactStore(broken.config.installRoot, 'app')
    expectSameBytes(await readFile(join(store.currentLink, 'blob')), versions[1]!)
  })

  it('refuses a plan that does not lead from the installed version to the target, and downloads it whole', async () => {
    // The releases of `app` under another name, each with a delta from the one before; each device
    // runs 1.0.0 and asks for 1.2.0.
    for (const [i, version] of ['1.0.0', '1.1.0', '1.2.0'].entries())
      await publishWithDeltas('liar', version, versions[i]!, 1)
    const target = {
      size: versions[2]!.length,
      sha256: createHash('sha256').update(versions[2]!).digest('hex'),
    }
    const blobUrl = '/v1/artifacts/liar/1.2.0/blob'
    /** The edge's honest plan for `body`, asked with another target (a plan for the wrong pair). */
    const realPlan = async (body: PlanRequest, to: string): Promise<PlanResponse> => {
      const response = await fetch(`${edge.url}/v1/plan`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ ...body, target: to }),
      })
      return PlanResponse.parse(await response.json())
    }
    const lies: Record<string, (body: PlanRequest) => Promise<PlanResponse>> = {
      // The 1.0.0 → 1.1.0 delta, labelled as the way to 1.2.0: it verifies against 1.1.0's manifest.
      'a chain cut short': async (body) => ({ ...(await realPlan(body, '1.1.0')), to: '1.2.0' }),
      'a delta plan whose step is no delta': async (body) => ({
        ...(await realPlan(body, '1.2.0')),
        strategy: 'delta',
        steps: [{ kind: 'full', from: null, to: '1.2.0', url: blobUrl, ...target }],
      }),
      'a chunk index size that is not the signed one': async (body) => ({
        ...(await realPlan(body, '1.2.0')),
        strategy: 'chunk-sync',
        steps: [
          {
            kind: 'chunk-sync',
            from: '1.0.0',
            to: '1.2.0',
            url: '/v1/artifacts/liar/1.2.0/chunks',
            blobUrl,
            ...target,
            indexSize: 2 ** 40,
            indexSha256: 'a'.repeat(64),
            estimatedBytes: 1000,
            estimate: 'exact',
          },
        ],
      }),
    }
    for (const [label, lie] of Object.entries(lies)) {
      const device = await makeWorkspace(edge.url)
      device.config.trustedKeys = ws.config.trustedKeys
      await installArtifact(device.config, { name: 'liar', target: '1.0.0' })
      const lying: typeof fetch = async (input, init) =>
        String(input).endsWith('/v1/plan')
          ? Response.json(await lie(PlanRequest.parse(JSON.parse(String(init?.body)))))
          : fetch(input, init)
      const result = await installArtifact(device.config, { name: 'liar', target: '1.2.0', fetchImpl: lying })
      expect(result, label).toMatchObject({
        version: '1.2.0',
        method: 'full',
        planFailed: expect.any(String),
      })
      const store = new ArtifactStore(device.config.installRoot, 'liar')
      expectSameBytes(await readFile(store.blobPath('1.2.0')), versions[2]!)
    }
  })

  it('keeps the agent’s event loop turning while an archive delta is applied', async () => {
    // deltaport run proxies the live service on this thread during the install (ADR 0030).
    const { before, after } = editedTextGzip()
    await publishWithDeltas('big-gz', '1.0.0', before, 1)
    const [delta] = await publishWithDeltas('big-gz', '1.1.0', after, 1)
    expect(delta?.method).toBe('archive')
    await installArtifact(ws.config, { name: 'big-gz', target: '1.0.0' })

    // The premise, measured in the same run: applying this delta on the thread stalls it.
    const stalledHere = await longestStall(async () => {
      expectSameBytes(applyDelta(before, delta!.bytes, { deflateEngine: nativeDeflateEngine }), after)
    })
    let method: string | undefined
    const stalledInstalling = await longestStall(async () => {
      method = (await installArtifact(ws.config, { name: 'big-gz', target: '1.1.0' })).method
    })
    expect(method).toBe('delta')
    const store = new ArtifactStore(ws.config.installRoot, 'big-gz')
    expectSameBytes(await readFile(join(store.currentLink, 'blob')), after)
    expect(stalledHere).toBeGreaterThan(60)
    expect(stalledInstalling * 3).toBeLessThan(stalledHere)
  }, 60_000)

  it('refuses an archive delta too big for the device memory, says why, and installs all the same', async () => {
    const { text, edited } = patchedCode()
    await publishWithDeltas('gzapp', '1.0.0', gzipSync(text, { level: 9 }), 1)
    const deltas = await publishWithDeltas('gzapp', '1.1.0', gzipSync(edited, { level: 9 }), 1)
    expect(deltas.map((d) => d.method)).toEqual(['archive'])

    // This device lets an archive expand to 100 kB: the delta's container declares 600 kB, so it is
    // refused before anything is expanded, and the reason reaches the result.
    const small = await makeWorkspace(edge.url)
    small.config.trustedKeys = ws.config.trustedKeys
    small.config.applyMemoryBytes = APPLY_FIXED_BYTES + APPLY_BYTES_PER_EXPANDED_BYTE * 100_000
    await installArtifact(small.config, { name: 'gzapp', target: '1.0.0' })
    const refused = await installArtifact(small.config, { name: 'gzapp', target: '1.1.0' })
    expect(refused.fallbacks[0]).toMatch(/expanded target of 600\d{3} bytes exceeds the limit of 100000/)
    expect(['chunk-sync', 'full']).toContain(refused.method)
    const store = new ArtifactStore(small.config.installRoot, 'gzapp')
    expectSameBytes(gunzipSync(await readFile(join(store.currentLink, 'blob'))), edited)

    // With the memory it needs (the default: what the process can still allocate) the delta is used.
    const roomy = await makeWorkspace(edge.url)
    roomy.config.trustedKeys = ws.config.trustedKeys
    await installArtifact(roomy.config, { name: 'gzapp', target: '1.0.0' })
    const updated = await installArtifact(roomy.config, { name: 'gzapp', target: '1.1.0' })
    expect(updated).toMatchObject({ method: 'delta', fallbacks: [] })
  })
})
