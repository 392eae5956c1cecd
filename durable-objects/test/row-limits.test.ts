import { runDurableObjectAlarm, runInDurableObject } from 'cloudflare:test'
import { env } from 'cloudflare:workers'
import { describe, expect, it } from 'vitest'
import { buildShardPlan, MAX_HOT_PER_ZONE, type PlanDependency } from '../../predict/index.ts'
import { AccessSummarySchema, AggregatorSettings } from '../../schemas/aggregation.ts'
import { MAX_HISTORY, MAX_STAGES, RolloutRecord } from '../../schemas/rollout.ts'
import { MAX_ZONE_MAP_ENTRIES, ManifestFacts, ShardPlan, ZonesConfig } from '../../schemas/shards.ts'
import { keys } from '../../workers/storage/keys.ts'
import { writeClient } from '../client-table.ts'
import { DO_ROW_LIMIT_BYTES, ROW_BUDGET_BYTES, utf8Bytes } from '../row-limits.ts'
import { MAX_ENTRIES } from '../shard-forecast.ts'
import { savePlan } from '../shard-plans.ts'
import { batchOf } from './helpers.ts'

/**
 * Local workerd stores rows of any size; production refuses one over 2 MB (row-limits.ts). So each test
 * here builds the worst case a table can be given and measures what was stored.
 */

const regionStub = (region: string) => env.REGION_AGGREGATOR.get(env.REGION_AGGREGATOR.idFromName(region))
const globalStub = () => env.GLOBAL_AGGREGATOR.get(env.GLOBAL_AGGREGATOR.idFromName('global'))

/** The longest artifact name the schemas take (ArtifactName, 128), distinct by `i`. */
const longName = (i: number, length = 128) => `${String(i).padStart(6, '0')}-${'n'.repeat(length - 7)}`

/** Bytes of the global row of `region`, and the summary it holds. */
async function storedRollup(region: string) {
  return runInDurableObject(globalStub(), (_instance, state) => {
    const row = state.storage.sql
      .exec<{ bytes: number; summary: string }>(
        'SELECT length(CAST(summary AS BLOB)) AS bytes, summary FROM regions WHERE region = ?',
        region,
      )
      .one()
    return { bytes: row.bytes, summary: AccessSummarySchema.parse(JSON.parse(row.summary)) }
  })
}

