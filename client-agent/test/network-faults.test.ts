import { readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import type { AgentConfig } from '../config.ts'
import { runDaemonCycle } from '../daemon/daemon.ts'
import { StagingArea } from '../daemon/staging.ts'
import { downloadVerified } from '../download.ts'
import { installArtifact } from '../install.ts'
import { ArtifactStore } from '../store.ts'
import { type UninstallResult, uninstallArtifact } from '../uninstall.ts'
import { publishInsertion, publishWithDelta } from './delta-update.ts'
import { type Fault, type FaultProxy, type SeenRequest, startFaultProxy } from './fault-proxy.ts'
import { agentFailure, expectSameBytes, jsonCli, writeArtifact } from './fixtures.ts'
import { useEdgeWorkspace } from './local-edge.ts'

/**
 * The agent against a faulty network between it and the real edge: a proxy (fault-proxy.ts) resets,
 * truncates, stalls or rewrites the edge's answers. What download.test.ts proves against a bare range
 * server is proved here end to end where the edge's own headers (Content-Range, ETag) matter.
 */

const suite = useEdgeWorkspace()

let proxy: FaultProxy | undefined
afterEach(async () => {
  await proxy?.close()
  proxy = undefined
})

/** A device of its own behind `proxy`, so tests do not see each other's installs. */
function device(id: string, via: FaultProxy): AgentConfig {
  return { ...suite.ws.config, edgeUrl: via.url, installRoot: join(suite.ws.dir, `store-${id}`) }
}

const isBlob = (request: SeenRequest, name: string) => request.path.endsWith(`/${name}/1.0.0/blob`)

/** `name@1.0.0` published (random bytes: no delta is worth it) and a proxy in front of the edge. */
async function publishedBehind(
  name: string,
  size: number,
  faults: (blobRequest: number) => Fault | undefined,
) {
  const artifact = await writeArtifact(suite.ws.dir, `${name}.bin`, size)
  const published = await suite.publish(artifact.path, name, '1.0.0')
  let blobRequests = 0
  proxy = await startFaultProxy(suite.edge.url, (request) =>
    isBlob(request, name) ? faults(++blobRequests) : undefined,
  )
  return { artifact, published, proxy }
}

const blobRanges = (via: FaultProxy, name: string) =>
  via
    .seen()
    .filter((r) => isBlob(r, name))
    .map((r) => r.range ?? null)

describe('a full download through a faulty network', () => {
  for (const kind of ['reset', 'truncate'] as const) {
    it(`resumes where a ${kind} cut the body, not from byte 0`, async () => {
      const { artifact, proxy } = await publishedBehind(`nf-${kind}`, 300_000, (n) =>
        n === 1 ? { kind } : undefined,
      )
      const config = device(kind, proxy)
      const result = await installArtifact(config, { name: `nf-${kind}`, fullOnly: true })
      const ranges = blobRanges(proxy, `nf-${kind}`)
      expect(ranges).toEqual([null, 'bytes=150000-'])
      expect(result).toMatchObject({ method: 'full', bytesDownloaded: 300_000 })
      const store = new ArtifactStore(config.installRoot, `nf-${kind}`)
      expectSameBytes(await readFile(join(store.currentLink, 'blob')), artifact.bytes)
      expect(await readdir(join(store.dir, 'partial'))).toEqual([])
    })
  }

  it('restarts from byte 0 when a cache answers the resume with a 200 of the whole file', async () => {
    const { artifact, proxy } = await publishedBehind('nf-200', 200_000, (n) =>
      n === 1 ? { kind: 'reset' } : n === 2 ? { kind: 'ignore-range' } : undefined,
    )
    const config = device('200', proxy)
    const result = await installArtifact(config, { name: 'nf-200', fullOnly: true })
    expect(blobRanges(proxy, 'nf-200')).toEqual([null, 'bytes=100000-'])
    expect(result).toMatchObject({ method: 'full', resumedFrom: 0 })
    const store = new ArtifactStore(config.installRoot, 'nf-200')
    expectSameBytes(await readFile(join(store.currentLink, 'blob')), artifact.bytes)
  })

  it('never splices a 206 of another range into the file: it asks for the whole file instead', async () => {
    // The resume (bytes=100000-) is answered with the edge's honest 206 of bytes=0-: another range,
    // as its Content-Range says. Written at the offset asked for it would put byte 0 at 100000.
    const { artifact, proxy } = await publishedBehind('nf-other', 200_000, (n) =>
      n === 1 ? { kind: 'reset' } : n === 2 ? { kind: 'other-range', from: 0 } : undefined,
    )
    const config = device('other', proxy)
    const result = await installArtifact(config, { name: 'nf-other', fullOnly: true })
    expect(blobRanges(proxy, 'nf-other')).toEqual([null, 'bytes=100000-', null])
    expect(result).toMatchObject({ method: 'full', fallbacks: [] })
    const store = new ArtifactStore(config.installRoot, 'nf-other')
    expectSameBytes(await readFile(join(store.currentLink, 'blob')), artifact.bytes)
  })

  it('never writes a 206 whose Content-Range names another start than asked, even with the right bytes', async () => {
    const { artifact, proxy } = await publishedBehind('nf-lie', 200_000, (n) =>
      n === 1 ? { kind: 'reset' } : n === 2 ? { kind: 'lie-content-range', from: 5 } : undefined,
    )
    const config = device('lie', proxy)
    await installArtifact(config, { name: 'nf-lie', fullOnly: true })
    expect(blobRanges(proxy, 'nf-lie')).toEqual([null, 'bytes=100000-', null])
    const store = new ArtifactStore(config.installRoot, 'nf-lie')
    expectSameBytes(await readFile(join(store.currentLink, 'blob')), artifact.bytes)
  })

  it('gives up on a network that keeps answering the wrong range, with a network error and no bytes written', async () => {
    const { proxy } = await publishedBehind('nf-always', 100_000, (n) =>
      n === 1 ? { kind: 'reset' } : { kind: 'other-range', from: 10 },
    )
    const config = device('always', proxy)
    const failure = await agentFailure(installArtifact(config, { name: 'nf-always', fullOnly: true }))
    expect(failure.code).toBe('network')
    expect(failure.message).toMatch(/Content-Range/)
    // The partial keeps the half the first answer delivered (to be resumed), nothing of the others.
    const store = new ArtifactStore(config.installRoot, 'nf-always')
    expect((await readFile(store.partialPath('1.0.0'))).length).toBe(50_000)
  })

  it('asks for the whole file when a cache answers the resume with 416, instead of failing every run', async () => {
    const { artifact, proxy } = await publishedBehind('nf-416', 100_000, (n) =>
      n === 1 ? { kind: 'reset' } : { kind: 'unsatisfiable' },
    )
    const config = device('416', proxy)
    const result = await installArtifact(config, { name: 'nf-416', fullOnly: true })
    expect(blobRanges(proxy, 'nf-416')).toEqual([null, 'bytes=50000-', null])
    expect(result).toMatchObject({ method: 'full', resumedFrom: 0 })
    const store = new ArtifactStore(config.installRoot, 'nf-416')
    expectSameBytes(await readFile(join(store.currentLink, 'blob')), artifact.bytes)
  })

  it('resumes after a stalled body and retries a stalled answer, within the stall timer', async () => {
    const { artifact, published, proxy } = await publishedBehind('nf-stall', 100_000, (n) =>
      n === 1 ? { kind: 'stall-body' } : n === 2 ? { kind: 'stall-headers' } : undefined,
    )
    const dir = join(suite.ws.dir, 'stall')
    const started = Date.now()
    const outcome = await downloadVerified({
      url: `${proxy.url}/v1/artifacts/nf-stall/1.0.0/blob`,
      partialPath: `${dir}-partial`,
      size: published.size,
      sha256: published.sha256,
      stallMs: 300,
    })
    expect(Date.now() - started).toBeLessThan(5_000)
    expect(blobRanges(proxy, 'nf-stall')).toEqual([null, 'bytes=50000-', 'bytes=50000-'])
    expect(outcome).toEqual({ resumedFrom: 0, fetched: 100_000 })
    expectSameBytes(await readFile(`${dir}-partial`), artifact.bytes)
  })
})

describe('a prefetch through a faulty network', () => {
  it('notices an uninstall before it retries a cut download, and fetches nothing more', async () => {
    const name = 'nf-gone'
    const v1 = await writeArtifact(suite.ws.dir, `${name}-1.bin`, 20_000)
    const v2 = await writeArtifact(suite.ws.dir, `${name}-2.bin`, 400_000)
    await suite.publish(v1.path, name, '1.0.0')
    let blobRequests = 0
    proxy = await startFaultProxy(suite.edge.url, (request) =>
      request.path.endsWith(`/${name}/1.1.0/blob`) && ++blobRequests === 1 ? { kind: 'reset' } : undefined,
    )
    const config = device('gone', proxy)
    await installArtifact(config, { name })
    await suite.publish(v2.path, name, '1.1.0')
    // `deltaport uninstall` runs while the first answer's body flows; the proxy then cuts it.
    let uninstalled: UninstallResult | null = null
    const uninstallDuringBody: typeof fetch = async (input, init) => {
      const response = await fetch(input, init)
      const url = input instanceof Request ? input.url : String(input)
      if (uninstalled === null && url.endsWith(`/${name}/1.1.0/blob`))
        uninstalled = await uninstallArtifact(config, { name })
      return response
    }
    const cycle = await runDaemonCycle(config, { loadSampler: () => 0, fetchImpl: uninstallDuringBody })
    expect(uninstalled).toMatchObject({ removed: [{ name, versions: ['1.0.0'] }] })
    expect(cycle.failures).toEqual([])
    expect(cycle.dropped).toContainEqual({ name, version: '1.1.0' })
    // One request for the blob: the cut one. No retry after the uninstall, let alone the whole artifact.
    expect(proxy.seen().filter((r) => r.path.endsWith(`/${name}/1.1.0/blob`))).toHaveLength(1)
    const staging = new StagingArea(config.installRoot)
    expect(await staging.holds(name)).toBe(false)
    expect(await readdir(staging.partialDir)).toEqual([])
  })

  it('notices an uninstall before the first range of a delta plan, and fetches none of it', async () => {
    const name = 'nf-gone-delta'
    const v1 = await writeArtifact(suite.ws.dir, `${name}-1.bin`, 300_000)
    await suite.publish(v1.path, name, '1.0.0')
    proxy = await startFaultProxy(suite.edge.url, () => undefined)
    const config = device('gone-delta', proxy)
    await installArtifact(config, { name })
    const v2 = join(suite.ws.dir, `${name}-2.bin`)
    await writeFile(
      v2,
      Buffer.concat([v1.bytes.subarray(0, 150_000), Buffer.from('patch'), v1.bytes.subarray(150_000)]),
    )
    await publishWithDelta(suite, name, v2, '1.1.0')
    // `deltaport uninstall` runs once the edge has answered the plan, before anything of it is fetched.
    let uninstalled: UninstallResult | null = null
    const uninstallAfterPlan: typeof fetch = async (input, init) => {
      const response = await fetch(input, init)
      const url = input instanceof Request ? input.url : String(input)
      if (uninstalled === null && url.endsWith('/v1/plan'))
        uninstalled = await uninstallArtifact(config, { name })
      return response
    }
    const before = proxy.seen().length
    const cycle = await runDaemonCycle(config, { loadSampler: () => 0, fetchImpl: uninstallAfterPlan })
    expect(uninstalled).toMatchObject({ removed: [{ name, versions: ['1.0.0'] }] })
    expect(cycle.failures).toEqual([])
    expect(cycle.dropped).toContainEqual({ name, version: '1.1.0' })
    // Nothing after the plan: no delta range, no chunk index, no full download as a fallback.
    const asked = proxy
      .seen()
      .slice(before)
      .map((r) => r.path)
    expect(asked).toContain('/v1/plan')
    expect(asked.slice(asked.indexOf('/v1/plan') + 1)).toEqual([])
    const staging = new StagingArea(config.installRoot)
    expect(await staging.holds(name)).toBe(false)
    expect(await readdir(staging.partialDir)).toEqual([])
  })
})

describe('a cheaper plan through a faulty network', () => {
  /**
   * `name@1.0.0` installed by a device behind a proxy whose faults `decide` picks for the artifact's
   * requests (its manifests, blobs, chunk index and delta streams), and 1.1.0 published
   * with a delta from it and a chunk index (400 KB inserted: one chunk-sync range, or a 16-block stream).
   */
  async function updatable(name: string, decide: (request: SeenRequest) => Fault | undefined) {
    const v1 = await writeArtifact(suite.ws.dir, `${name}-1.bin`, 300_000)
    await suite.publish(v1.path, name, '1.0.0')
    proxy = await startFaultProxy(suite.edge.url, (request) =>
      request.path.includes(`/${name}/`) ? decide(request) : undefined,
    )
    const config = device(name, proxy)
    await installArtifact(config, { name })
    const v2Bytes = await publishInsertion(suite, name, v1.bytes)
    return { config, v2Bytes, store: new ArtifactStore(config.installRoot, name) }
  }

  // A chunk-sync range is tried four times (network-retries.test.ts): these cut or fail every one.
  it('takes the full download when chunk-sync ranges are cut, instead of failing as a bug (exit 70)', async () => {
    const { config, v2Bytes, store } = await updatable('nf-cs-cut', (request) =>
      request.range !== undefined && request.path.endsWith('/blob') ? { kind: 'reset' } : undefined,
    )
    const result = await installArtifact(config, { name: 'nf-cs-cut' })
    expect(result).toMatchObject({ version: '1.1.0', method: 'full' })
    expect(result.fallbacks).toEqual([expect.stringMatching(/^chunk-sync: .*connection/)])
    expectSameBytes(await readFile(join(store.currentLink, 'blob')), v2Bytes)
    // The plan's work files (chunk index, rebuilt output, delta payload and journal) are gone too.
    expect(await readdir(join(store.dir, 'partial'))).toEqual([])
  })

  it('takes the full download when chunk-sync ranges get a 502 error page', async () => {
    const { config, v2Bytes, store } = await updatable('nf-cs-502', (request) =>
      request.range !== undefined ? { kind: 'html-error' } : undefined,
    )
    const result = await installArtifact(config, { name: 'nf-cs-502' })
    expect(result).toMatchObject({ version: '1.1.0', method: 'full' })
    expect(result.fallbacks).toEqual([expect.stringMatching(/^chunk-sync: .*HTTP 502/)])
    expectSameBytes(await readFile(join(store.currentLink, 'blob')), v2Bytes)
    // The plan's work files (chunk index, rebuilt output, delta payload and journal) are gone too.
    expect(await readdir(join(store.dir, 'partial'))).toEqual([])
  })

  it('takes the full download when a cache answers every range with a 200 of the whole object', async () => {
    const { config, v2Bytes, store } = await updatable('nf-no-ranges', (request) =>
      request.range !== undefined ? { kind: 'ignore-range' } : undefined,
    )
    const result = await installArtifact(config, { name: 'nf-no-ranges' })
    expect(result).toMatchObject({ version: '1.1.0', method: 'full' })
    // Chunk-sync, then the delta: each says why, in words (no bytes of the stream in the message).
    expect(result.fallbacks).toEqual([
      expect.stringMatching(/^chunk-sync: expected 206/),
      expect.stringMatching(/^delta: .*HTTP 200.*ignores Range/),
    ])
    expectSameBytes(await readFile(join(store.currentLink, 'blob')), v2Bytes)
    // The plan's work files (chunk index, rebuilt output, delta payload and journal) are gone too.
    expect(await readdir(join(store.dir, 'partial'))).toEqual([])
  })

  it('cancels the whole object a chunk-sync range was answered with, not leaving it on the connection', async () => {
    const { config, v2Bytes, store } = await updatable('nf-no-ranges-cancel', (request) =>
      request.range !== undefined ? { kind: 'ignore-range' } : undefined,
    )
    // The 200 to chunk-sync's range (the whole 700 kB blob): read to its end or cancelled, or it holds
    // its connection (and the edge's) until the garbage collector gets to it.
    let left: 'unread' | 'done' | undefined
    const watching: typeof fetch = async (input, init) => {
      const response = await fetch(input, init)
      const url = input instanceof Request ? input.url : String(input)
      const asked = new Headers(init?.headers).get('range')
      if (!url.endsWith('/1.1.0/blob') || asked === null || response.status !== 200 || !response.body)
        return response
      const reader = response.body.getReader()
      left = 'unread'
      const body = new ReadableStream<Uint8Array>({
        async pull(controller) {
          const { done, value } = await reader.read()
          if (done) {
            left = 'done'
            controller.close()
          } else controller.enqueue(value)
        },
        async cancel(reason) {
          left = 'done'
          await reader.cancel(reason)
        },
      })
      return new Response(body, { status: response.status, headers: response.headers })
    }
    const result = await installArtifact(config, { name: 'nf-no-ranges-cancel', fetchImpl: watching })
    expect(result.fallbacks?.[0]).toMatch(/^chunk-sync: expected 206/)
    expect(left).toBe('done')
    expectSameBytes(await readFile(join(store.currentLink, 'blob')), v2Bytes)
  })

  it('retries a cut delta-stream range from the edge and keeps the delta', async () => {
    // Chunk-sync is made to fail (a 200 for its range: the next plan), so the delta stream is fetched.
    let deltaRanges = 0
    const { config, v2Bytes, store } = await updatable('nf-delta-cut', (request) => {
      if (request.range === undefined) return undefined
      if (request.path.endsWith('/blob')) return { kind: 'ignore-range' }
      return request.path.startsWith('/v1/deltas/') && ++deltaRanges === 2 ? { kind: 'reset' } : undefined
    })
    const result = await installArtifact(config, { name: 'nf-delta-cut' })
    expect(result).toMatchObject({ version: '1.1.0', method: 'delta' })
    expect(result.fallbacks).toEqual([expect.stringMatching(/^chunk-sync: expected 206/)])
    // The cut range was asked again (same range), and nothing else twice.
    const asked =
      proxy
        ?.seen()
        .filter((r) => r.path.startsWith('/v1/deltas/'))
        .map((r) => r.range) ?? []
    expect(asked.length).toBe(new Set(asked).size + 1)
    expectSameBytes(await readFile(join(store.currentLink, 'blob')), v2Bytes)
  })

  it('asks for a new plan when the edge no longer serves a delta stream as the plan named it', async () => {
    // The plan names the stream it saw (`v=`); retention or a `stream` config change may replace or
    // remove it before the device's first range. Here the first range asks under a stale name, and the
    // edge answers as it does then: 404, "ask for a new plan". Chunk-sync fails first (a 200 for its range).
    let deltaRequests = 0
    const { config, v2Bytes, store } = await updatable('nf-delta-stale', (request) => {
      if (request.range === undefined) return undefined
      if (request.path.endsWith('/blob')) return { kind: 'ignore-range' }
      if (!request.path.startsWith('/v1/deltas/') || ++deltaRequests !== 1) return undefined
      return { kind: 'other-path', path: request.path.replace(/([?&]v=)[^&]*/, '$1stale.4096.16.2') }
    })
    const result = await installArtifact(config, { name: 'nf-delta-stale' })
    expect(result).toMatchObject({ version: '1.1.0', method: 'delta' })
    expect(result.fallbacks).toEqual([
      expect.stringMatching(/^chunk-sync: expected 206/),
      expect.stringMatching(/^delta: .*HTTP 404.*ask for a new plan/),
    ])
    expectSameBytes(await readFile(join(store.currentLink, 'blob')), v2Bytes)
    expect(await readdir(join(store.dir, 'partial'))).toEqual([])
  })

  it('a connection cut while an answer is read is a network error (exit 4), not a bug', async () => {
    const { config } = await updatable('nf-json-cut', (request) =>
      request.path.endsWith('/1.1.0/manifest') ? { kind: 'reset' } : undefined,
    )
    const failure = await agentFailure(installArtifact(config, { name: 'nf-json-cut' }))
    expect(failure.code).toBe('network')
    expect(await new ArtifactStore(config.installRoot, 'nf-json-cut').installedVersions()).toEqual(['1.0.0'])
  })
})

describe('deltaport install through a faulty network, as a user runs it', () => {
  const cases: Array<{
    label: string
    fault: (request: SeenRequest) => Fault | undefined
    exit: number
    code: string
    /** What is left of the artifact in the store: nothing, or the half a cut download kept to resume. */
    left: 'nothing' | 'partial'
  }> = [
    {
      label: 'every manifest answer cut mid-body',
      fault: (r) => (r.path.endsWith('/manifest') ? { kind: 'reset' } : undefined),
      exit: 4,
      code: 'network',
      left: 'nothing',
    },
    {
      label: 'a manifest that is not JSON (a captive portal)',
      fault: (r) => (r.path.endsWith('/manifest') ? { kind: 'garbage-json' } : undefined),
      exit: 7,
      code: 'untrusted-manifest',
      left: 'nothing',
    },
    {
      label: 'an HTML 502 page for the index',
      fault: (r) => (/^\/v1\/artifacts\/[^/]+$/.test(r.path) ? { kind: 'html-error' } : undefined),
      exit: 5,
      code: 'edge-rejected',
      left: 'nothing',
    },
    {
      label: 'a blob answered 503 without Retry-After, every time',
      fault: (r) => (r.path.endsWith('/blob') ? { kind: 'unavailable' } : undefined),
      exit: 5,
      code: 'edge-rejected',
      left: 'nothing',
    },
    {
      label: 'a blob cut, then every resume answered with another range',
      fault: (r) =>
        r.path.endsWith('/blob')
          ? r.range === undefined
            ? { kind: 'reset' }
            : { kind: 'other-range', from: 7 }
          : undefined,
      exit: 4,
      code: 'network',
      left: 'partial',
    },
  ]
  for (const [i, testCase] of cases.entries()) {
    it(`${testCase.label}: exit ${testCase.exit} (${testCase.code})`, async () => {
      const name = `nf-cli-${i}`
      const artifact = await writeArtifact(suite.ws.dir, `${name}.bin`, 60_000)
      await suite.publish(artifact.path, name, '1.0.0')
      proxy = await startFaultProxy(suite.edge.url, (r) =>
        r.path.includes(`/${name}`) ? testCase.fault(r) : undefined,
      )
      const config = device(`cli-${i}`, proxy)
      const configFile = join(suite.ws.dir, `cli-${i}.json`)
      await writeFile(configFile, JSON.stringify(config))
      const started = Date.now()
      const run = await jsonCli(configFile, ['install', name])
      expect(run.code, run.stderr ?? run.stdout).toBe(testCase.exit)
      expect(JSON.parse(run.stdout ?? '')).toMatchObject({ ok: false, error: { code: testCase.code } })
      // Within the download's bounded retries (5 attempts in a row, backing off to 4 s): no hang.
      expect(Date.now() - started).toBeLessThan(20_000)
      const store = new ArtifactStore(config.installRoot, name)
      expect(await store.installedVersions()).toEqual([])
      if (testCase.left === 'nothing')
        expect(await readdir(config.installRoot).catch(() => [])).not.toContain(name)
      else expect((await readFile(store.partialPath('1.0.0'))).length).toBe(30_000)
    }, 30_000)
  }
})
