import { runDurableObjectAlarm } from 'cloudflare:test'
import { env } from 'cloudflare:workers'
import { beforeEach, describe, expect, it } from 'vitest'
import { ShardMetrics, ShardPlan } from '../../schemas/shards.ts'
import { clearRuntimeConfigCache, RUNTIME_CONFIG_KEY } from '../../workers/config/runtime-config.ts'
import { sha256 } from '../../workers/test/publish-helpers.ts'
import { verifyReplica } from '../shard-replicas.ts'
import { demandRows, HOUR, plannerStub, publishDep } from './shard-helpers.ts'

const blobKey = (name: string) => `artifacts/${name}/1.0.0/blob`

async function bytesIn(bucket: R2Bucket, key: string): Promise<Uint8Array | null> {
  const object = await bucket.get(key)
  return object === null ? null : new Uint8Array(await object.arrayBuffer())
}

describe('ShardPlanner', () => {
  beforeEach(async () => {
    await env.CONFIG.delete(RUNTIME_CONFIG_KEY)
    clearRuntimeConfigCache()
  })

  it('forecasts demand, places co-located replicas, copies and verifies them before flipping', async () => {
    const a = await publishDep('sp-a', 30_000, 1)
    const b = await publishDep('sp-b', 20_000, 2, ['sp-a'])
    const c = await publishDep('sp-c', 10_000, 3)
    const stub = plannerStub('sp-1')
    const now = Date.now()
    await stub.recordDemand([
      ...demandRows('sp-a@1.0.0', 'weur', 60, now),
      ...demandRows('sp-a@1.0.0', 'wnam', 30, now),
      ...demandRows('sp-b@1.0.0', 'weur', 5, now),
      ...demandRows('sp-c@1.0.0', 'apac', 4, now),
    ])
    expect(await stub.plan()).toBeNull()

    const result = await stub.replan(now)
    expect(result.changed).toBe(true)
    const plan = ShardPlan.parse(await stub.plan())
    const entry = (id: string) => plan.entries.find((e) => e.id === id)
    // ~90 req/h in total → 2 replicas, in the zones asking for it; sp-b follows sp-a (declared dependency).
    expect(new Set(entry('sp-a@1.0.0')?.replicas)).toEqual(new Set(['weur', 'wnam']))
    expect(entry('sp-b@1.0.0')?.group).toBe('sp-a@1.0.0')
    expect(entry('sp-b@1.0.0')?.replicas).toEqual([entry('sp-a@1.0.0')?.replicas[0]])
    expect(entry('sp-c@1.0.0')?.replicas).toEqual(['apac'])
    expect(entry('sp-a@1.0.0')?.demand.weur).toBeGreaterThan(30)

    // Every replica was copied, re-read and hashed before it became active; the bytes are the blob's.
    for (const e of plan.entries) expect(new Set(e.active)).toEqual(new Set(e.replicas))
    expect(await bytesIn(env.ZONE_WEUR, blobKey('sp-a'))).toEqual(a.body)
    expect(await bytesIn(env.ZONE_WNAM, blobKey('sp-a'))).toEqual(a.body)
    expect(await bytesIn(env.ZONE_APAC, blobKey('sp-c'))).toEqual(c.body)
    expect(await bytesIn(env.ZONE_APAC, blobKey('sp-a'))).toBeNull()
    expect(await verifyReplica(env.ZONE_WEUR, blobKey('sp-b'), b.body.length, b.envelope.signed.sha256)).toBe(
      true,
    )
    const migrations = await stub.migrations()
    expect(migrations.map((m) => m.state)).toEqual(migrations.map(() => 'active'))
    expect(migrations).toHaveLength(4)
    // One version for the placement, one per flip: the plan served grows monotonically.
    expect(plan.version).toBe(1 + migrations.length)

    // Re-planning on unchanged demand changes nothing.
    const again = await stub.replan(now + 60_000)
    expect(again.changed).toBe(false)
    expect(again.migrations).toEqual({ added: 0, removed: 0, completed: 0 })
    expect((await stub.plan())?.version).toBe(plan.version)
  })

  it('plans with the first declaration of a zone declared twice, the one reads use', async () => {
    const dup = await publishDep('sp-dup', 12_000, 9)
    await env.CONFIG.put(
      RUNTIME_CONFIG_KEY,
      JSON.stringify({
        zones: {
          zones: [
            { id: 'wnam', capacityBytes: 1_000_000, bucket: 'ZONE_WNAM' },
            { id: 'weur', capacityBytes: 1_000_000, bucket: 'ZONE_WEUR' },
            // Declared again with another bucket: ignored, as the edge's reads ignore it.
            { id: 'weur', capacityBytes: 1_000_000, bucket: 'ZONE_APAC' },
          ],
        },
      }),
    )
    clearRuntimeConfigCache()
    const stub = plannerStub('sp-dup')
    const now = Date.now()
    await stub.recordDemand([
      ...demandRows('sp-dup@1.0.0', 'weur', 200, now),
      ...demandRows('sp-dup@1.0.0', 'wnam', 200, now),
    ])
    await stub.replan(now)
    const plan = ShardPlan.parse(await stub.plan())
    const replicas = plan.entries.find((e) => e.id === 'sp-dup@1.0.0')?.replicas ?? []
    expect(replicas).toContain('weur')
    expect(new Set(replicas).size).toBe(replicas.length)
    expect(plan.zones.filter((z) => z.id === 'weur')).toHaveLength(1)
    expect(await bytesIn(env.ZONE_WEUR, blobKey('sp-dup'))).toEqual(dup.body)
    expect(await bytesIn(env.ZONE_APAC, blobKey('sp-dup'))).toBeNull()
  })

  it('never flips a replica whose bytes do not verify', async () => {
    const { envelope } = await publishDep('sp-bad', 8_000, 4)
    // The primary object no longer matches the signed sha256 (corruption): R2 refuses the copy.
    await env.ARTIFACTS.put(blobKey('sp-bad'), new Uint8Array(8_000).fill(7))
    const stub = plannerStub('sp-2')
    const now = Date.now()
    await stub.recordDemand(demandRows('sp-bad@1.0.0', 'weur', 10, now))
    await stub.replan(now)
    const plan = ShardPlan.parse(await stub.plan())
    expect(plan.entries[0]?.replicas).toEqual(['weur'])
    expect(plan.entries[0]?.active).toEqual([])
    const [m] = await stub.migrations()
    expect(m?.state).toBe('failed')
    expect(m?.attempts).toBe(1)
    // Retries stop after three attempts; the replica is never advertised.
    await stub.replan(now + 1000)
    await stub.replan(now + 2000)
    await stub.replan(now + 3000)
    expect((await stub.migrations())[0]?.attempts).toBe(3)
    expect((await stub.plan())?.entries[0]?.active).toEqual([])

    // And a replica whose bytes differ from the manifest fails verification.
    await env.ZONE_WEUR.put(blobKey('sp-bad'), new Uint8Array(8_000).fill(7))
    expect(await verifyReplica(env.ZONE_WEUR, blobKey('sp-bad'), 8_000, envelope.signed.sha256)).toBe(false)
    expect(
      await verifyReplica(
        env.ZONE_WEUR,
        blobKey('sp-bad'),
        8_000,
        await sha256(new Uint8Array(8_000).fill(7)),
      ),
    ).toBe(true)
  })

  it('migrations that failed for good do not hold up the ones queued after them', async () => {
    // More copies failing for good than one cycle advances (16): the primary no longer matches the
    // signed sha256 of each, so R2 refuses every copy, three times.
    const stub = plannerStub('sp-stuck')
    const now = Date.now()
    const demand = []
    for (let i = 0; i < 17; i++) {
      await publishDep(`sp-stuck-${i}`, 2_000, 100 + i)
      await env.ARTIFACTS.put(blobKey(`sp-stuck-${i}`), new Uint8Array(2_000).fill(i))
      demand.push(...demandRows(`sp-stuck-${i}@1.0.0`, 'weur', 10, now))
    }
    await stub.recordDemand(demand)
    for (let round = 0; round < 6; round++) await stub.replan(now + round * 1000)
    const exhausted = (await stub.migrations(1000)).filter((m) => m.state === 'failed' && m.attempts >= 3)
    expect(exhausted).toHaveLength(17)

    // A sound dependency planned later is copied, verified and flipped on the next cycle.
    const good = await publishDep('sp-unstuck', 3_000, 200)
    await stub.recordDemand(demandRows('sp-unstuck@1.0.0', 'apac', 10, now))
    await stub.replan(now + 10_000)
    const entry = ShardPlan.parse(await stub.plan()).entries.find((e) => e.id === 'sp-unstuck@1.0.0')
    expect(entry?.replicas).toEqual(['apac'])
    expect(entry?.active).toEqual(['apac'])
    expect(await bytesIn(env.ZONE_APAC, blobKey('sp-unstuck'))).toEqual(good.body)
  })

  it('drops demand rows for hours ahead of its clock or before the history window, and counts them', async () => {
    await publishDep('sp-ahead', 6_000, 12)
    const stub = plannerStub('sp-clock')
    const hour = Math.floor(Date.now() / HOUR) * HOUR
    const history = 28 * 24 * HOUR
    const row = (at: number, entry: string, requests: number) => ({
      hour: at,
      zone: 'apac',
      entry,
      requests,
      bytes: requests * 6_000,
    })
    const result = await stub.recordDemand([
      // A caller whose clock runs two hours fast: 5000 req/h for an hour nothing has been served in.
      row(hour + 2 * HOUR, 'sp-ahead@1.0.0', 5_000),
      row(hour - history - HOUR, 'sp-ahead@1.0.0', 5_000),
      // The hour in progress and the oldest hour the window keeps (with an hour to spare against the
      // planner's clock crossing an hour boundary since `hour` was taken) are taken.
      row(hour, 'sp-kept@1.0.0', 3),
      row(hour - history + HOUR, 'sp-kept@1.0.0', 3),
    ])
    expect(result).toEqual({ recorded: 2, dropped: { future: 1, expired: 1 } })

    // Once the fast caller's hour has passed, it has not turned into demand: no replica for sp-ahead.
    await stub.replan(hour + 3 * HOUR)
    const plan = ShardPlan.parse(await stub.plan())
    expect(plan.entries.find((e) => e.id === 'sp-ahead@1.0.0')).toBeUndefined()
    const apac = (await stub.forecastSeries(24, hour + 3 * HOUR)).zones.find((z) => z.zone === 'apac')
    expect(apac?.points.find((p) => p.hour === hour + 2 * HOUR)?.actual ?? 0).toBe(0)
  })

  it('refuses demand rows too large to add up, so no row can stop every later cycle', async () => {
    await publishDep('sp-huge', 3_000, 14)
    const stub = plannerStub('sp-huge')
    const now = Date.now()
    const rows = demandRows('sp-huge@1.0.0', 'weur', 10, now)
    const last = rows.at(-1)
    if (last === undefined) throw new Error('no rows')
    // Two rows of one hour near Number.MAX_VALUE: their sum in the table is Infinity.
    const huge = { ...last, requests: 1e308 }
    // Awaited, not handed to expect().rejects: a stub's result is a pipelining proxy (shard-warm-fills).
    const refused = async (rows: unknown[]) => {
      try {
        await stub.recordDemand(rows)
        return null
      } catch (error) {
        return String(error)
      }
    }
    expect(await refused([...rows, huge, huge])).toMatch(/ZodError/)
    expect(await refused([{ ...last, bytes: 1e308 }])).toMatch(/ZodError/)
    // Nothing of the refused calls was stored; the planner still plans on what it was told.
    await stub.recordDemand(rows)
    const result = await stub.replan(now)
    expect(result.changed).toBe(true)
    expect(ShardPlan.parse(await stub.plan()).entries.map((e) => e.id)).toEqual(['sp-huge@1.0.0'])
  })

  it('rewards the prefetch threshold once per hour of traffic, however many cycles ran in it', async () => {
    await publishDep('sp-bandit', 4_000, 7)
    const stub = plannerStub('sp-bandit')
    // Ten minutes into an hour, so the burst below stays inside it.
    const now = Math.floor(Date.now() / HOUR) * HOUR + 10 * 60_000
    await stub.recordDemand(demandRows('sp-bandit@1.0.0', 'weur', 8, now))
    const served = (at: number) => ({
      outcomes: [
        { zone: 'weur', entry: 'sp-bandit@1.0.0', bytes: 4000, source: 'primary' as const, latencyMs: 9, at },
      ],
    })
    const trials = async (at: number) =>
      ShardMetrics.parse(await stub.metrics(24, at)).bandit.reduce((s, a) => s + a.successes + a.failures, 0)
    await stub.report(served(now - HOUR))
    await stub.report(served(now))
    await stub.replan(now)
    expect(await trials(now)).toBe(0)

    // Copies still queued re-run the cycle every second (ShardPlanner.alarm): such a burst is one
    // interval of traffic, not one observation of the threshold per cycle.
    for (let s = 1; s <= 5; s++) await stub.replan(now + s * 1000)
    expect(await trials(now + 5000)).toBeLessThanOrEqual(1)
    const afterBurst = await trials(now + 5000)

    // Once the hour is over, it is rewarded, once; the next cycle in the same hour adds nothing.
    await stub.report(served(now + HOUR), now + HOUR)
    await stub.replan(now + HOUR)
    expect(await trials(now + HOUR)).toBe(afterBurst + 1)
    await stub.replan(now + HOUR + 60_000)
    expect(await trials(now + HOUR + 60_000)).toBe(afterBurst + 1)
  })

  it('scores a zone against its whole demand, not only the dependencies it plans', async () => {
    // 300 dependencies served once an hour each, more than the 256 the planner forecasts one by one. The
    // zone's next hour is 300 requests, exactly as before; its prediction must not leave out the tail.
    const stub = plannerStub('sp-tail')
    const now = Math.floor(Date.now() / HOUR) * HOUR + 10 * 60_000
    const rows = (hour: number) =>
      Array.from({ length: 300 }, (_, i) => ({
        hour,
        zone: 'weur',
        entry: `sp-tail-${i}@1.0.0`,
        requests: 1,
        bytes: 1000,
      }))
    const start = Math.floor(now / HOUR) * HOUR
    for (let h = 72; h >= 1; h--) await stub.recordDemand(rows(start - h * HOUR))
    await stub.replan(now)
    await stub.recordDemand(rows(start))
    await stub.replan(now + HOUR)
    const weur = ShardMetrics.parse(await stub.metrics(24, now + HOUR)).zones.find((z) => z.zone === 'weur')
    expect(weur?.evaluatedHours).toBe(1)
    expect(weur?.smape).toBeLessThan(1)
  })

  it('refits a zone past its error threshold once per hour, not on every cycle in it', async () => {
    await env.CONFIG.put(RUNTIME_CONFIG_KEY, JSON.stringify({ zones: { refitSmape: 5 } }))
    clearRuntimeConfigCache()
    const stub = plannerStub('sp-refit')
    const now = Math.floor(Date.now() / HOUR) * HOUR + 10 * 60_000
    await stub.recordDemand(demandRows('sp-refit@1.0.0', 'weur', 8, now))
    await stub.replan(now)
    // The hour comes in far below the forecast: the zone's sMAPE passes 5 % and its models refit.
    await stub.recordDemand([
      { hour: Math.floor(now / HOUR) * HOUR, zone: 'weur', entry: 'sp-refit@1.0.0', requests: 1, bytes: 1 },
    ])
    const refits = async (at: number) =>
      ShardMetrics.parse(await stub.metrics(1, at)).zones.find((z) => z.zone === 'weur')?.refits ?? 0
    await stub.replan(now + HOUR)
    const first = await refits(now + HOUR)
    expect(first).toBeGreaterThanOrEqual(1)
    // Cycles a second apart while copies are queued see the same history and the same score: refitting
    // again would fit the same numbers to the same weights.
    for (let s = 1; s <= 3; s++) await stub.replan(now + HOUR + s * 1000)
    expect(await refits(now + HOUR + 3000)).toBe(first)
  })

  it('removes a replica by unflipping it at once and deleting it after the grace period', async () => {
    await publishDep('sp-gone', 5_000, 5)
    const stub = plannerStub('sp-3')
    const now = Date.now()
    await stub.recordDemand(demandRows('sp-gone@1.0.0', 'apac', 10, now))
    await stub.replan(now)
    expect((await stub.plan())?.entries[0]?.active).toEqual(['apac'])
    expect(await bytesIn(env.ZONE_APAC, blobKey('sp-gone'))).not.toBeNull()

    // Five weeks later the history window is empty: no demand, no replica.
    const later = now + 35 * 24 * HOUR
    const removed = await stub.replan(later)
    expect(removed.migrations.removed).toBe(1)
    const plan = ShardPlan.parse(await stub.plan())
    expect(plan.entries).toEqual([])
    // Unflipped in the plan at once, but the object stays until isolates' cached plans expire (2 × 30 s).
    expect(await bytesIn(env.ZONE_APAC, blobKey('sp-gone'))).not.toBeNull()
    const removal = (await stub.migrations()).find((m) => m.kind === 'remove')
    expect(removal?.state).toBe('unflipped')
    expect(removal?.notBefore).toBe(later + 60_000)
    await stub.replan(later + 61_000)
    expect((await stub.migrations()).find((m) => m.kind === 'remove')?.state).toBe('deleted')
    expect(await bytesIn(env.ZONE_APAC, blobKey('sp-gone'))).toBeNull()
  })

  it('re-plans on its alarm, scores forecasts per zone and keeps serve metrics', async () => {
    await publishDep('sp-m', 4_000, 6)
    await env.CONFIG.put(RUNTIME_CONFIG_KEY, JSON.stringify({ zones: { refitSmape: 5 } }))
    clearRuntimeConfigCache()
    const stub = plannerStub('sp-4')
    const now = Date.now()
    await stub.recordDemand(demandRows('sp-m@1.0.0', 'weur', 8, now))
    // A report arms the alarm; running it plans.
    await stub.report({
      outcomes: [
        { zone: 'weur', entry: 'sp-m@1.0.0', bytes: 4000, source: 'primary', latencyMs: 40, at: now },
        { zone: 'wnam', entry: 'sp-m@1.0.0', bytes: 4000, source: 'primary', latencyMs: 10, at: now },
      ],
    })
    expect(await runDurableObjectAlarm(stub)).toBe(true)
    const plan = ShardPlan.parse(await stub.plan())
    expect(plan.entries[0]?.active).toEqual(['weur'])
    expect(plan.prefetchThreshold).toBeGreaterThanOrEqual(0.5)

    // The next hour is served from the replica, far below the forecast: the error is scored and refits.
    await stub.report(
      {
        outcomes: [
          { zone: 'weur', entry: 'sp-m@1.0.0', bytes: 4000, source: 'replica', latencyMs: 5, at: now + HOUR },
        ],
      },
      now + HOUR,
    )
    await stub.replan(now + 2 * HOUR)
    const metrics = ShardMetrics.parse(await stub.metrics(24, now + 2 * HOUR))
    const weur = metrics.zones.find((z) => z.zone === 'weur')
    const wnam = metrics.zones.find((z) => z.zone === 'wnam')
    expect(weur?.requests).toBe(2)
    expect(weur?.hits).toBe(1)
    expect(weur?.crossZoneFetches).toBe(1)
    expect(weur?.bytesMoved).toBe(4000)
    expect(weur?.meanLatencyMs).toBeCloseTo(22.5)
    expect(weur?.evaluatedHours).toBeGreaterThanOrEqual(1)
    expect(weur?.smape).toBeGreaterThan(100)
    expect(weur?.refits).toBeGreaterThanOrEqual(2)
    // wnam is the primary's zone: serving it from the primary is local, not cross-zone.
    expect(wnam?.hits).toBe(1)
    expect(wnam?.crossZoneFetches).toBe(0)
    expect(metrics.bandit.reduce((s, a) => s + a.successes + a.failures, 0)).toBeGreaterThanOrEqual(1)
    // The far lower demand unflipped the replica again: nothing is active, whatever its add row says.
    expect(ShardPlan.parse(await stub.plan()).entries[0]?.active).toEqual([])
    expect(metrics.migrations.active).toBe(0)
  })
})