describe('rows our Durable Objects write fit a production row (2 MB)', () => {
  it('a region rollup at rollupMaxArtifacts 5000 with the longest names: the coldest go until it fits', async () => {
    const region = 'row-cap'
    const stub = regionStub(region)
    const max = AggregatorSettings.shape.rollupMaxArtifacts.unwrap().maxValue ?? 0
    expect(max).toBe(5000)
    // Binds the region (the alarm rolls up only a bound one).
    expect(
      (await stub.ingest({ region, batch: batchOf('client-row-cap', 1, ['seed']), ratePerMinute: 60 }))
        .status,
    ).toBe('accepted')
    // The worst case the settings allow: as many artifacts as the rollup takes, each with the longest
    // name, a distinct count (artifact i has count i + 1) and the 4 transitions a rollup keeps per artifact.
    const now = Date.now()
    await runInDurableObject(stub, (_instance, state) => {
      const sql = state.storage.sql
      for (let i = 0; i < max; i++) {
        sql.exec(
          'INSERT INTO artifacts (artifact, count, updated_at) VALUES (?, ?, ?)',
          longName(i),
          i + 1,
          now,
        )
        for (let k = 1; k <= 4; k++) {
          sql.exec(
            'INSERT INTO transitions (src, dst, count, updated_at, mean_lag_ms) VALUES (?, ?, ?, ?, ?)',
            longName(i),
            longName((i + k) % max),
            k,
            now,
            60_000,
          )
        }
      }
    })
    // Reloads the summary from the rows, with caps that keep them all.
    await stub.configure({ maxArtifacts: max, rollupMaxArtifacts: max, maxTransitionsPerArtifact: 4 })
    const whole = (await stub.snapshot()).summary
    expect(whole.artifacts.length).toBe(max)
    // Without a trim, this is what the global row would hold: far over the limit.
    expect(utf8Bytes(JSON.stringify(whole))).toBeGreaterThan(3 * DO_ROW_LIMIT_BYTES)

    expect(await runDurableObjectAlarm(stub)).toBe(true)
    const stored = await storedRollup(region)
    expect(stored.bytes).toBeLessThanOrEqual(ROW_BUDGET_BYTES)
    expect(ROW_BUDGET_BYTES).toBeLessThanOrEqual(0.75 * DO_ROW_LIMIT_BYTES)
    // Deterministic: the hottest are kept, the coldest dropped, transitions only between kept artifacts.
    const kept = new Set(stored.summary.artifacts.map((a) => a.artifact))
    expect(kept.size).toBeGreaterThan(100)
    expect(kept.size).toBeLessThan(max)
    expect(kept.has(longName(max - 1))).toBe(true)
    expect(kept.has(longName(0))).toBe(false)
    const coldestKept = Math.min(...stored.summary.artifacts.map((a) => a.count))
    expect(whole.artifacts.filter((a) => a.count > coldestKept).every((a) => kept.has(a.artifact))).toBe(true)
    expect(stored.summary.transitions.length).toBeGreaterThan(0)
    expect(stored.summary.transitions.every((t) => kept.has(t.from) && kept.has(t.to))).toBe(true)
  })

  it('the GlobalAggregator trims any rollup it is sent, whatever its sender capped', async () => {
    // The schema's own worst case for names (512) from a sender that did not trim (an older deployment).
    const now = Date.now()
    const artifacts = Array.from({ length: 5000 }, (_, i) => ({
      artifact: longName(i, 512),
      count: i + 1,
      updatedAt: now,
    }))
    const summary = AccessSummarySchema.parse({
      version: 1,
      scope: 'row-cap-2',
      halfLifeMs: 86_400_000,
      profileHalfLifeMs: 86_400_000,
      updatedAt: now,
      artifacts,
      transitions: [],
      profile: { buckets: new Array(168).fill(0), updatedAt: now },
      limits: { maxArtifacts: 10_000, maxTransitionsPerArtifact: 4, maxLagMs: 3_600_000 },
    })
    expect(utf8Bytes(JSON.stringify(summary))).toBeGreaterThan(DO_ROW_LIMIT_BYTES)
    await globalStub().submit({ region: 'row-cap-2', population: 1, summary })
    const stored = await storedRollup('row-cap-2')
    expect(stored.bytes).toBeLessThanOrEqual(ROW_BUDGET_BYTES)
    // No more than needed is dropped: one more artifact (≈560 bytes each here) would not fit.
    expect(stored.bytes).toBeGreaterThan(ROW_BUDGET_BYTES - 600)
    expect(stored.summary.artifacts[0]?.artifact).toBe(longName(4999, 512))
  })

  it('a shard plan at its bounds: 256 dependencies of the longest ids, in 32 zones, every one hot everywhere', async () => {
    // The schema's bounds: 32 zones, 8 replication thresholds (so at most 8 replicas), MAX_ENTRIES planned.
    const zoneMax = 32
    const thresholdsMax = 8
    const spec = (i: number) => ({ id: `zone-${i}`, capacityBytes: 1, weight: 1 })
    expect(ZonesConfig.safeParse({ zones: Array.from({ length: zoneMax }, (_, i) => spec(i)) }).success).toBe(
      true,
    )
    expect(
      ZonesConfig.safeParse({ zones: Array.from({ length: zoneMax + 1 }, (_, i) => spec(i)) }).success,
    ).toBe(false)
    expect(
      ZonesConfig.safeParse({ replicationThresholds: new Array(thresholdsMax + 1).fill(1) }).success,
    ).toBe(false)
    expect(MAX_ENTRIES).toBe(256)
    const zones = Array.from({ length: zoneMax }, (_, i) => ({
      id: `zone-${String(i).padStart(2, '0')}-${'z'.repeat(8)}`,
      capacityBytes: 2 ** 50,
      weight: 1,
      bucket: `ZONE_${String(i).padStart(2, '0')}_${'B'.repeat(56)}`,
    }))
    // Demands with the longest decimal expansions, every zone over every threshold.
    const deps: PlanDependency[] = Array.from({ length: MAX_ENTRIES }, (_, i) => {
      const name = longName(i)
      const version = `1.0.0-${'r'.repeat(58)}`
      return {
        id: `${name}@${version}`,
        name,
        version,
        key: keys.blob(name, version),
        size: 2 ** 40 + i,
        sha256: 'a'.repeat(64),
        demand: Object.fromEntries(zones.map((z, k) => [z.id, 1000 + i / 3 + k / 7])),
      }
    })
    const options = {
      replicationThresholds: [1, 2, 3, 4, 5, 6, 7, 8],
      prefetchThreshold: 0.5,
      minEdgeWeight: 1,
      horizonHours: 168,
    }
    const built = buildShardPlan(deps, zones, [], options, null, new Date().toISOString())
    // Every replica active, every dependency under-replicated too: the largest each list can be.
    const plan = ShardPlan.parse({
      ...built,
      entries: built.entries.map((e) => ({ ...e, active: e.replicas })),
      underReplicated: deps.map((d) => d.id),
    })
    expect(plan.entries.every((e) => e.replicas.length === thresholdsMax)).toBe(true)
    expect(plan.zones.every((z) => z.hot.length === MAX_HOT_PER_ZONE)).toBe(true)
    const stub = env.SHARD_PLANNER.get(env.SHARD_PLANNER.idFromName('row-cap'))
    const bytes = await runInDurableObject(stub, (_instance, state) => {
      savePlan(state.storage.sql, plan, Date.now())
      return state.storage.sql
        .exec<{ bytes: number }>(
          'SELECT length(CAST(plan AS BLOB)) AS bytes FROM plans WHERE version = ?',
          plan.version,
        )
        .one().bytes
    })
    expect(bytes).toBeLessThanOrEqual(ROW_BUDGET_BYTES)
  })

  it('the other JSON rows at their schema bounds: client state, rollout record, manifest facts, zones', async () => {
    const version = `1.0.0-${'r'.repeat(58)}`
    const now = Date.now()
    // A client row with historyPerClient and installedPerClient at their maxima, the longest names.
    const settings = AggregatorSettings.parse({ historyPerClient: 256, installedPerClient: 1024 })
    expect(() => AggregatorSettings.parse({ historyPerClient: 257 })).toThrow()
    expect(() => AggregatorSettings.parse({ installedPerClient: 1025 })).toThrow()
    const clientBytes = await runInDurableObject(regionStub('row-cap-clients'), (_instance, state) => {
      writeClient(state.storage.sql, {
        clientId: 'client-row-cap',
        lastSeq: Number.MAX_SAFE_INTEGER,
        lastSeen: now,
        bucket: { tokens: 1.234567890123, refilledAt: now },
        history: Array.from({ length: settings.historyPerClient }, (_, i) => ({
          artifact: longName(i),
          at: now + 0.5,
        })),
        installed: Array.from({ length: settings.installedPerClient }, (_, i) => ({
          artifact: longName(i),
          version,
          at: now + 0.5,
        })),
      })
      return state.storage.sql
        .exec<{ bytes: number }>(
          `SELECT length(CAST(history AS BLOB)) + length(CAST(installed AS BLOB)) + 64 AS bytes FROM clients
           WHERE client_id = 'client-row-cap'`,
        )
        .one().bytes
    })
    expect(clientBytes).toBeLessThanOrEqual(ROW_BUDGET_BYTES)

    // A rollout record with MAX_STAGES stages and MAX_HISTORY events of the longest detail.
    const at = new Date(now).toISOString()
    const record = RolloutRecord.parse({
      name: longName(0),
      channel: 'c'.repeat(32),
      spec: {
        version,
        startAt: at,
        stages: Array.from({ length: MAX_STAGES }, (_, i) => ({
          percent: i === MAX_STAGES - 1 ? 100 : i + 1,
          durationMs: 86_400_000,
        })),
        maxFailureRate: 0.123456789,
        minSample: 1_000_000,
      },
      state: 'halted',
      createdAt: now,
      startAt: now,
      currentStage: MAX_STAGES - 1,
      stageStartedAt: new Array(MAX_STAGES).fill(now),
      nextChangeAt: now,
      pausedRemainingMs: now,
      haltedReason: 'h'.repeat(300),
      history: Array.from({ length: MAX_HISTORY }, () => ({
        at,
        event: 'completed',
        stage: MAX_STAGES,
        detail: 'd'.repeat(300),
        signedAt: at,
      })),
    })
    expect(utf8Bytes(JSON.stringify(record))).toBeLessThanOrEqual(ROW_BUDGET_BYTES)

    // What the ShardPlanner caches of a manifest: 256 declared dependencies of the longest names.
    const facts = ManifestFacts.parse({
      size: Number.MAX_SAFE_INTEGER,
      sha256: 'a'.repeat(64),
      requires: Array.from({ length: 256 }, (_, i) => longName(i)),
    })
    expect(utf8Bytes(JSON.stringify(facts))).toBeLessThanOrEqual(ROW_BUDGET_BYTES)

    // The planner's last good copy of the zones config: the map at its bound, 32 zones.
    const entry = (i: number) => [`${String(i).padStart(4, '0')}${'k'.repeat(12)}`, `z${'x'.repeat(15)}`]
    const zonesAt = (entries: number) =>
      ZonesConfig.safeParse({
        map: Object.fromEntries(Array.from({ length: entries }, (_, i) => entry(i))),
        zones: Array.from({ length: 32 }, (_, i) => ({
          id: `z${String(i).padStart(2, '0')}${'x'.repeat(13)}`,
          capacityBytes: Number.MAX_SAFE_INTEGER,
          weight: 999.123456789,
          bucket: `Z${String(i).padStart(2, '0')}${'B'.repeat(61)}`,
        })),
        replicationThresholds: new Array(8).fill(123456.789),
        prefetchThresholds: new Array(16).fill(123456.789),
      })
    expect(zonesAt(MAX_ZONE_MAP_ENTRIES + 1).success).toBe(false)
    const zones = zonesAt(MAX_ZONE_MAP_ENTRIES)
    expect(zones.success).toBe(true)
    expect(utf8Bytes(JSON.stringify(zones.data))).toBeLessThanOrEqual(ROW_BUDGET_BYTES)
  })
})
