import { env } from 'cloudflare:workers'
import { beforeEach, describe, expect, it } from 'vitest'
import { zoneBucket } from '../../durable-objects/shard-replicas.ts'
import { demandRows, plannerStub, publishDep } from '../../durable-objects/test/shard-helpers.ts'
import { ShardMetrics, ShardPlan, ZonesConfig } from '../../schemas/shards.ts'
import { clearRuntimeConfigCache, RUNTIME_CONFIG_KEY } from '../config/runtime-config.ts'
import { clearZonePlanCache, ZONE_HEADER, zoneOf } from '../storage/zone-replicas.ts'
import { callApp } from './delta-helpers.ts'
import { FaultyR2 } from './faulty-r2.ts'
import { auth, call } from './publish-helpers.ts'

const ZONES = ZonesConfig.parse({})
const blobUrl = (name: string) => `/v1/artifacts/${name}/1.0.0/blob`

/** GET a blob as if from a colo on `continent` (real `request.cf`, as Cloudflare sets it). */
function fetchFrom(continent: string, name: string, colo?: string) {
  return callApp(blobUrl(name), { cf: { continent, ...(colo === undefined ? {} : { colo }) } })
}

/**
 * A zone of its own, mapped from `colo`, with no replica bucket (its hot set is warmed from the primary),
 * whose plan's hot set is `hot` alone; `trigger` is a small dependency whose request warms it. Returns
 * the hot dependency as published and a reader of the zone's metrics.
 */
async function zoneWarmedFromPrimary(zone: string, colo: string, hot: string, size: number, seed: number) {
  const base = ZonesConfig.parse({})
  await env.CONFIG.put(
    RUNTIME_CONFIG_KEY,
    JSON.stringify({
      zones: {
        metricsFlushMs: 0,
        planCacheMs: 0,
        prefetchThresholds: [1],
        map: { ...base.map, [colo]: zone },
        zones: [...base.zones, { id: zone, capacityBytes: 0 }],
      },
    }),
  )
  clearRuntimeConfigCache()
  const published = await publishDep(hot, size, seed)
  await publishDep(`${hot}-trigger`, 1_000, seed + 1)
  await plannerStub().recordDemand(demandRows(`${hot}@1.0.0`, zone, 6, Date.now()))
  await plannerStub().replan()
  const plan = ShardPlan.parse(await plannerStub().plan())
  expect(plan.zones.find((z) => z.id === zone)?.hot).toEqual([`${hot}@1.0.0`])
  const metrics = async () =>
    ShardMetrics.parse(await plannerStub().metrics(1)).zones.find((z) => z.zone === zone)
  return { hot: published, metrics }
}

describe('zone of a request', () => {
  it('maps colo first, then continent, then the fallback', () => {
    expect(zoneOf({ continent: 'EU' }, ZONES)).toBe('weur')
    expect(zoneOf({ continent: 'AS', colo: 'SIN' }, ZONES)).toBe('apac')
    expect(zoneOf({}, ZONES)).toBe('wnam')
    const custom = { map: { FRA: 'eeur', EU: 'weur' }, fallback: 'me' }
    expect(zoneOf({ colo: 'FRA', continent: 'EU' }, custom)).toBe('eeur')
    expect(zoneOf({ colo: 'fra', continent: 'EU' }, custom)).toBe('eeur')
    expect(zoneOf({ colo: 'LHR', continent: 'EU' }, custom)).toBe('weur')
    expect(zoneOf({ colo: 'NRT', continent: 'AS' }, custom)).toBe('me')
  })
})

