/**
 * An operator's view of a hostile or buggy fleet: runtime config edits gone wrong, devices ahead of their
 * channel, zone buckets losing objects. Real bindings throughout (workerd R2, KV, Durable Objects).
 */
import { env } from 'cloudflare:workers'
import { afterEach, describe, expect, it } from 'vitest'
import { DEFAULT_LIMITS, emptySummary } from '../../predict/index.ts'
import { PrefetchQueue } from '../../schemas/prefetch.ts'
import { ShardPlan } from '../../schemas/shards.ts'
import {
  clearRuntimeConfigCache,
  RUNTIME_CONFIG_KEY,
  setRuntimeConfigClock,
} from '../../workers/config/runtime-config.ts'
import { auth, bytesOf, call, envelopeFor, startPublish } from '../../workers/test/publish-helpers.ts'
import { MAX_GLOBAL_REGIONS } from '../global-aggregator.ts'
import { batchOf, postTelemetry } from './helpers.ts'
import { demandRows, plannerStub, publishDep } from './shard-helpers.ts'

const DAY = 86_400_000

async function publish(name: string, version: string, serial: number, seed: number, channels: string[]) {
  const size = 1000 + serial * 100
  const body = bytesOf(size, seed)
  const envelope = await envelopeFor(name, version, body, { channels, serial })
  expect((await startPublish(envelope)).status).toBe(201)
  const put = await call(`/v1/publish/${name}/${version}/blob`, {
    method: 'PUT',
    headers: { ...auth, 'content-length': String(size) },
    body,
  })
  expect(put.status).toBe(201)
}

async function queueFor(query: string): Promise<string[]> {
  const res = await call(`/v1/prefetch?${query}`)
  expect(res.status).toBe(200)
  return PrefetchQueue.parse(await res.json()).items.map((i) => `${i.name}@${i.version}`)
}

describe('operator: runtime config in KV', () => {
  afterEach(async () => {
    await env.CONFIG.delete(RUNTIME_CONFIG_KEY)
    setRuntimeConfigClock(null)
    clearRuntimeConfigCache()
  })

  it('a garbled document keeps the last good region map and rate limit for telemetry and prefetch', async () => {
    clearRuntimeConfigCache()
    await env.CONFIG.put(
      RUNTIME_CONFIG_KEY,
      JSON.stringify({
        limits: { telemetryPerClientPerMinute: 1 },
        regions: { map: { FRA: 'op-eu' }, fallback: 'op-eu' },
      }),
    )
    expect((await postTelemetry('op-eu', batchOf('client-op-1', 1, ['a']))).status).toBe(202)
    expect((await postTelemetry('op-zz', batchOf('client-op-2', 1, ['a']))).status).toBe(400)

    // A half-written edit (truncated JSON), read once this isolate's cached copy expires.
    await env.CONFIG.put(RUNTIME_CONFIG_KEY, '{"limits": {"telemetryPerClientPerMinute": "lots"')
    let clock = Date.now() + 3_600_000
    setRuntimeConfigClock(() => clock)
    // Would be 202 with defaults: every unknown region name would get its own aggregator object.
    expect((await postTelemetry('op-zz', batchOf('client-op-3', 1, ['a']))).status).toBe(400)
    expect((await call('/v1/prefetch?client=client-op-3&region=op-zz')).status).toBe(400)
    // A fresh client gets the configured burst of 1, not the default 30.
    expect((await postTelemetry('op-eu', batchOf('client-op-4', 1, ['a']))).status).toBe(202)
    expect((await postTelemetry('op-eu', batchOf('client-op-4', 2, ['a']))).status).toBe(429)

    // Wrong types and out-of-range values are rejected the same way.
    await env.CONFIG.put(
      RUNTIME_CONFIG_KEY,
      JSON.stringify({ limits: { telemetryPerClientPerMinute: -5 }, regions: { map: [] } }),
    )
    clock += 3_600_000
    expect((await postTelemetry('op-zz', batchOf('client-op-5', 1, ['a']))).status).toBe(400)
  })
})

