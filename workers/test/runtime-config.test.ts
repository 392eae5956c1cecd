import { env } from 'cloudflare:workers'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { batchOf } from '../../durable-objects/test/helpers.ts'
import {
  clearRuntimeConfigCache,
  LAST_GOOD_CONFIG_KEY,
  RUNTIME_CONFIG_KEY,
  type RuntimeConfigStatus,
  setRuntimeConfigClock,
} from '../config/runtime-config.ts'
import { callApp, type DeltaUpload, deltaRefOf, putDelta } from './delta-helpers.ts'
import { auth, bytesOf, envelopeFor, publishSingle, startPublish } from './publish-helpers.ts'

async function status(): Promise<RuntimeConfigStatus> {
  const { response, bytes } = await callApp('/v1/config', { headers: auth })
  expect(response.status).toBe(200)
  return JSON.parse(new TextDecoder().decode(bytes)) as RuntimeConfigStatus
}

/** Stages a version listing one delta and uploads it; returns the framing the edge chose. */
async function frameOne(version: string, serial: number) {
  const upload: DeltaUpload = { from: '1.0.0', method: 'vcdiff', bytes: bytesOf(200_000, serial) }
  const envelope = await envelopeFor('cfg', version, bytesOf(10), {
    serial,
    deltas: [await deltaRefOf(upload)],
  })
  expect((await startPublish(envelope)).status).toBe(201)
  const put = await putDelta('cfg', version, upload)
  expect(put.status).toBe(201)
  return (await put.json()) as { blockSize: number; k: number; m: number }
}

