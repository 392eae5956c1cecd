import { runInDurableObject } from 'cloudflare:test'
import { env } from 'cloudflare:workers'
import { beforeEach, describe, expect, it } from 'vitest'
import { ShardMetrics } from '../../schemas/shards.ts'
import { clearRuntimeConfigCache, RUNTIME_CONFIG_KEY } from '../../workers/config/runtime-config.ts'
import { createDemandTables, HISTORY_HOURS } from '../shard-demand.ts'
import { demandRows, HOUR, plannerStub, publishDep } from './shard-helpers.ts'

/** Ten minutes into the current hour, so everything reported "now" lands in one hour. */
const hourStart = () => Math.floor(Date.now() / HOUR) * HOUR
const served = (at: number, bytes: number) => ({
  zone: 'weur',
  entry: 'wf-served@1.0.0',
  bytes,
  source: 'replica' as const,
  latencyMs: 5,
  at,
})

/** The one arm's [successes, failures] (each test configures a single threshold). */
async function armCounts(stub: ReturnType<typeof plannerStub>, at: number): Promise<[number, number]> {
  const [arm] = ShardMetrics.parse(await stub.metrics(24, at)).bandit
  return [arm?.successes ?? -1, arm?.failures ?? -1]
}

/**
 * What the RPC threw, as a string (null if it returned). Awaited here rather than handed to
 * `expect().rejects`: a stub's result is a pipelining proxy, and every property expect() probes on it
 * becomes another remote call that rejects unhandled.
 */
async function rejection(call: Promise<unknown>): Promise<string | null> {
  try {
    await call
    return null
  } catch (error) {
    return String(error)
  }
}