describe('operator: prefetch for devices ahead of their channel', () => {
  it('never stages the older channel head for a device running a newer version', async () => {
    await publish('op-ahead', '1.0.0', 1, 31, ['stable'])
    await publish('op-ahead', '2.0.0', 2, 32, ['beta'])
    // The device uses what it runs (2.0.0, installed from beta or with `install --to`).
    for (let seq = 1; seq <= 3; seq++) {
      const batch = batchOf('client-ahead', seq, [{ artifact: 'op-ahead', version: '2.0.0' }])
      expect((await postTelemetry('op-ahead', batch)).status).toBe(202)
    }
    // Neither from the query's installed list nor from what its telemetry reported: a downgrade is not a
    // prefetch (the agent would refuse it and the bytes would be wasted).
    expect(await queueFor('client=client-ahead&region=op-ahead&installed=op-ahead@2.0.0')).toEqual([])
    expect(await queueFor('client=client-ahead&region=op-ahead')).toEqual([])
    // A device behind the head still gets it.
    expect(await queueFor('client=client-behind&region=op-ahead&installed=op-ahead@0.9.0')).toEqual([
      'op-ahead@1.0.0',
    ])
  })
})

describe('operator: a zone bucket loses an object', () => {
  afterEach(() => clearRuntimeConfigCache())

  it('unflips the lost replica at once, then re-copies, verifies and flips it back', async () => {
    await env.CONFIG.delete(RUNTIME_CONFIG_KEY)
    clearRuntimeConfigCache()
    const { body } = await publishDep('op-rp', 30_000, 41)
    const key = 'artifacts/op-rp/1.0.0/blob'
    const stub = plannerStub('op-repair')
    const now = Date.now()
    await stub.recordDemand(demandRows('op-rp@1.0.0', 'weur', 60, now))
    await stub.replan(now)
    const before = ShardPlan.parse(await stub.plan())
    const entry = before.entries.find((e) => e.id === 'op-rp@1.0.0')
    expect(entry?.active).toContain('weur')

    // Lost (an operator's lifecycle rule, a bucket restore), then truncated in another zone.
    await env.ZONE_WEUR.delete(key)
    const other = entry?.active.find((z) => z !== 'weur')
    const otherBucket = other === 'apac' ? env.ZONE_APAC : other === 'wnam' ? env.ZONE_WNAM : null
    await otherBucket?.put(key, body.subarray(0, 100))

    const result = await stub.replan(now + 60_000)
    const after = ShardPlan.parse(await stub.plan())
    expect(after.version).toBeGreaterThan(before.version)
    expect(after.entries.find((e) => e.id === 'op-rp@1.0.0')?.active.sort()).toEqual(entry?.active.sort())
    expect(result.migrations.completed).toBe(otherBucket === null ? 1 : 2)
    const copied = await env.ZONE_WEUR.get(key)
    expect(new Uint8Array(await (copied as R2ObjectBody).arrayBuffer())).toEqual(body)
    if (otherBucket !== null) expect((await otherBucket.head(key))?.size).toBe(body.length)

    const migrations = await stub.migrations()
    const repaired = migrations.filter((m) => m.zone === 'weur' && m.kind === 'add')
    expect(repaired.map((m) => m.state)).toEqual(['active', 'cancelled'])
    expect(repaired[1]?.error).toContain('missing')
    // Once repaired, nothing more to do.
    expect((await stub.replan(now + 120_000)).migrations.completed).toBe(0)
  })
})

describe('operator: shard planner storage over months', () => {
  it('counts active replicas from the plan and prunes finished migrations after the history window', async () => {
    await env.CONFIG.delete(RUNTIME_CONFIG_KEY)
    clearRuntimeConfigCache()
    await publishDep('op-hist', 20_000, 51)
    const stub = plannerStub('op-history')
    const now = Date.now()
    await stub.recordDemand(demandRows('op-hist@1.0.0', 'weur', 60, now))
    await stub.replan(now)
    const placed = ShardPlan.parse(await stub.plan()).entries[0]?.active.length ?? 0
    expect(placed).toBeGreaterThan(0)
    expect((await stub.metrics(24, now)).migrations.active).toBe(placed)

    // Demand stops: the forecast falls, replicas are unflipped, then deleted after the grace period.
    for (let day = 1; day <= 7; day++) await stub.replan(now + day * DAY)
    expect(ShardPlan.parse(await stub.plan()).entries.flatMap((e) => e.active)).toEqual([])
    const states = (await stub.migrations()).map((m) => m.state)
    expect(states.filter((s) => s === 'deleted')).toHaveLength(placed)
    // Nothing is served from a replica any more, so nothing is "active".
    expect((await stub.metrics(24, now + 7 * DAY)).migrations.active).toBe(0)

    // Past the four-week history window, finished migrations are history no one reads: pruned.
    await stub.replan(now + 40 * DAY)
    expect(await stub.migrations()).toEqual([])
  })
})

