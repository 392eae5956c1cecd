import { evictDurableObject, runInDurableObject } from 'cloudflare:test'
import { env } from 'cloudflare:workers'
import { beforeEach, describe, expect, it } from 'vitest'
import { ShardPlan } from '../../schemas/shards.ts'
import {
  clearRuntimeConfigCache,
  LAST_GOOD_CONFIG_KEY,
  RUNTIME_CONFIG_KEY,
} from '../../workers/config/runtime-config.ts'
import { batchOf, postTelemetry } from './helpers.ts'
import { demandRows, plannerStub, publishDep } from './shard-helpers.ts'

/**
 * A stored row that is not JSON (damaged, or written by another deployment's code) costs that row, not
 * the object (durable-objects/stored-json.ts): before, `schema.safeParse(JSON.parse(row))` threw on such
 * a row, so a damaged summary profile bricked a region's telemetry at construction, and a damaged plan,
 * model, manifest fact or bandit row failed every planning cycle (and its alarm) for good.
 */

const DAMAGED = '{not json'

describe('rows that are not JSON', () => {
  beforeEach(async () => {
    await env.CONFIG.delete(RUNTIME_CONFIG_KEY)
    await env.CONFIG.delete(LAST_GOOD_CONFIG_KEY)
    clearRuntimeConfigCache()
  })

  it('a damaged summary profile: the region wakes with an empty profile and keeps counting', async () => {
    const region = 'damaged-profile'
    const stub = env.REGION_AGGREGATOR.get(env.REGION_AGGREGATOR.idFromName(region))
    expect((await postTelemetry(region, batchOf('client-p001', 1, ['app']))).status).toBe(202)
    await runInDurableObject(stub, (_instance, state) => {
      state.storage.sql.exec("UPDATE meta SET value = ? WHERE key IN ('profile', 'segment_profile')", DAMAGED)
    })
    await evictDurableObject(stub)
    expect((await postTelemetry(region, batchOf('client-p001', 2, ['lib']))).status).toBe(202)
    const { summary } = await stub.snapshot()
    expect(summary.artifacts.map((a) => a.artifact).sort()).toEqual(['app', 'lib'])
  })

  it('damaged plan, model, manifest-fact and bandit rows: the planner plans again', async () => {
    await publishDep('dmg-a', 20_000, 31)
    const stub = plannerStub('damaged-rows')
    const now = Date.now()
    await stub.recordDemand(demandRows('dmg-a@1.0.0', 'weur', 40, now))
    expect((await stub.replan(now)).changed).toBe(true)
    const damaged = await runInDurableObject(stub, (_instance, state) => {
      const sql = state.storage.sql
      sql.exec('UPDATE plans SET plan = ?', DAMAGED)
      sql.exec('UPDATE models SET model = ?', DAMAGED)
      sql.exec("UPDATE meta SET value = ? WHERE key LIKE 'manifest:%'", DAMAGED)
      // The bandit's arms are stored once a cycle rewards one; damaged all the same.
      sql.exec(
        "INSERT INTO meta (key, value) VALUES ('bandit', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        DAMAGED,
      )
      const n = (q: string) => sql.exec<{ n: number }>(q, DAMAGED).one().n
      return {
        plans: n('SELECT COUNT(*) AS n FROM plans WHERE plan = ?'),
        models: n('SELECT COUNT(*) AS n FROM models WHERE model = ?'),
        meta: n('SELECT COUNT(*) AS n FROM meta WHERE value = ?'),
      }
    })
    // Every kind of row was there to damage (the bandit row and one manifest fact at least).
    expect(damaged.plans).toBeGreaterThan(0)
    expect(damaged.models).toBeGreaterThan(0)
    expect(damaged.meta).toBeGreaterThanOrEqual(2)
    expect(await stub.plan()).toBeNull()
    await stub.replan(now + 3_600_000)
    const plan = ShardPlan.parse(await stub.plan())
    expect(plan.entries.map((e) => e.id)).toEqual(['dmg-a@1.0.0'])
    expect((await stub.metrics(24, now + 3_600_000)).zones.length).toBeGreaterThan(0)
  })

  it("a damaged copy of the last good zones while KV holds a rejected document: the planner's zones", async () => {
    const stub = plannerStub('damaged-zones')
    await env.CONFIG.put(RUNTIME_CONFIG_KEY, JSON.stringify({ zones: { replanIntervalMs: 600_000 } }))
    clearRuntimeConfigCache()
    await stub.metrics()
    await runInDurableObject(stub, (_instance, state) => {
      const sql = state.storage.sql
      expect(sql.exec("SELECT COUNT(*) AS n FROM meta WHERE key = 'zonesLastGood'").one().n).toBe(1)
      sql.exec("UPDATE meta SET value = ? WHERE key = 'zonesLastGood'", DAMAGED)
    })
    await env.CONFIG.put(RUNTIME_CONFIG_KEY, '{garbled')
    clearRuntimeConfigCache()
    expect((await stub.metrics()).zones.length).toBeGreaterThan(0)
  })
})