describe('ShardPlanner: the prefetch threshold pays for warm fills', () => {
  beforeEach(async () => {
    // One arm, λ = 1: a reward of 1 is a success and a reward of 0 a failure whatever the random draw
    // (the Bernoulli trick records success when a draw in [0, 1) falls below the reward).
    await env.CONFIG.put(
      RUNTIME_CONFIG_KEY,
      JSON.stringify({ zones: { prefetchThresholds: [1], lambda: 1 } }),
    )
    clearRuntimeConfigCache()
  })

  it('keeps warm fills per zone and hour, out of demand, and charges them to the arm played', async () => {
    const stub = plannerStub('wf-charged')
    const hour = hourStart()
    const now = hour + 10 * 60_000
    await stub.replan(now)
    const answer = await stub.report({
      outcomes: [served(now, 1_000)],
      // Warming read five times the bytes served: 1 − 1 × 5 clamps the reward to 0.
      warmFills: [
        { zone: 'weur', bytes: 3_000, at: now },
        { zone: 'weur', bytes: 2_000, at: now + 60_000 },
      ],
    })
    expect(answer).toEqual({ recorded: 1, warmFills: 2, dropped: { future: 0, expired: 0 } })
    const metrics = ShardMetrics.parse(await stub.metrics(24, now))
    const weur = metrics.zones.find((z) => z.zone === 'weur')
    expect(weur?.warmFillBytes).toBe(5_000)
    // Warm reads are not requests: one request, one hit, only the served bytes.
    expect(weur?.requests).toBe(1)
    expect(weur?.hitRatio).toBe(1)
    expect(weur?.bytesServed).toBe(1_000)
    const series = (await stub.forecastSeries(24, now)).zones.find((z) => z.zone === 'weur')
    expect(series?.points.find((p) => p.hour === hour)?.actual).toBe(1)

    await stub.replan(now + HOUR)
    expect(await armCounts(stub, now + HOUR)).toEqual([0, 1])
  })

  it('rewards the arm played once, also when the cycle that rewarded it failed and ran again', async () => {
    const stub = plannerStub('wf-retried')
    const now = hourStart() + 10 * 60_000
    await stub.replan(now)
    await stub.report({ outcomes: [served(now, 1_000)] })
    // A demand row the forecast refuses (an Infinity stored before rows were bounded): the cycle throws
    // after the bandit's reward, like any failure later in a cycle or an eviction during its awaits.
    await runInDurableObject(stub, (_instance, state) => {
      state.storage.sql.exec(
        "INSERT INTO demand (hour, zone, entry, requests, bytes) VALUES (?, 'weur', 'wf-bad@1.0.0', 9e999, 0)",
        hourStart(),
      )
    })
    // The alarm's retries (or a re-plan) run the cycle again over the same hour of traffic.
    expect(await rejection(stub.replan(now + HOUR))).toMatch(/finite/)
    expect(await rejection(stub.replan(now + HOUR + 60_000))).toMatch(/finite/)
    expect(await armCounts(stub, now + HOUR)).toEqual([1, 0])
  })

  it('does not charge the arm for replica copies, which the threshold does not cause', async () => {
    await publishDep('wf-copied', 40_000, 31)
    const stub = plannerStub('wf-copies')
    const now = hourStart() + 10 * 60_000
    await stub.recordDemand(demandRows('wf-copied@1.0.0', 'weur', 8, now))
    // This cycle copies a 40 kB replica into weur: bytes moved in the hour judged next.
    await stub.replan(now)
    await stub.report({ outcomes: [served(now, 1_000)] })
    const weur = ShardMetrics.parse(await stub.metrics(24, now)).zones.find((z) => z.zone === 'weur')
    expect(weur?.bytesMoved).toBe(40_000)
    expect(weur?.warmFillBytes).toBe(0)

    // Every request a hit and no warming: reward 1, however many bytes placement moved.
    await stub.replan(now + HOUR)
    expect(await armCounts(stub, now + HOUR)).toEqual([1, 0])
  })

  it('drops outcomes and warm fills whose time lies ahead of its clock or before the history window', async () => {
    const stub = plannerStub('wf-window')
    const now = hourStart() + 10 * 60_000
    const ahead = now + 3 * HOUR
    const expired = now - (HISTORY_HOURS + 2) * HOUR
    const answer = await stub.report({
      outcomes: [served(now, 1_000), served(ahead, 50_000), served(expired, 70_000)],
      warmFills: [
        { zone: 'weur', bytes: 3_000, at: now },
        { zone: 'weur', bytes: 90_000, at: ahead },
        { zone: 'weur', bytes: 80_000, at: expired },
      ],
    })
    // Once the far-ahead hour has come, it holds nothing: it was never stored.
    const weur = ShardMetrics.parse(await stub.metrics(24, ahead)).zones.find((z) => z.zone === 'weur')
    expect(weur?.requests).toBe(1)
    expect(weur?.bytesServed).toBe(1_000)
    expect(weur?.warmFillBytes).toBe(3_000)
    const series = (await stub.forecastSeries(24, ahead)).zones.find((z) => z.zone === 'weur')
    expect(series?.points.find((p) => p.hour === hourStart() + 3 * HOUR)?.actual ?? 0).toBe(0)
    expect(answer).toEqual({ recorded: 1, warmFills: 1, dropped: { future: 2, expired: 2 } })
  })

  it('rejects a malformed report whole, storing nothing of it', async () => {
    const stub = plannerStub('wf-malformed')
    const now = hourStart() + 10 * 60_000
    const bad = [
      { zone: 'weur', bytes: -1, at: now },
      { zone: 'weur', bytes: 1.5, at: now },
      { zone: 'weur', bytes: Number.MAX_SAFE_INTEGER + 2, at: now },
      { zone: 'Not A Zone', bytes: 10, at: now },
      { zone: 'weur', bytes: 10, at: -5 },
      { zone: 'weur', bytes: '10', at: now },
      { zone: 'weur', at: now },
    ]
    for (const fill of bad) {
      const thrown = await rejection(stub.report({ outcomes: [served(now, 1_000)], warmFills: [fill] }))
      expect(thrown, JSON.stringify(fill)).toMatch(/ZodError|invalid|too/i)
    }
    const tooMany = Array.from({ length: 5_001 }, () => ({ zone: 'weur', bytes: 1, at: now }))
    expect(await rejection(stub.report({ outcomes: [], warmFills: tooMany }))).not.toBeNull()
    expect(
      await rejection(stub.report({ outcomes: [], warmFills: { zone: 'weur', bytes: 1, at: now } })),
    ).not.toBeNull()
    const weur = ShardMetrics.parse(await stub.metrics(24, now)).zones.find((z) => z.zone === 'weur')
    expect(weur?.requests).toBe(0)
    expect(weur?.warmFillBytes).toBe(0)
  })

  it('adds the warm-fill column to a zone_metrics table made by the previous schema, keeping its rows', async () => {
    const stub = plannerStub('wf-old-schema')
    const hour = hourStart()
    await runInDurableObject(stub, (_planner, state) => {
      const sql = state.storage.sql
      // The table as planners before this change created it, with an hour already counted.
      sql.exec('DROP TABLE zone_metrics')
      sql.exec(`CREATE TABLE zone_metrics (hour INTEGER NOT NULL, zone TEXT NOT NULL,
        requests REAL NOT NULL DEFAULT 0, hits REAL NOT NULL DEFAULT 0, cross_zone REAL NOT NULL DEFAULT 0,
        bytes_served REAL NOT NULL DEFAULT 0, cross_zone_bytes REAL NOT NULL DEFAULT 0,
        bytes_moved REAL NOT NULL DEFAULT 0, latency_ms REAL NOT NULL DEFAULT 0, refits REAL NOT NULL DEFAULT 0,
        PRIMARY KEY (hour, zone))`)
      sql.exec(
        `INSERT INTO zone_metrics (hour, zone, requests, hits, bytes_served, bytes_moved, latency_ms)
           VALUES (?, 'weur', 7, 6, 7000, 123, 70)`,
        hour,
      )
      // What the planner's constructor runs on every start; twice, as every restart after the first does.
      createDemandTables(sql)
      createDemandTables(sql)
      const columns = sql
        .exec<{ name: string }>('PRAGMA table_info(zone_metrics)')
        .toArray()
        .map((c) => c.name)
      expect(columns.filter((c) => c === 'warm_fill_bytes')).toHaveLength(1)
    })
    await stub.report({ outcomes: [], warmFills: [{ zone: 'weur', bytes: 900, at: hour + 60_000 }] })
    const weur = ShardMetrics.parse(await stub.metrics(24, hour + 60_000)).zones.find(
      (z) => z.zone === 'weur',
    )
    expect(weur).toMatchObject({
      requests: 7,
      hits: 6,
      bytesServed: 7000,
      bytesMoved: 123,
      warmFillBytes: 900,
    })
  })
})
