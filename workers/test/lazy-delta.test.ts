import { env } from 'cloudflare:workers'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { applyDelta } from '../../delta/index.ts'
import { clearRuntimeConfigCache, RUNTIME_CONFIG_KEY } from '../config/runtime-config.ts'
import { lockKey } from '../publish/lazy-delta.ts'
import { keys } from '../storage/keys.ts'
import { callApp, unframe } from './delta-helpers.ts'
import { bytesOf, call, expectProblem, publishSingle, sha256, stalledAt } from './publish-helpers.ts'

async function twoVersions(name: string) {
  const v1 = bytesOf(60_000, 41)
  const v2 = v1.slice()
  v2.set(bytesOf(2000, 42), 30_000)
  await publishSingle(name, '1.0.0', v1, 1)
  await publishSingle(name, '1.1.0', v2, 2)
  return { v1, v2 }
}

describe('lazy delta generation', () => {
  afterEach(async () => {
    await env.CONFIG.delete(RUNTIME_CONFIG_KEY)
    clearRuntimeConfigCache()
  })

  it('generates an unlisted small pair once, stores it, and the delta rebuilds the target', async () => {
    const { v1, v2 } = await twoVersions('lazy')
    const first = await call('/v1/deltas/lazy/1.0.0/1.1.0')
    expect(first.status).toBe(200)
    expect(first.headers.get('x-deltaport-generated')).toBe('lazy')
    const framed = new Uint8Array(await first.arrayBuffer())
    const payload = await unframe(framed)
    expect(payload.length).toBeLessThan(10_000)
    expect(await sha256(applyDelta(v1, payload))).toBe(await sha256(v2))

    const stored = await env.ARTIFACTS.head(keys.delta('lazy', '1.0.0', '1.1.0', 'vcdiff'))
    expect(stored?.customMetadata?.lazy).toBe('1')
    expect(await env.ARTIFACTS.head(lockKey('lazy', '1.0.0', '1.1.0', 'vcdiff'))).toBeNull()
    const uploaded = stored?.uploaded.getTime()
    const again = await call('/v1/deltas/lazy/1.0.0/1.1.0', {
      headers: { 'if-range': first.headers.get('etag') ?? '', range: 'bytes=0-99' },
    })
    expect(again.status).toBe(206)
    await again.body?.cancel()
    // Served from the stored object, not generated again.
    expect(
      (await env.ARTIFACTS.head(keys.delta('lazy', '1.0.0', '1.1.0', 'vcdiff')))?.uploaded.getTime(),
    ).toBe(uploaded)
  })

  it('answers 503 + Retry-After while another request holds the lock, and 404 over the size limit', async () => {
    await twoVersions('lazy2')
    await env.ARTIFACTS.put(lockKey('lazy2', '1.0.0', '1.1.0', 'vcdiff'), 'held')
    const busy = await call('/v1/deltas/lazy2/1.0.0/1.1.0')
    expect(busy.status).toBe(503)
    expect(busy.headers.get('retry-after')).toBe('2')
    expect(busy.headers.get('content-type')).toBe('application/problem+json')
    await env.ARTIFACTS.delete(lockKey('lazy2', '1.0.0', '1.1.0', 'vcdiff'))

    await env.CONFIG.put(RUNTIME_CONFIG_KEY, JSON.stringify({ delta: { lazyGenerationMaxBytes: 50_000 } }))
    clearRuntimeConfigCache()
    const big = await call('/v1/deltas/lazy2/1.0.0/1.1.0')
    expect(big.status).toBe(404)
    expect(await big.text()).toContain('too large')
    expect((await call('/v1/deltas/lazy2/0.1.0/1.1.0')).status).toBe(404)
  })

  it('takes a stale lock over only while it is still the stale one: one generation, not two', async () => {
    await twoVersions('lazy3')
    const lock = lockKey('lazy3', '1.0.0', '1.1.0', 'vcdiff')
    await env.ARTIFACTS.put(lock, 'left by a generation that died')
    // Two minutes on: the lock is older than the minute after which it counts as abandoned.
    const now = Date.now()
    const clock = vi.spyOn(Date, 'now').mockImplementation(() => now + 120_000)
    try {
      // A has seen the stale lock and is about to take it over...
      const a = stalledAt('head', lock, true)
      const first = callApp('/v1/deltas/lazy3/1.0.0/1.1.0', {}, { ...env, ARTIFACTS: a.bucket })
      await a.atGate
      // ...when B takes it over and starts generating (stopped at its first blob read).
      const b = stalledAt('get', keys.blob('lazy3', '1.0.0'))
      const second = callApp('/v1/deltas/lazy3/1.0.0/1.1.0', {}, { ...env, ARTIFACTS: b.bucket })
      await b.atGate
      a.release()
      const { response, bytes } = await first
      const busy = await expectProblem(new Response(bytes, response), 503, 'generating')
      expect(busy.detail).toContain('being generated')
      b.release()
      const made = await second
      expect(made.response.status).toBe(200)
      expect(made.response.headers.get('x-deltaport-generated')).toBe('lazy')
    } finally {
      clock.mockRestore()
    }
    expect(await env.ARTIFACTS.head(lock)).toBeNull()
  })
})
