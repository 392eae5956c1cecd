import { env } from 'cloudflare:workers'
import { describe, expect, it } from 'vitest'
import { buildChunkIndex, decodeChunkIndex, planChunkSync } from '../../delta/chunking/index.ts'
import { applyDelta } from '../../delta/index.ts'
import { decodeVcdiff, encodeVcdiff } from '../../delta/vcdiff/index.ts'
import { PlanResponse } from '../../schemas/plan.ts'
import { clearRuntimeConfigCache, RUNTIME_CONFIG_KEY } from '../config/runtime-config.ts'
import { keys } from '../storage/keys.ts'
import { publishWithDeltas, unframe } from './delta-helpers.ts'
import { bytesOf, call, publishSingle, sha256 } from './publish-helpers.ts'

/** v(n+1) = v(n) with a few spans rewritten: real, small VCDIFF deltas between neighbours. */
function edit(base: Uint8Array, seed: number): Uint8Array {
  const out = base.slice()
  const patch = bytesOf(3000, seed)
  for (let i = 0; i < 4; i++)
    out.set(patch.subarray(i * 700, i * 700 + 500), ((seed * 7919 + i * 37_003) % (out.length - 600)) | 0)
  return out
}

/**
 * Publishes 1.0.0, 1.1.0 and 1.2.0 of `name` (`size` bytes, edits seeded from `seed`), each with a
 * VCDIFF delta from the one before only: a device on 1.0.0 has no direct delta to 1.2.0.
 */
async function publishChain(
  name: string,
  size: number,
  seed: number,
): Promise<[Uint8Array, Uint8Array, Uint8Array]> {
  const v1 = bytesOf(size, seed)
  const v2 = edit(v1, seed + 1)
  const v3 = edit(v2, seed + 2)
  await publishSingle(name, '1.0.0', v1, 1)
  await publishWithDeltas(name, '1.1.0', v2, 2, [
    { from: '1.0.0', method: 'vcdiff', bytes: encodeVcdiff(v1, v2) },
  ])
  await publishWithDeltas(name, '1.2.0', v3, 3, [
    { from: '1.1.0', method: 'vcdiff', bytes: encodeVcdiff(v2, v3) },
  ])
  return [v1, v2, v3]
}

async function plan(body: unknown): Promise<PlanResponse> {
  const response = await call('/v1/plan', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  })
  expect(response.status).toBe(200)
  return PlanResponse.parse(await response.json())
}

async function fetchBytes(url: string, headers: Record<string, string> = {}): Promise<Uint8Array> {
  const response = await call(url, { headers })
  expect(response.ok).toBe(true)
  return new Uint8Array(await response.arrayBuffer())
}