describe('/v1/shards and zone-aware serving', () => {
  beforeEach(async () => {
    await env.CONFIG.put(RUNTIME_CONFIG_KEY, JSON.stringify({ zones: { metricsFlushMs: 0, planCacheMs: 0 } }))
    clearRuntimeConfigCache()
    clearZonePlanCache()
  })

  it('serves the plan publicly once there is one; metrics and re-planning need the maintainer', async () => {
    const none = await call('/v1/shards')
    expect(none.status).toBe(404)
    // An operator meeting the 404 is told when the planner runs and how to run it now.
    expect(((await none.json()) as { detail: string }).detail).toContain('POST /v1/shards/replan')
    expect((await call('/v1/shards/replan', { method: 'POST' })).status).toBe(401)
    const unauthorized = await call('/v1/shards/metrics')
    expect(unauthorized.status).toBe(401)
    // Names the secret, as the operator routes' 401 does: an operator holding OPERATOR_TOKEN learns it is the other one.
    expect(((await unauthorized.json()) as { detail: string }).detail).toContain('PUBLISH_TOKEN')
    expect((await call('/v1/shards/migrations')).status).toBe(401)
    expect((await call('/v1/shards/metrics?window=0', { headers: auth })).status).toBe(400)

    await publishDep('sh-route', 3_000, 11)
    await plannerStub().recordDemand(demandRows('sh-route@1.0.0', 'apac', 6, Date.now()))
    const replanned = await call('/v1/shards/replan', { method: 'POST', headers: auth })
    expect(replanned.status).toBe(200)
    const res = await call('/v1/shards')
    expect(res.status).toBe(200)
    const plan = ShardPlan.parse(await res.json())
    expect(res.headers.get('etag')).toBe(`"shard-plan-${plan.version}"`)
    // The validator it sends is honoured: a cache revalidating the plan in force gets 304, no body.
    for (const inm of [`"shard-plan-${plan.version}"`, `W/"shard-plan-${plan.version}"`, '*']) {
      const again = await call('/v1/shards', { headers: { 'if-none-match': inm } })
      expect(again.status, inm).toBe(304)
      expect(await again.text()).toBe('')
      expect(again.headers.get('etag')).toBe(`"shard-plan-${plan.version}"`)
      expect(again.headers.get('cache-control')).toBe('public, max-age=30')
    }
    expect((await call('/v1/shards', { headers: { 'if-none-match': '"shard-plan-0"' } })).status).toBe(200)
    expect(plan.entries.find((e) => e.id === 'sh-route@1.0.0')?.active).toEqual(['apac'])
    const metrics = await call('/v1/shards/metrics?window=48', { headers: auth })
    expect(ShardMetrics.parse(await metrics.json()).windowHours).toBe(48)
    const list = await call('/v1/shards/migrations', { headers: auth })
    expect(((await list.json()) as { migrations: unknown[] }).migrations.length).toBeGreaterThan(0)
  })

  it('serves from the zone replica only when the plan has it verified there, else from the primary', async () => {
    await env.CONFIG.put(
      RUNTIME_CONFIG_KEY,
      JSON.stringify({ zones: { metricsFlushMs: 0, planCacheMs: 0, prefetchThresholds: [1] } }),
    )
    clearRuntimeConfigCache()
    const { body } = await publishDep('sh-serve', 12_000, 12)
    const rangeFrom = (continent: string, range: string) =>
      callApp(blobUrl('sh-serve'), { cf: { continent }, headers: { range } })
    // Before any plan: primary, labelled with the request's zone.
    const before = await rangeFrom('EU', 'bytes=0-99')
    expect(before.response.headers.get(ZONE_HEADER)).toBe('weur; source=primary')
    expect(before.bytes).toEqual(body.slice(0, 100))

    await plannerStub().recordDemand(demandRows('sh-serve@1.0.0', 'weur', 6, Date.now()))
    await plannerStub().replan()
    const plan = ShardPlan.parse(await plannerStub().plan())
    expect(plan.zones.find((z) => z.id === 'weur')?.hot).toContain('sh-serve@1.0.0')
    // Prove the bytes come from the replica: the primary's copy goes away (the manifest stays).
    await env.ARTIFACTS.delete('artifacts/sh-serve/1.0.0/blob')
    const range = await rangeFrom('EU', 'bytes=100-199')
    expect(range.response.status).toBe(206)
    expect(range.response.headers.get(ZONE_HEADER)).toBe('weur; source=replica')
    expect(range.bytes).toEqual(body.slice(100, 200))
    // That first request under the new plan warmed weur's hot set into this colo's cache (from the replica).
    const full = await fetchFrom('EU', 'sh-serve')
    expect(full.response.headers.get(ZONE_HEADER)).toBe('weur; source=cache')
    expect(full.bytes).toEqual(body)
    // apac has no replica: primary, which no longer has the bytes.
    const elsewhere = await rangeFrom('AS', 'bytes=300-399')
    expect(elsewhere.response.status).toBe(404)
  })

  it('labels a read the replica could not answer as served by the primary', async () => {
    await env.CONFIG.put(
      RUNTIME_CONFIG_KEY,
      JSON.stringify({ zones: { metricsFlushMs: 0, planCacheMs: 0, prefetchThresholds: [1] } }),
    )
    clearRuntimeConfigCache()
    const { body } = await publishDep('sh-lost', 9_000, 15)
    await plannerStub().recordDemand(demandRows('sh-lost@1.0.0', 'weur', 6, Date.now()))
    await plannerStub().replan()
    const plan = ShardPlan.parse(await plannerStub().plan())
    expect(plan.entries.find((e) => e.id === 'sh-lost@1.0.0')?.active).toEqual(['weur'])
    // The zone bucket loses its copy; until the planner's repair notices, reads fall back to the primary.
    const replica = zoneBucket(env, plan.zones.find((z) => z.id === 'weur')?.bucket)
    if (!replica) throw new Error('weur has no zone bucket')
    const listed = await replica.list({ prefix: 'artifacts/sh-lost/' })
    expect(listed.objects.length).toBeGreaterThan(0)
    for (const object of listed.objects) await replica.delete(object.key)
    const read = await callApp(blobUrl('sh-lost'), {
      cf: { continent: 'EU' },
      headers: { range: 'bytes=0-9' },
    })
    expect(read.response.status).toBe(206)
    expect(read.bytes).toEqual(body.slice(0, 10))
    expect(read.response.headers.get(ZONE_HEADER)).toBe('weur; source=primary')
  })

  it('does not serve a planned replica that failed verification', async () => {
    await publishDep('sh-unverified', 6_000, 13)
    const corrupt = new Uint8Array(6_000).fill(1)
    await env.ARTIFACTS.put('artifacts/sh-unverified/1.0.0/blob', corrupt)
    await plannerStub().recordDemand(demandRows('sh-unverified@1.0.0', 'weur', 6, Date.now()))
    await plannerStub().replan()
    const plan = ShardPlan.parse(await plannerStub().plan())
    const entry = plan.entries.find((e) => e.id === 'sh-unverified@1.0.0')
    expect(entry?.replicas).toEqual(['weur'])
    expect(entry?.active).toEqual([])
    const res = await fetchFrom('EU', 'sh-unverified')
    expect(res.response.headers.get(ZONE_HEADER)).toBe('weur; source=primary')
  })

  it('reports the warm reads that filled the colo cache as warm fills, never as demand', async () => {
    // A zone of its own (no replica bucket: its hot set is warmed from the primary), so only this test's
    // dependency is in its hot set.
    const { hot, metrics: me } = await zoneWarmedFromPrimary('me', 'DXB', 'sh-warm-hot', 15_000, 16)
    const before = await me()
    const fromDubai = (name: string) => fetchFrom('AS', name, 'DXB')

    // The first request under this plan warms me's hot set: sh-warm-hot is not cached yet, so the warm
    // read fills the cache with its 15 000 bytes. The planner is told, and counts one request, not two.
    expect((await fromDubai('sh-warm-hot-trigger')).response.status).toBe(200)
    const filled = await me()
    expect((filled?.warmFillBytes ?? 0) - (before?.warmFillBytes ?? 0)).toBe(hot.body.length)
    expect((filled?.requests ?? 0) - (before?.requests ?? 0)).toBe(1)
    expect((filled?.bytesServed ?? 0) - (before?.bytesServed ?? 0)).toBe(1_000)
    const cached = await fromDubai('sh-warm-hot')
    expect(cached.response.headers.get(ZONE_HEADER)).toBe('me; source=cache')
    expect(cached.bytes).toEqual(hot.body)

    // An isolate that has not warmed this plan version yet warms again; the blob is in the colo cache
    // already, so that warm read fills nothing and costs nothing.
    clearZonePlanCache()
    expect((await fromDubai('sh-warm-hot-trigger')).response.status).toBe(200)
    const again = await me()
    expect(again?.warmFillBytes).toBe(filled?.warmFillBytes)
    expect((again?.requests ?? 0) - (filled?.requests ?? 0)).toBe(2)
  })

  it('charges a warm read only once its copy is in the colo cache, not when the cache put failed', async () => {
    // A zone of its own, warmed from the primary, whose one hot blob breaks mid-body the first time (an
    // R2 fault after the read began): the cache put fails and stores nothing, so nothing was filled.
    const { hot, metrics: afr } = await zoneWarmedFromPrimary('afr', 'LOS', 'sh-warm-cut', 20_000, 18)
    const before = (await afr())?.warmFillBytes ?? 0
    const cutting: Env = {
      ...env,
      ARTIFACTS: new FaultyR2(env.ARTIFACTS, {
        cutBodies: (key) => key === 'artifacts/sh-warm-cut/1.0.0/blob',
        cutBodyAfter: 5_000,
      }),
    }
    const trigger = () =>
      callApp(blobUrl('sh-warm-cut-trigger'), { cf: { continent: 'AF', colo: 'LOS' } }, cutting)
    expect((await trigger()).response.status).toBe(200)
    expect((await afr())?.warmFillBytes ?? 0).toBe(before)

    // The next warming of this plan version finds nothing cached (it costs only on a miss), stores the
    // blob, and is charged its bytes then.
    clearZonePlanCache()
    await callApp(blobUrl('sh-warm-cut-trigger'), { cf: { continent: 'AF', colo: 'LOS' } })
    expect(((await afr())?.warmFillBytes ?? 0) - before).toBe(hot.body.length)
    const cached = await fetchFrom('AF', 'sh-warm-cut', 'LOS')
    expect(cached.response.headers.get(ZONE_HEADER)).toBe('afr; source=cache')
    expect(cached.bytes).toEqual(hot.body)
  })

  it('reports what it served to the planner: demand and zone metrics', async () => {
    await publishDep('sh-metrics', 2_000, 14)
    const before = ShardMetrics.parse(await plannerStub().metrics(1))
    const apacBefore = before.zones.find((z) => z.zone === 'apac')?.requests ?? 0
    for (let i = 0; i < 3; i++) expect((await fetchFrom('OC', 'sh-metrics')).response.status).toBe(200)
    const after = ShardMetrics.parse(await plannerStub().metrics(1))
    const apac = after.zones.find((z) => z.zone === 'apac')
    expect((apac?.requests ?? 0) - apacBefore).toBe(3)
    expect(apac?.crossZoneFetches).toBeGreaterThanOrEqual(1)
    expect(apac?.bytesServed).toBeGreaterThanOrEqual(6_000)
  })
})
