import { randomBytes } from 'node:crypto'
import { readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import type { AgentConfig } from '../config.ts'
import { installArtifact } from '../install.ts'
import { ArtifactStore } from '../store.ts'
import { type Fault, type FaultProxy, type SeenRequest, startFaultProxy } from './fault-proxy.ts'
import { expectSameBytes, jsonCli, writeArtifact } from './fixtures.ts'
import { useEdgeWorkspace } from './local-edge.ts'

/**
 * How long and how often the agent keeps at a faulty network, through a fault-injecting proxy in front
 * of the real edge: a full download's overall bound (`transferMinRateBps`, `transferGraceSeconds`),
 * the back-off between retries of a 503 to a JSON request, and the retries of a chunk-sync range.
 */

const suite = useEdgeWorkspace()

let proxy: FaultProxy | undefined
afterEach(async () => {
  await proxy?.close()
  proxy = undefined
})

/** A device of its own behind `via`, with `extra` config keys. */
function deviceBehind(id: string, via: FaultProxy, extra: Partial<AgentConfig> = {}): AgentConfig {
  return { ...suite.ws.config, edgeUrl: via.url, installRoot: join(suite.ws.dir, `retries-${id}`), ...extra }
}

/** The proxy in front of the edge, deciding faults only for `name`'s requests; also notes when each came. */
async function proxyFor(name: string, decide: (request: SeenRequest) => Fault | undefined) {
  const arrivals = new Map<number, number>()
  proxy = await startFaultProxy(suite.edge.url, (request) => {
    arrivals.set(request.number, performance.now())
    return request.path.includes(`/${name}/`) || request.path.endsWith(`/${name}`)
      ? decide(request)
      : undefined
  })
  return { proxy, arrivedAt: (request: SeenRequest) => arrivals.get(request.number) ?? Number.NaN }
}

describe('a full download from an edge that trickles', () => {
  it('ends at the overall bound with exit 4, not when the trickle is done', async () => {
    // 4 bytes a millisecond (about 4 KB/s): above readBody's 1 KiB/s floor, so every answer counts as
    // progress. 80 kB takes ~20 s that way; the device's bound is 1 s + 80 kB at 20 kB/s = 5 s.
    const name = 'nr-trickle'
    const artifact = await writeArtifact(suite.ws.dir, `${name}.bin`, 80_000)
    await suite.publish(artifact.path, name, '1.0.0')
    const { proxy } = await proxyFor(name, (r) =>
      r.path.endsWith('/blob') ? { kind: 'trickle', trickleMs: 1, bytes: 4 } : undefined,
    )
    const config = deviceBehind('trickle', proxy, { transferMinRateBps: 20_000, transferGraceSeconds: 1 })
    const configFile = join(suite.ws.dir, 'retries-trickle.json')
    await writeFile(configFile, JSON.stringify(config))
    const started = performance.now()
    const run = await jsonCli(configFile, ['install', name])
    const tookMs = performance.now() - started
    expect(run.code, run.stderr ?? run.stdout).toBe(4)
    expect(JSON.parse(run.stdout ?? '')).toMatchObject({
      ok: false,
      error: {
        code: 'network',
        message: expect.stringMatching(/did not finish within 5 s.*transferMinRateBps/),
      },
    })
    // The bound and the CLI's own start (seconds on a busy machine); the trickle alone takes ~20 s.
    expect(tookMs).toBeLessThan(18_000)
    // What arrived is kept for the next run to resume.
    const partial = await stat(new ArtifactStore(config.installRoot, name).partialPath('1.0.0'))
    expect(partial.size).toBeGreaterThan(0)
    expect(partial.size).toBeLessThan(80_000)
  }, 60_000)
})

describe('a full download whose overall bound is longer than a timer holds', () => {
  it('is not cut at once: 3 MB at transferMinRateBps 1 is a bound of ~35 days, past 2^31 - 1 ms', async () => {
    // Node fires a timer of more than 2^31 - 1 ms (~24.8 days) after 1 ms: every such download ended
    // as "did not finish within 3000001 s" before its first byte. The defaults reach it at ~8.8 GB,
    // a device capped at 1 KB/s at ~2.1 GB.
    const name = 'nr-long-bound'
    const artifact = await writeArtifact(suite.ws.dir, `${name}.bin`, 3_000_000)
    await suite.publish(artifact.path, name, '1.0.0')
    const config = {
      ...suite.ws.config,
      installRoot: join(suite.ws.dir, 'retries-long-bound'),
      transferMinRateBps: 1,
      transferGraceSeconds: 1,
    }
    const result = await installArtifact(config, { name })
    expect(result).toMatchObject({ version: '1.0.0', method: 'full' })
    const store = new ArtifactStore(config.installRoot, name)
    expectSameBytes(await readFile(join(store.currentLink, 'blob')), artifact.bytes)
  }, 60_000)
})

describe('a JSON request answered 503', () => {
  const manifestRequests = (via: FaultProxy, name: string) =>
    via.seen().filter((r) => r.path.endsWith(`/${name}/1.0.0/manifest`))

  it('is retried after the back-off, not at once, when the answer has no Retry-After', async () => {
    const name = 'nr-503'
    const artifact = await writeArtifact(suite.ws.dir, `${name}.bin`, 10_000)
    await suite.publish(artifact.path, name, '1.0.0')
    let manifests = 0
    const { proxy, arrivedAt } = await proxyFor(name, (r) =>
      r.path.endsWith('/manifest') && ++manifests <= 2 ? { kind: 'unavailable' } : undefined,
    )
    const config = deviceBehind('503', proxy)
    await installArtifact(config, { name })
    const asked = manifestRequests(proxy, name).map(arrivedAt)
    expect(asked).toHaveLength(3)
    // 500 ms, then 1 s, each jittered to 50–100 %.
    expect(asked[1]! - asked[0]!).toBeGreaterThanOrEqual(240)
    expect(asked[2]! - asked[1]!).toBeGreaterThanOrEqual(490)
    const store = new ArtifactStore(config.installRoot, name)
    expectSameBytes(await readFile(join(store.currentLink, 'blob')), artifact.bytes)
  })

  it("waits the answer's Retry-After when it is longer than the back-off", async () => {
    const name = 'nr-503-after'
    const artifact = await writeArtifact(suite.ws.dir, `${name}.bin`, 10_000)
    await suite.publish(artifact.path, name, '1.0.0')
    let manifests = 0
    const { proxy, arrivedAt } = await proxyFor(name, (r) =>
      r.path.endsWith('/manifest') && ++manifests === 1
        ? { kind: 'unavailable', retryAfter: '2' }
        : undefined,
    )
    await installArtifact(deviceBehind('503-after', proxy), { name })
    const asked = manifestRequests(proxy, name).map(arrivedAt)
    expect(asked).toHaveLength(2)
    expect(asked[1]! - asked[0]!).toBeGreaterThanOrEqual(1_990)
  })
})

describe('a chunk-sync range that fails on the link', () => {
  /**
   * `name@1.0.0` installed behind a proxy, then 1.1.0 published with 400 kB inserted (no delta of the
   * maintainer's: its chunk index makes the plan a chunk-sync of one range).
   */
  async function chunkSyncable(
    name: string,
    decide: (request: SeenRequest) => Fault | undefined,
    extra: Partial<AgentConfig> = {},
  ) {
    const v1 = await writeArtifact(suite.ws.dir, `${name}-1.bin`, 300_000)
    await suite.publish(v1.path, name, '1.0.0')
    const { proxy } = await proxyFor(name, decide)
    const config = deviceBehind(name, proxy, extra)
    await installArtifact(config, { name })
    const v2 = Buffer.concat([
      v1.bytes.subarray(0, 150_000),
      randomBytes(400_000),
      v1.bytes.subarray(150_000),
    ])
    await writeFile(join(suite.ws.dir, `${name}-2.bin`), v2)
    await suite.publish(join(suite.ws.dir, `${name}-2.bin`), name, '1.1.0')
    return { config, v2, proxy, store: new ArtifactStore(config.installRoot, name) }
  }

  const isRange = (r: SeenRequest) => r.range !== undefined && r.path.endsWith('/1.1.0/blob')

  for (const kind of ['reset', 'html-error'] as const) {
    it(`is asked again after a ${kind}, and the update stays a chunk-sync`, async () => {
      let ranges = 0
      const { config, v2, proxy, store } = await chunkSyncable(`nr-cs-${kind}`, (r) =>
        isRange(r) && ++ranges <= 2 ? { kind } : undefined,
      )
      const result = await installArtifact(config, { name: `nr-cs-${kind}` })
      expect(result).toMatchObject({ version: '1.1.0', method: 'chunk-sync', fallbacks: [] })
      // The same range three times, and no full download.
      const asked = proxy.seen().filter((r) => r.path.endsWith('/1.1.0/blob'))
      expect(asked.map((r) => r.range)).toEqual([asked[0]?.range, asked[0]?.range, asked[0]?.range])
      expect(asked[0]?.range).toBeDefined()
      expectSameBytes(await readFile(join(store.currentLink, 'blob')), v2)
    })
  }

  it('answered with another range (a cache in between), is asked again, and the update stays a chunk-sync', async () => {
    // The edge's honest 206 for bytes=0-: the wrong part of the blob, named as such by its Content-Range.
    let ranges = 0
    const { config, v2, proxy, store } = await chunkSyncable('nr-cs-other-range', (r) =>
      isRange(r) && ++ranges <= 2 ? { kind: 'other-range', from: 0 } : undefined,
    )
    const result = await installArtifact(config, { name: 'nr-cs-other-range' })
    expect(result).toMatchObject({ version: '1.1.0', method: 'chunk-sync', fallbacks: [] })
    const asked = proxy.seen().filter(isRange)
    expect(asked).toHaveLength(3)
    expect(new Set(asked.map((r) => r.range)).size).toBe(1)
    expectSameBytes(await readFile(join(store.currentLink, 'blob')), v2)
  })

  it('answered with another range every time, gives way to the full download naming both ranges', async () => {
    const { config, v2, proxy, store } = await chunkSyncable('nr-cs-lie', (r) =>
      isRange(r) ? { kind: 'lie-content-range', from: 5 } : undefined,
    )
    const result = await installArtifact(config, { name: 'nr-cs-lie' })
    expect(result).toMatchObject({ version: '1.1.0', method: 'full' })
    expect(result.fallbacks).toEqual([
      expect.stringMatching(
        /^chunk-sync: chunk range: asked for bytes \d+-\d+ of \d+, got a 206 with Content-Range "bytes 5-/,
      ),
    ])
    expect(proxy.seen().filter(isRange)).toHaveLength(4)
    expectSameBytes(await readFile(join(store.currentLink, 'blob')), v2)
  })

  it('gives way to the full download after four tries', async () => {
    const { config, v2, proxy, store } = await chunkSyncable('nr-cs-always', (r) =>
      isRange(r) ? { kind: 'reset' } : undefined,
    )
    const result = await installArtifact(config, { name: 'nr-cs-always' })
    expect(result).toMatchObject({ version: '1.1.0', method: 'full' })
    expect(result.fallbacks).toEqual([expect.stringMatching(/^chunk-sync: .*connection/)])
    expect(proxy.seen().filter(isRange)).toHaveLength(4)
    expectSameBytes(await readFile(join(store.currentLink, 'blob')), v2)
  })

  it('answered 503 every time is tried four times in all, not four times three', async () => {
    // The edge client's own in-place retries of a 503 (meant for JSON requests) nested inside the
    // range's four tries asked an edge shedding load for the range 12 times.
    const { config, v2, proxy, store } = await chunkSyncable('nr-cs-503', (r) =>
      isRange(r) ? { kind: 'unavailable' } : undefined,
    )
    const result = await installArtifact(config, { name: 'nr-cs-503' })
    expect(result).toMatchObject({ version: '1.1.0', method: 'full' })
    expect(result.fallbacks).toEqual([expect.stringMatching(/^chunk-sync: .*HTTP 503/)])
    expect(proxy.seen().filter(isRange)).toHaveLength(4)
    expectSameBytes(await readFile(join(store.currentLink, 'blob')), v2)
  }, 60_000)

  it('that trickles is cut at the bound, and the full download follows under its own', async () => {
    // The one 400 kB range at 4 KB/s would take 100 s; the bound is 2 s + 700 kB at 200 kB/s = 5.5 s.
    const started = performance.now()
    const { config, v2, proxy, store } = await chunkSyncable(
      'nr-cs-trickle',
      (r) => (isRange(r) ? { kind: 'trickle', trickleMs: 1, bytes: 4 } : undefined),
      { transferMinRateBps: 200_000, transferGraceSeconds: 2 },
    )
    const result = await installArtifact(config, { name: 'nr-cs-trickle' })
    expect(result).toMatchObject({ version: '1.1.0', method: 'full' })
    expect(result.fallbacks).toEqual([
      expect.stringMatching(/^chunk-sync: not done within 6 s .*transferMinRateBps 200000/),
    ])
    expect(proxy.seen().filter(isRange)).toHaveLength(1)
    expect(performance.now() - started).toBeLessThan(25_000)
    expectSameBytes(await readFile(join(store.currentLink, 'blob')), v2)
  }, 60_000)
})