describe('POST /v1/plan over real published versions', () => {
  it('plans a chain, a direct delta, chunk-sync and full, and each plan rebuilds the target when followed', async () => {
    const [v1, v2, v3] = await publishChain('planned', 120_000, 31)
    const installed = new Map([
      ['1.0.0', v1],
      ['1.1.0', v2],
    ])
    const caps = { methods: ['vcdiff'], chunkSync: true }

    // From 1.0.0 there is no direct delta: a two-step chain beats the full 120 KB.
    const chain = await plan({ name: 'planned', installed: '1.0.0', target: 'stable', capabilities: caps })
    expect(chain.strategy).toBe('chain')
    expect(chain.to).toBe('1.2.0')
    expect(chain.steps.map((s) => `${s.from}>${s.to}`)).toEqual(['1.0.0>1.1.0', '1.1.0>1.2.0'])
    expect(chain.totalBytes).toBeLessThan(v3.length / 4)
    let current = v1
    for (const step of chain.steps) {
      if (step.kind !== 'delta') throw new Error('expected delta steps')
      const framed = await fetchBytes(step.url)
      expect(framed.length).toBe(step.layout.framedLength)
      const payload = await unframe(framed)
      expect(await sha256(payload)).toBe(step.sha256)
      current = decodeVcdiff(current, payload)
    }
    expect(await sha256(current)).toBe(await sha256(v3))

    const capped = await plan({
      name: 'planned',
      installed: '1.0.0',
      target: '1.2.0',
      capabilities: { ...caps, maxChainLength: 1 },
    })
    expect(capped.strategy).not.toBe('chain')

    const direct = await plan({ name: 'planned', installed: '1.1.0', target: '1.2.0', capabilities: caps })
    expect(direct.strategy).toBe('delta')
    expect(direct.steps[0]).toMatchObject({ kind: 'delta', from: '1.1.0', to: '1.2.0', method: 'vcdiff' })

    // A device saying nothing about its bytes gets the full artifact; a known base without a chunk
    // index gets the configured estimate; posting its chunk hashes makes the count exact.
    const blind = await plan({ name: 'planned', installed: null, target: '1.2.0', capabilities: caps })
    expect(blind.strategy).toBe('full')
    expect(blind.considered.map((c) => c.strategy)).toEqual(['full'])
    const guessed = await plan({
      name: 'planned',
      installed: '1.0.0',
      target: '1.2.0',
      capabilities: { methods: [], chunkSync: true },
    })
    expect(guessed.steps[0]).toMatchObject({ kind: 'chunk-sync', estimate: 'factor' })
    const local = await buildChunkIndex(installed.get('1.1.0') as Uint8Array)
    const sync = await plan({
      name: 'planned',
      installed: null,
      target: '1.2.0',
      capabilities: caps,
      haveChunks: local.chunks.map((c) => c.hash),
    })
    const step = sync.steps[0]
    if (step?.kind !== 'chunk-sync') throw new Error(`expected chunk-sync, got ${sync.strategy}`)
    expect(step.estimate).toBe('exact')
    const remote = decodeChunkIndex(await fetchBytes(step.url))
    const syncPlan = planChunkSync(local, remote)
    const fetched = syncPlan.fetch.reduce((n, r) => n + r.length, 0)
    expect(step.estimatedBytes).toBeLessThanOrEqual(step.indexSize + fetched)
    const out = new Uint8Array(remote.totalLength)
    const base = installed.get('1.1.0') as Uint8Array
    for (const s of syncPlan.steps) {
      if (s.kind === 'copy') out.set(base.subarray(s.from, s.from + s.length), s.to)
      else {
        const range = syncPlan.fetch[s.range] as { offset: number; length: number }
        const bytes = await fetchBytes(step.blobUrl, {
          range: `bytes=${range.offset}-${range.offset + range.length - 1}`,
        })
        out.set(bytes.subarray(s.from, s.from + s.length), s.to)
      }
    }
    expect(await sha256(out)).toBe(step.sha256)

    const full = await plan({
      name: 'planned',
      installed: null,
      target: '1.2.0',
      capabilities: { methods: [], chunkSync: false },
    })
    expect(full.strategy).toBe('full')
    const fullStep = full.steps[0]
    if (fullStep?.kind !== 'full') throw new Error('expected full')
    expect(await sha256(await fetchBytes(fullStep.url))).toBe(fullStep.sha256)

    const none = await plan({ name: 'planned', installed: '1.2.0', target: 'stable', capabilities: caps })
    expect(none).toMatchObject({ strategy: 'none', steps: [], totalBytes: 0 })
  })

  it('makes the direct delta a device far behind lacked, and offers it from the next plan on', async () => {
    const [v1, , v3] = await publishChain('behind', 90_000, 51)
    const caps = { methods: ['vcdiff'], chunkSync: false }
    const ask = { name: 'behind', installed: '1.0.0', target: '1.2.0', capabilities: caps }
    const lazyKey = keys.delta('behind', '1.0.0', '1.2.0', 'vcdiff')
    // A device that takes no delta method leaves nothing to make.
    expect((await plan({ ...ask, capabilities: { methods: [], chunkSync: false } })).strategy).toBe('full')
    expect(await env.ARTIFACTS.head(lazyKey)).toBeNull()

    const first = await plan(ask)
    expect(first.strategy).toBe('chain')
    // The direct delta is made after the answer (waitUntil): wait for it to land.
    for (let waited = 0; !(await env.ARTIFACTS.head(lazyKey)) && waited < 10_000; waited += 50)
      await new Promise((resolve) => setTimeout(resolve, 50))
    expect((await env.ARTIFACTS.head(lazyKey))?.customMetadata?.lazy).toBe('1')

    const next = await plan(ask)
    expect(next.strategy).toBe('delta')
    expect(next.totalBytes).toBeLessThan(first.totalBytes)
    const step = next.steps[0]
    if (step?.kind !== 'delta') throw new Error(`expected a delta step, got ${next.strategy}`)
    expect(step).toMatchObject({ from: '1.0.0', to: '1.2.0', method: 'vcdiff' })
    const served = await call(step.url)
    expect(served.headers.get('x-deltaport-generated')).toBe('lazy')
    const payload = await unframe(new Uint8Array(await served.arrayBuffer()))
    expect(await sha256(payload)).toBe(step.sha256)
    expect(await sha256(decodeVcdiff(v1, payload))).toBe(await sha256(v3))
    // The one object made stays the only one: later plans offer it, nothing is made again.
    const made = (await env.ARTIFACTS.head(lazyKey))?.uploaded.getTime()
    await plan(ask)
    expect((await env.ARTIFACTS.head(lazyKey))?.uploaded.getTime()).toBe(made)
  })

  it('names the stream in the delta URL, so a delta made again with other framing never shares cached ranges', async () => {
    const [v1, , v3] = await publishChain('reframed', 60_000, 71)
    const ask = {
      name: 'reframed',
      installed: '1.0.0',
      target: '1.2.0',
      capabilities: { methods: ['vcdiff'], chunkSync: false },
    }
    const lazyKey = keys.delta('reframed', '1.0.0', '1.2.0', 'vcdiff')
    const directStep = async () => {
      await plan(ask)
      for (let waited = 0; !(await env.ARTIFACTS.head(lazyKey)) && waited < 10_000; waited += 50)
        await new Promise((resolve) => setTimeout(resolve, 50))
      const step = (await plan(ask)).steps[0]
      if (step?.kind !== 'delta' || step.from !== '1.0.0') throw new Error('expected the direct delta')
      return step
    }
    const before = await directStep()
    // The first range of that URL lands in the edge cache (kept a year).
    const firstRange = { range: 'bytes=0-1023' }
    expect((await call(before.url, { headers: firstRange })).status).toBe(206)
    expect((await call(before.url, { headers: firstRange })).headers.get('x-deltaport-cache')).toBe('hit')

    // Retention prunes the edge-made delta; the operator has changed the framing since.
    await env.ARTIFACTS.delete(lazyKey)
    await env.CONFIG.put(RUNTIME_CONFIG_KEY, JSON.stringify({ stream: { fecM: 4 } }))
    clearRuntimeConfigCache()
    try {
      const after = await directStep()
      expect(after.layout).toMatchObject({ k: before.layout.k, m: 4 })
      expect(before.layout.m).not.toBe(4)
      expect(after.url).not.toBe(before.url)
      // Every range of the new URL is the new stream (no cached range of the old one answers it)...
      const first = await call(after.url, { headers: firstRange })
      expect(first.headers.get('x-deltaport-cache')).toBe('miss')
      expect(first.headers.get('x-deltaport-fec')).toBe(`k=${before.layout.k};m=4`)
      const payload = await unframe(await fetchBytes(after.url))
      expect(await sha256(decodeVcdiff(v1, payload))).toBe(await sha256(v3))
      // ...and the old URL no longer serves ranges it had not cached: they would be the new stream's.
      expect((await call(before.url, { headers: { range: 'bytes=1024-2047' } })).status).toBe(404)
    } finally {
      await env.CONFIG.delete(RUNTIME_CONFIG_KEY)
      clearRuntimeConfigCache()
    }
  })

  it('makes an archive-aware direct delta between two archives when the device takes one', async () => {
    const text = (edit: string) =>
      new TextEncoder().encode(
        Array.from({ length: 4000 }, (_, i) => `line ${i} ${i === 2000 ? edit : 'same'}\n`).join(''),
      )
    const gzip = async (bytes: Uint8Array) =>
      new Uint8Array(
        await new Response(
          new Blob([bytes]).stream().pipeThrough(new CompressionStream('gzip')),
        ).arrayBuffer(),
      )
    const [before, after] = [await gzip(text('one')), await gzip(text('two'))]
    await publishSingle('archived', '1.0.0', before, 1)
    await publishSingle('archived', '1.1.0', after, 2)
    const ask = {
      name: 'archived',
      installed: '1.0.0',
      target: '1.1.0',
      capabilities: { methods: ['vcdiff', 'archive'], chunkSync: false },
    }
    expect((await plan(ask)).strategy).toBe('full')
    const made = keys.delta('archived', '1.0.0', '1.1.0', 'archive')
    for (let waited = 0; !(await env.ARTIFACTS.head(made)) && waited < 10_000; waited += 50)
      await new Promise((resolve) => setTimeout(resolve, 50))
    expect((await env.ARTIFACTS.head(made))?.customMetadata?.lazy).toBe('1')
    expect(await env.ARTIFACTS.head(keys.delta('archived', '1.0.0', '1.1.0', 'vcdiff'))).toBeNull()
    const next = await plan(ask)
    expect(next.strategy).toBe('delta')
    const step = next.steps[0]
    if (step?.kind !== 'delta') throw new Error(`expected a delta step, got ${next.strategy}`)
    expect(step.method).toBe('archive')
    const payload = await unframe(new Uint8Array(await (await call(step.url)).arrayBuffer()))
    expect(await sha256(applyDelta(before, payload))).toBe(await sha256(after))
  })

  it('plans around every pruned delta at once, and without deltas when none is left, never a 500', async () => {
    // Each version ships deltas from every earlier one; 1.5.0 (the head) has none from 1.0.0. Retention
    // kept the deltas into the head and 1.0.0 → 1.4.0: every other chain from 1.0.0 starts with a
    // pruned delta, more of them than a plan could find out about one planning round at a time.
    const bodies = [bytesOf(60_000, 81)]
    for (let i = 1; i <= 5; i++) bodies.push(edit(bodies[i - 1] as Uint8Array, 81 + i))
    const version = (i: number) => `1.${i}.0`
    await publishSingle('pruned', version(0), bodies[0] as Uint8Array, 1)
    for (let i = 1; i <= 5; i++) {
      const sources = Array.from({ length: i }, (_, j) => j).filter((j) => i < 5 || j > 0)
      await publishWithDeltas(
        'pruned',
        version(i),
        bodies[i] as Uint8Array,
        i + 1,
        sources.map((j) => ({
          from: version(j),
          method: 'vcdiff' as const,
          bytes: encodeVcdiff(bodies[j] as Uint8Array, bodies[i] as Uint8Array),
        })),
      )
    }
    for (let i = 1; i <= 4; i++)
      for (let j = 0; j < i; j++)
        if (i !== 4 || j !== 0)
          await env.ARTIFACTS.delete(keys.delta('pruned', version(j), version(i), 'vcdiff'))
    const ask = {
      name: 'pruned',
      installed: '1.0.0',
      target: 'stable',
      capabilities: { methods: ['vcdiff'], chunkSync: false },
    }
    const chain = await plan(ask)
    expect(chain.strategy).toBe('chain')
    expect(chain.steps.map((s) => `${s.from}>${s.to}`)).toEqual(['1.0.0>1.4.0', '1.4.0>1.5.0'])

    // That plan had the edge make the direct delta in the background; retention prunes it too.
    const lazy = keys.delta('pruned', '1.0.0', '1.5.0', 'vcdiff')
    for (let waited = 0; !(await env.ARTIFACTS.head(lazy)) && waited < 10_000; waited += 50)
      await new Promise((resolve) => setTimeout(resolve, 50))
    await env.ARTIFACTS.delete([lazy, keys.delta('pruned', '1.0.0', '1.4.0', 'vcdiff')])
    const full = await plan(ask)
    expect(full.strategy).toBe('full')
    expect(full.to).toBe('1.5.0')
    expect(full.considered.map((c) => c.strategy)).toEqual(['full'])
  })

  it('rejects bad requests and unknown targets as problem+json', async () => {
    const bad = await call('/v1/plan', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"name":"x"}',
    })
    expect(bad.status).toBe(400)
    expect(bad.headers.get('content-type')).toBe('application/problem+json')
    await publishSingle('planned2', '1.0.0', bytesOf(100, 1), 1)
    const missing = await call('/v1/plan', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        name: 'planned2',
        installed: null,
        target: 'beta',
        capabilities: { methods: [], chunkSync: false },
      }),
    })
    expect(missing.status).toBe(404)
  })
})
