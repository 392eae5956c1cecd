import { runDurableObjectAlarm, runInDurableObject } from 'cloudflare:test'
import { env } from 'cloudflare:workers'
import { describe, expect, it } from 'vitest'
import { AccessSummarySchema, AggregatorSettings } from '../../schemas/aggregation.ts'
import { DO_ROW_LIMIT_BYTES, ROW_BUDGET_BYTES, utf8Bytes } from '../row-limits.ts'
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
    expect(ROW_BUDGET_BYTES).toBeLessThanOrEqual(DO_ROW_LIMIT_BYTES / 2)
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
    expect(stored.summary.artifacts[0]?.artifact).toBe(longName(4999, 512))
  })
})
