import { env } from 'cloudflare:workers'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { ZonesConfig } from '../../schemas/shards.ts'
import {
  clearRuntimeConfigCache,
  RUNTIME_CONFIG_KEY,
  type RuntimeConfigStatus,
  setRuntimeConfigClock,
} from '../../workers/config/runtime-config.ts'
import { clearZonePlanCache } from '../../workers/storage/zone-replicas.ts'
import { auth, call } from '../../workers/test/publish-helpers.ts'
import { copyReplica, deleteReplica, zoneBucket } from '../shard-replicas.ts'
import { demandRows, plannerStub, publishDep } from './shard-helpers.ts'

const blobKey = (name: string) => `artifacts/${name}/1.0.0/blob`

/** The tester's document: one zone whose replica bucket is the primary. */
function zonesOnPrimary(replicationThresholds: number[]) {
  return JSON.stringify({
    zones: {
      zones: [{ id: 'wnam', capacityBytes: 4 * 1024 ** 3, weight: 1, bucket: 'ARTIFACTS' }],
      replicationThresholds,
      planCacheMs: 0,
    },
  })
}

async function configStatus(): Promise<RuntimeConfigStatus> {
  const response = await call('/v1/config', { headers: auth })
  expect(response.status).toBe(200)
  return (await response.json()) as RuntimeConfigStatus
}

describe('zone buckets never name the primary', () => {
  let now = 5_000_000
  beforeEach(() => {
    clearRuntimeConfigCache()
    clearZonePlanCache()
    setRuntimeConfigClock(() => now)
  })
  afterEach(async () => {
    setRuntimeConfigClock(null)
    await env.CONFIG.delete(RUNTIME_CONFIG_KEY)
    clearRuntimeConfigCache()
  })

  it('the config schema refuses ARTIFACTS as a zone bucket and two zones sharing a bucket', () => {
    const primary = ZonesConfig.safeParse({
      zones: [{ id: 'wnam', capacityBytes: 1000, bucket: 'ARTIFACTS' }],
    })
    expect(primary.success).toBe(false)
    expect(primary.error?.issues[0]?.path).toEqual(['zones', 0, 'bucket'])
    const shared = ZonesConfig.safeParse({
      zones: [
        { id: 'wnam', capacityBytes: 1000, bucket: 'ZONE_WNAM' },
        { id: 'weur', capacityBytes: 1000, bucket: 'ZONE_WEUR' },
        { id: 'apac', capacityBytes: 1000, bucket: 'ZONE_WNAM' },
      ],
    })
    expect(shared.success).toBe(false)
    expect(shared.error?.issues.map((i) => i.path)).toEqual([['zones', 2, 'bucket']])
    expect(shared.error?.issues[0]?.message).toContain('zone wnam')
    // Distinct replica buckets and bucketless zones stay valid.
    expect(
      ZonesConfig.safeParse({
        zones: [
          { id: 'wnam', capacityBytes: 1000, bucket: 'ZONE_WNAM' },
          { id: 'weur', capacityBytes: 1000 },
          { id: 'apac', capacityBytes: 1000 },
        ],
      }).success,
    ).toBe(true)
  })

  it("the tester's repro: replans keep the primary's blobs, the edge keeps the last good config", async () => {
    const { body } = await publishDep('guard-primary', 6_000, 31)
    await plannerStub().recordDemand(demandRows('guard-primary@1.0.0', 'wnam', 5, Date.now()))
    // A good document first, so "last good" is distinguishable from the defaults.
    await env.CONFIG.put(RUNTIME_CONFIG_KEY, JSON.stringify({ zones: { planCacheMs: 0, metricsFlushMs: 0 } }))
    now += 3_600_000
    expect((await configStatus()).inForce.zones.metricsFlushMs).toBe(0)

    await env.CONFIG.put(RUNTIME_CONFIG_KEY, zonesOnPrimary([0]))
    now += 3_600_000
    const rejected = await configStatus()
    expect(rejected.source).toBe('kv')
    expect(rejected.inForce.zones.metricsFlushMs).toBe(0)
    expect(rejected.inForce.zones.zones.map((z) => z.bucket)).toEqual(['ZONE_WNAM', 'ZONE_WEUR', 'ZONE_APAC'])
    expect(rejected.lastRejected?.issues).toContainEqual({
      path: 'zones.zones.0.bucket',
      message: expect.stringContaining('primary bucket'),
    })

    expect((await call('/v1/shards/replan', { method: 'POST', headers: auth })).status).toBe(200)
    await env.CONFIG.put(RUNTIME_CONFIG_KEY, zonesOnPrimary([1_000_000_000]))
    now += 3_600_000
    for (let i = 0; i < 2; i++)
      expect((await call('/v1/shards/replan', { method: 'POST', headers: auth })).status).toBe(200)

    const stored = await env.ARTIFACTS.get(blobKey('guard-primary'))
    expect(stored === null ? null : new Uint8Array(await stored.arrayBuffer())).toEqual(body)
    const served = await call(`/v1/artifacts/guard-primary/1.0.0/blob`)
    expect(served.status).toBe(200)
    expect(new Uint8Array(await served.arrayBuffer())).toEqual(body)
    // Nothing the planner did ran against the primary: every migration's zone has its own bucket.
    for (const m of await plannerStub().migrations()) expect(m.zone).not.toBe('ARTIFACTS')
  })

  it('replica I/O refuses the primary bucket whatever binding name reaches it', async () => {
    const { envelope } = await publishDep('guard-alias', 3_000, 32)
    expect(zoneBucket(env, 'ARTIFACTS')).toBeNull()
    // Another binding name for the very same bucket object (an alias) is refused too.
    const aliased: Env = Object.assign(Object.create(null) as Env, env, { ZONE_ALIAS: env.ARTIFACTS })
    expect(zoneBucket(aliased, 'ZONE_ALIAS')).toBeNull()
    expect(zoneBucket(aliased, 'ZONE_WEUR')).toBe(env.ZONE_WEUR)

    const key = blobKey('guard-alias')
    await expect(deleteReplica(env.ARTIFACTS, env.ARTIFACTS, key)).rejects.toThrow(/primary/)
    await expect(copyReplica(env.ARTIFACTS, env.ARTIFACTS, key, envelope.signed.sha256)).rejects.toThrow(
      /primary/,
    )
    expect(await env.ARTIFACTS.head(key)).not.toBeNull()
    // A real replica bucket still works both ways.
    expect(await copyReplica(env.ARTIFACTS, env.ZONE_APAC, key, envelope.signed.sha256)).toBe(3_000)
    await deleteReplica(env.ARTIFACTS, env.ZONE_APAC, key)
    expect(await env.ZONE_APAC.head(key)).toBeNull()
    expect(await env.ARTIFACTS.head(key)).not.toBeNull()
  })
})