describe('operator: one hostile device and the region', () => {
  it('one telemetry batch cannot make the whole region prefetch an artifact', async () => {
    await publish('op-bait', '1.0.0', 1, 61, ['stable'])
    const region = 'op-poison'
    // A region of 50 ordinary devices using other things.
    for (let i = 0; i < 50; i++) {
      const id = `client-p${String(i).padStart(3, '0')}`
      expect((await postTelemetry(region, batchOf(id, 1, ['op-other']))).status).toBe(202)
    }
    expect(await queueFor(`client=client-p000&region=${region}`)).toEqual([])
    // One request: 1000 events claiming a million uses each.
    const hostile = batchOf('client-hostile', 1, ['op-bait'])
    const at = hostile.events[0]?.at ?? new Date().toISOString()
    hostile.events = Array.from({ length: 1000 }, () => ({
      artifact: 'op-bait',
      at,
      count: 1_000_000,
      kind: 'use' as const,
    }))
    expect((await postTelemetry(region, hostile)).status).toBe(202)
    // The bystanders never used op-bait; one device's claim must not put it in their queues.
    expect(await queueFor(`client=client-p001&region=${region}`)).toEqual([])
  })
})

describe('operator: region names from clients', () => {
  it('the global aggregator keeps a bounded set of regions, real populations first', async () => {
    // Without `regions.map` (the default) any valid region name is taken, so a client inventing names
    // creates a region object each, and each rolls up into the one global object.
    const global = env.GLOBAL_AGGREGATOR.get(env.GLOBAL_AGGREGATOR.idFromName('op-global'))
    const rollup = (region: string, population: number) => ({
      region,
      population,
      summary: { ...emptySummary(region, Date.now()), limits: { ...DEFAULT_LIMITS, maxArtifacts: 500 } },
    })
    await global.submit(rollup('op-real', 50))
    for (let i = 0; i < MAX_GLOBAL_REGIONS + 40; i++) await global.submit(rollup(`op-fake-${i}`, 1))
    const regions = await global.regions()
    expect(regions).toHaveLength(MAX_GLOBAL_REGIONS)
    expect(regions.map((r) => r.region)).toContain('op-real')
    // The newest invented name is the one kept in a tie: a live region keeps rolling up.
    expect(regions.map((r) => r.region)).toContain(`op-fake-${MAX_GLOBAL_REGIONS + 39}`)
  })
})

describe('operator: a bad zones edit meets a restarted planner', () => {
  afterEach(async () => {
    await env.CONFIG.delete(RUNTIME_CONFIG_KEY)
    clearRuntimeConfigCache()
  })

  it('keeps planning with the last good zones, so replicas in custom zones are not torn down', async () => {
    const zones = {
      map: { EU: 'eeur' },
      fallback: 'weur',
      primaryZone: 'weur',
      zones: [
        { id: 'eeur', capacityBytes: 1_000_000, weight: 1, bucket: 'ZONE_WNAM' },
        { id: 'weur', capacityBytes: 1_000_000, weight: 1, bucket: 'ZONE_WEUR' },
      ],
      planCacheMs: 1000,
    }
    await env.CONFIG.put(RUNTIME_CONFIG_KEY, JSON.stringify({ zones }))
    clearRuntimeConfigCache()
    await publishDep('op-zc', 10_000, 71)
    const stub = plannerStub('op-zones')
    const now = Date.now()
    await stub.recordDemand(demandRows('op-zc@1.0.0', 'eeur', 60, now))
    await stub.replan(now)
    const placed = ShardPlan.parse(await stub.plan()).entries[0]
    expect(placed?.active).toContain('eeur')

    // A bad edit, and the planner's isolate restarts (no cached copy): defaults would drop zone eeur.
    await env.CONFIG.put(RUNTIME_CONFIG_KEY, JSON.stringify({ zones: { ...zones, zones: 'eeur,weur' } }))
    clearRuntimeConfigCache()
    await stub.replan(now + 60_000)
    await stub.replan(now + 120_000)
    const kept = ShardPlan.parse(await stub.plan())
    expect(kept.zones.map((z) => z.id).sort()).toEqual(['eeur', 'weur'])
    expect(kept.entries[0]?.active).toEqual(placed?.active)
    expect((await stub.migrations()).filter((m) => m.kind === 'remove')).toEqual([])
    expect(await env.ZONE_WNAM.head('artifacts/op-zc/1.0.0/blob')).not.toBeNull()

    // Deleting the document means defaults, deliberately: then the planner follows them.
    await env.CONFIG.delete(RUNTIME_CONFIG_KEY)
    clearRuntimeConfigCache()
    await stub.replan(now + 180_000)
    expect(ShardPlan.parse(await stub.plan()).zones.map((z) => z.id)).toEqual(['wnam', 'weur', 'apac'])
  })
})