describe('runtime config from KV', () => {
  let now = 1_000_000
  beforeEach(() => {
    clearRuntimeConfigCache()
    setRuntimeConfigClock(() => now)
  })
  afterEach(() => setRuntimeConfigClock(null))

  it('serves defaults without a document, and only to the maintainer', async () => {
    expect((await callApp('/v1/config')).response.status).toBe(401)
    const s = await status()
    expect(s.source).toBe('defaults')
    expect(s.inForce.stream.fecM).toBe(2)
    expect(s.lastRejected).toBeNull()
  })

  it('changes how new streams are framed, keeps the last good config on a bad document', async () => {
    expect(await frameOne('1.1.0', 2)).toMatchObject({ blockSize: 16_384, k: 16, m: 2 })

    await env.CONFIG.put(
      RUNTIME_CONFIG_KEY,
      JSON.stringify({ stream: { blockSize: 4096, fecM: 4 }, cacheTtlSeconds: 60 }),
    )
    // Still cached for the TTL: the old framing stays until the isolate re-reads KV.
    expect(await frameOne('1.2.0', 3)).toMatchObject({ blockSize: 16_384, m: 2 })
    now += 31_000
    expect(await frameOne('1.3.0', 4)).toMatchObject({ blockSize: 4096, k: 16, m: 4 })
    expect((await status()).source).toBe('kv')

    await env.CONFIG.put(RUNTIME_CONFIG_KEY, JSON.stringify({ stream: { fecK: 0 } }))
    now += 61_000
    const rejected = await status()
    expect(rejected.source).toBe('kv')
    expect(rejected.inForce.stream).toMatchObject({ blockSize: 4096, fecM: 4 })
    expect(rejected.lastRejected?.issues.map((i) => i.path)).toEqual(['stream.fecK'])
    expect(await frameOne('1.4.0', 5)).toMatchObject({ blockSize: 4096, m: 4 })

    await env.CONFIG.put(RUNTIME_CONFIG_KEY, 'not json')
    now += 61_000
    expect((await status()).lastRejected?.issues[0]?.message).toContain('not JSON')
  })

  it('a delta staged under one stream config and uploaded under one that frames it beyond one R2 put is refused up front, by name', async () => {
    // 4 GiB frames to 4.5 GiB with the default k=16, m=2 (stageable); with m=8 to 6 GiB, beyond one put.
    const size = 4 * 1024 ** 3
    const ref = { from: '1.0.0', method: 'vcdiff' as const, size, sha256: 'ab'.repeat(32) }
    await env.CONFIG.put(RUNTIME_CONFIG_KEY, '{}')
    const envelope = await envelopeFor('cfg-big', '2.0.0', bytesOf(10), { serial: 2, deltas: [ref] })
    expect((await startPublish(envelope)).status).toBe(201)
    await env.CONFIG.put(RUNTIME_CONFIG_KEY, JSON.stringify({ stream: { fecM: 8 } }))
    now += 31_000
    // Only the first bytes are ever sent: the refusal comes before the body is read.
    const { response, bytes } = await callApp('/v1/publish/cfg-big/2.0.0/deltas/1.0.0/vcdiff', {
      method: 'PUT',
      headers: { ...auth, 'content-length': String(size) },
      body: new Blob([bytesOf(1000)]).stream(),
      duplex: 'half',
    } as RequestInit)
    const problem = JSON.parse(new TextDecoder().decode(bytes)) as { type: string; detail: string }
    expect(response.status).toBe(422)
    expect(problem.type).toContain('unprocessable')
    expect(problem.detail).toContain('stream config')
    expect(await env.ARTIFACTS.head('deltas/cfg-big/1.0.0/2.0.0/vcdiff')).toBeNull()
    await env.CONFIG.delete(RUNTIME_CONFIG_KEY)
    await env.CONFIG.delete(LAST_GOOD_CONFIG_KEY)
  })

  it('a KV outage keeps the config in force; an isolate with none answers 503, never 500', async () => {
    // KV reads fail like the platform's do (a thrown error); everything else is the real binding.
    const failing = new Proxy(env.CONFIG, {
      get(target, property) {
        if (property === 'get')
          return () => Promise.reject(new Error('KV GET failed: 503 Service Unavailable'))
        const value = Reflect.get(target, property, target)
        return typeof value === 'function' ? value.bind(target) : value
      },
    })
    const outage = { ...env, CONFIG: failing } as Env
    await env.CONFIG.put(RUNTIME_CONFIG_KEY, JSON.stringify({ limits: { telemetryPerClientPerMinute: 77 } }))
    await publishSingle('cfg-outage', '1.0.0', bytesOf(300, 5), 1)
    expect((await status()).inForce.limits.telemetryPerClientPerMinute).toBe(77)

    // The cached copy expires while KV is down: requests go on under it, and KV is asked again later.
    now += 31_000
    const blob = await callApp('/v1/artifacts/cfg-outage/1.0.0/blob', {}, outage)
    expect(blob.response.status).toBe(200)
    const index = await callApp('/v1/artifacts/cfg-outage', {}, outage)
    expect(index.response.status).toBe(200)
    const kept = await callApp('/v1/config', { headers: auth }, outage)
    expect(kept.response.status).toBe(200)
    const body = JSON.parse(new TextDecoder().decode(kept.bytes)) as RuntimeConfigStatus
    expect(body.inForce.limits.telemetryPerClientPerMinute).toBe(77)
    expect(body.source).toBe('kv')

    // A fresh isolate with no copy of its own cannot know what the operator configured (defaults
    // could lift a credential requirement): a retryable 503 problem.
    clearRuntimeConfigCache()
    const fresh = await callApp('/v1/artifacts/cfg-outage', {}, outage)
    expect(fresh.response.status).toBe(503)
    expect(fresh.response.headers.get('content-type')).toBe('application/problem+json')
    expect(fresh.response.headers.get('retry-after')).not.toBeNull()

    // KV back: the document is read again.
    expect((await status()).source).toBe('kv')
    await env.CONFIG.delete(RUNTIME_CONFIG_KEY)
  })

  it('an isolate that starts after a bad edit runs on the last good document, not on defaults', async () => {
    const good = JSON.stringify({ stream: { fecM: 6 }, regions: { map: { eu: 'europe' } } })
    await env.CONFIG.put(RUNTIME_CONFIG_KEY, good)
    expect((await status()).source).toBe('kv')
    expect(await env.CONFIG.get(LAST_GOOD_CONFIG_KEY)).toBe(good)

    await env.CONFIG.put(RUNTIME_CONFIG_KEY, '{"stream": {"fecM": "many"')
    clearRuntimeConfigCache() // a fresh isolate: nothing in memory
    const fresh = await status()
    expect(fresh.source).toBe('last-good')
    expect(fresh.inForce.stream.fecM).toBe(6)
    expect(fresh.inForce.regions.map).toEqual({ eu: 'europe' })
    expect(fresh.lastRejected?.issues[0]?.message).toContain('not JSON')

    // A rejected document never becomes the last good one; deleting the document still means defaults.
    expect(await env.CONFIG.get(LAST_GOOD_CONFIG_KEY)).toBe(good)
    await env.CONFIG.delete(RUNTIME_CONFIG_KEY)
    clearRuntimeConfigCache()
    expect((await status()).source).toBe('defaults')
    await env.CONFIG.delete(LAST_GOOD_CONFIG_KEY)
  })

  it('lists values the edge ignores at GET /v1/config, logged once per document, and the document still takes effect', async () => {
    const GiB = 1024 ** 3
    const document = {
      stream: { fecM: 5 },
      devices: { requireCredential: 'reports' },
      regions: { map: { EU: 'Europe West', na: 'us', AS: 'apac' }, fallback: 'Global!' },
      zones: {
        zones: [
          { id: 'wnam', capacityBytes: GiB, bucket: 'ZONE_WNAM' },
          { id: 'weur', capacityBytes: GiB, bucket: 'ZONE_NOWHERE' },
          { id: 'apac', capacityBytes: GiB, bucket: 'ZONE_APAC' },
          { id: 'wnam', capacityBytes: 2 * GiB },
        ],
      },
    }
    const log = vi.spyOn(console, 'log')
    try {
      await env.CONFIG.put(RUNTIME_CONFIG_KEY, JSON.stringify(document))
      const s = await status()
      expect(s.source).toBe('kv')
      expect(s.lastRejected).toBeNull()
      expect(s.inForce.stream.fecM).toBe(5)
      expect(s.inForce.devices.requireCredential).toBe('reports')
      expect(s.inForce.zones.zones).toHaveLength(4)
      expect(s.warnings.map((w) => w.path)).toEqual([
        'regions.map.EU',
        'regions.map.na',
        'regions.fallback',
        'zones.zones.3.id',
        // Only the edge knows its bindings.
        'zones.zones.1.bucket',
      ])
      expect(s.warnings[4]?.message).toContain('ZONE_NOWHERE is not an R2 bucket binding')
      // The document takes effect as far as it can: the credential requirement it sets is enforced.
      const telemetry = await callApp('/v1/telemetry', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(batchOf('cfg-warned-0001', 0, ['app-q'])),
      })
      expect(telemetry.response.status).toBe(401)

      // Re-read after the TTL: the same document is not logged again.
      now += 31_000
      expect((await status()).warnings).toHaveLength(5)
      const logged = log.mock.calls.filter((call) =>
        String(call[0]).includes('runtime config values ignored'),
      )
      expect(logged).toHaveLength(1)

      // A fixed document clears them.
      await env.CONFIG.put(RUNTIME_CONFIG_KEY, JSON.stringify({ stream: { fecM: 5 } }))
      now += 31_000
      expect((await status()).warnings).toEqual([])
    } finally {
      log.mockRestore()
      await env.CONFIG.delete(RUNTIME_CONFIG_KEY)
      await env.CONFIG.delete(LAST_GOOD_CONFIG_KEY)
    }
  })

  it('a deleted document stays deleted: a fresh isolate after a later bad edit runs on defaults, like warm ones', async () => {
    // The operator tightened, then went back to defaults by deleting the document, then stored a typo.
    await env.CONFIG.put(
      RUNTIME_CONFIG_KEY,
      JSON.stringify({ devices: { requireCredential: 'all' }, stream: { fecM: 6 } }),
    )
    expect((await status()).source).toBe('kv')
    await env.CONFIG.delete(RUNTIME_CONFIG_KEY)
    now += 31_000
    expect((await status()).source).toBe('defaults')
    await env.CONFIG.put(RUNTIME_CONFIG_KEY, '{"stream": {"fecM": 9')
    now += 31_000
    const warm = await status()
    expect(warm.source).toBe('defaults')
    clearRuntimeConfigCache()
    const fresh = await status()
    expect(fresh.lastRejected?.issues[0]?.message).toContain('not JSON')
    // Not the document the operator deleted: every isolate runs what the warm ones run.
    expect(fresh.source).toBe('defaults')
    expect(fresh.inForce).toEqual(warm.inForce)
    expect(fresh.inForce.devices.requireCredential).toBe('off')
    await env.CONFIG.delete(RUNTIME_CONFIG_KEY)
    await env.CONFIG.delete(LAST_GOOD_CONFIG_KEY)
  })

  it('a fresh isolate that cannot read the last good document answers 503, and never settles on defaults', async () => {
    const good = JSON.stringify({ devices: { requireCredential: 'all' } })
    await env.CONFIG.put(RUNTIME_CONFIG_KEY, good)
    expect((await status()).source).toBe('kv')
    await env.CONFIG.put(RUNTIME_CONFIG_KEY, '{"devices": ')
    // KV answers the document but fails the read of the last good one (a transient fault).
    const lastGoodFails = new Proxy(env.CONFIG, {
      get(target, property) {
        const value = Reflect.get(target, property, target)
        if (property !== 'get') return typeof value === 'function' ? value.bind(target) : value
        return (key: string, type: 'text') =>
          key === LAST_GOOD_CONFIG_KEY
            ? Promise.reject(new Error('KV GET failed: 503 Service Unavailable'))
            : target.get(key, type)
      },
    })
    clearRuntimeConfigCache()
    const unsure = await callApp('/v1/config', { headers: auth }, { ...env, CONFIG: lastGoodFails } as Env)
    // Defaults would lift the credential requirement the operator's last good document sets.
    expect(unsure.response.status).toBe(503)
    expect(unsure.response.headers.get('retry-after')).not.toBeNull()
    // KV answers again: the last good document, not defaults cached from the failed read.
    const recovered = await status()
    expect(recovered.source).toBe('last-good')
    expect(recovered.inForce.devices.requireCredential).toBe('all')
    await env.CONFIG.delete(RUNTIME_CONFIG_KEY)
    await env.CONFIG.delete(LAST_GOOD_CONFIG_KEY)
  })

  it('a fresh isolate running on the last good document lists its warnings too', async () => {
    const good = JSON.stringify({ regions: { fallback: 'Global!' } })
    await env.CONFIG.put(RUNTIME_CONFIG_KEY, good)
    expect((await status()).warnings.map((w) => w.path)).toEqual(['regions.fallback'])
    await env.CONFIG.put(RUNTIME_CONFIG_KEY, '{')
    clearRuntimeConfigCache()
    const fresh = await status()
    expect(fresh.source).toBe('last-good')
    expect(fresh.warnings.map((w) => w.path)).toEqual(['regions.fallback'])
    await env.CONFIG.delete(RUNTIME_CONFIG_KEY)
    await env.CONFIG.delete(LAST_GOOD_CONFIG_KEY)
  })

  it('names a key the document writes twice, whose first value JSON drops', async () => {
    await env.CONFIG.put(
      RUNTIME_CONFIG_KEY,
      '{"devices":{"requireCredential":"reports"},"stream":{"fecM":3},"devices":{}}',
    )
    const s = await status()
    expect(s.inForce.devices.requireCredential).toBe('off')
    expect(s.warnings.map((w) => w.path)).toEqual(['devices'])
    expect(s.warnings[0]?.message).toContain('only the last one counts')
    await env.CONFIG.delete(RUNTIME_CONFIG_KEY)
    await env.CONFIG.delete(LAST_GOOD_CONFIG_KEY)
  })
})
