import { env } from 'cloudflare:workers'
import { beforeAll, describe, expect, it } from 'vitest'
import {
  clientsBetween,
  control,
  HOUR,
  reportOutcome,
  startRollout,
} from '../../durable-objects/test/rollout-helpers.ts'
import { demandRows, plannerStub, publishDep } from '../../durable-objects/test/shard-helpers.ts'
import { clearRuntimeConfigCache, RUNTIME_CONFIG_KEY } from '../config/runtime-config.ts'
import { forecastViewOf, loadForecast } from '../dashboard/sections/forecast.ts'
import { loadRollouts } from '../dashboard/sections/rollouts.ts'
import { loadShards } from '../dashboard/sections/shards.ts'
import { dashboardHtml, quietZone, sectionOf } from './dashboard-helpers.ts'

describe('dashboard: rollouts', () => {
  beforeAll(async () => {
    await publishDep('dash-roll', 4_000, 21)
    const spec = {
      version: '1.0.0',
      stages: [
        { percent: 50, durationMs: HOUR },
        { percent: 100, durationMs: HOUR },
      ],
      maxFailureRate: 0.2,
      minSample: 5,
    }
    const started = await startRollout('dash-roll', spec)
    expect(started.status, await started.clone().text()).toBe(201)
    // Four clients of the first cohort report: three installed, one failed.
    const clients = clientsBetween('dash-roll', '1.0.0', 0, 0.5, 4)
    for (const [i, client] of clients.entries()) {
      const outcome = i === 0 ? { outcome: 'failed', errorClass: 'health-check' } : { outcome: 'installed' }
      const res = await reportOutcome('dash-roll', { client, version: '1.0.0', ...outcome })
      expect(res.status, await res.clone().text()).toBeLessThan(300)
    }
  })

  it('reads stage, cohort progress and failure rate from the coordinator', async () => {
    const view = await loadRollouts(env)
    const r = view.rollouts.find((x) => x.name === 'dash-roll')
    expect(r).toMatchObject({
      channel: 'stable',
      version: '1.0.0',
      state: 'running',
      currentStage: 0,
      stageCount: 2,
      currentPercent: 50,
      overall: { reported: 4, failures: 1, failureRate: 0.25 },
    })
    expect(r?.stages[0]).toMatchObject({ stage: 0, percent: 50, reported: 4, installed: 3, failures: 1 })
    expect(r?.errorClasses).toEqual([{ errorClass: 'health-check', count: 1 }])
  })

  it('renders the rollout on the page', async () => {
    const section = sectionOf(await dashboardHtml(), 'rollouts')
    expect(section).toContain('dash-roll')
    expect(section).toContain('data-state="running"')
    expect(section).toContain('1 / 2')
    expect(section).toContain('25.0 %')
    expect(section).toContain('health-check')
  })

  it('says why a rollout is paused or aborted, from the reason given with the control', async () => {
    await publishDep('dash-held', 4_000, 23)
    const spec = { version: '1.0.0', stages: [{ percent: 100, durationMs: HOUR }] }
    expect((await startRollout('dash-held', spec)).status).toBe(201)
    const reasonShown = async () =>
      (await loadRollouts(env)).rollouts.find((x) => x.name === 'dash-held')?.stateReason
    expect(await reasonShown()).toBeNull()
    expect((await control('dash-held', 'pause', { reason: 'waiting for <the> db migration' })).status).toBe(
      200,
    )
    expect(await reasonShown()).toBe('waiting for <the> db migration')
    const section = sectionOf(await dashboardHtml(), 'rollouts')
    expect(section).toContain('Paused: waiting for &lt;the&gt; db migration')
    expect((await control('dash-held', 'abort', { reason: 'bad build' })).status).toBe(200)
    expect(await reasonShown()).toBe('bad build')
    expect(sectionOf(await dashboardHtml(), 'rollouts')).toContain('Aborted: bad build')
  })
})

describe('dashboard: shard map and forecast vs actual', () => {
  beforeAll(async () => {
    await env.CONFIG.put(RUNTIME_CONFIG_KEY, JSON.stringify({ zones: { metricsFlushMs: 0, planCacheMs: 0 } }))
    clearRuntimeConfigCache()
    await publishDep('dash-shard', 6_000, 22)
    const now = Date.now()
    await plannerStub().recordDemand(demandRows('dash-shard@1.0.0', 'apac', 6, now))
    await plannerStub().replan()
    // Served requests: 3 two hours ago, 5 in the current hour (zone metrics, the "actual" line).
    const at = (hoursAgo: number, i: number) => Math.floor(now / HOUR) * HOUR - hoursAgo * HOUR + 1000 + i
    const outcomes = [
      ...[0, 1, 2].map((i) => ({ at: at(2, i) })),
      ...[0, 1, 2, 3, 4].map((i) => ({ at: Math.min(now, at(0, i)) })),
    ].map((o) => ({
      zone: 'apac',
      entry: 'dash-shard@1.0.0',
      bytes: 6_000,
      source: 'primary' as const,
      latencyMs: 5,
      ...o,
    }))
    await plannerStub().report({ outcomes })
  })

  it('shows the plan per zone with its replicas', async () => {
    const view = await loadShards(env)
    expect(view.plan?.version).toBeGreaterThan(0)
    const apac = view.zones.find((z) => z.zone === 'apac')
    expect(apac?.entries.map((e) => e.id)).toContain('dash-shard@1.0.0')
    expect(apac?.metrics?.requests).toBe(8)
    const section = sectionOf(await dashboardHtml(), 'shards')
    expect(section).toContain('data-zone="apac"')
    expect(section).toContain('dash-shard@1.0.0')
  })

  it('plots actual requests per hour against the planner forecast for each hour', async () => {
    const view = await loadForecast(env)
    const apac = view.zones.find((z) => z.zone === 'apac')
    const actual = apac?.points.flatMap((p) => (p.actual === null ? [] : [p.actual])) ?? []
    expect(actual).toHaveLength(24)
    expect(actual.at(-1)).toBe(5)
    expect(actual.at(-3)).toBe(3)
    expect(actual.reduce((s, n) => s + n, 0)).toBe(8)
    // The replan stored its one-step forecast for the current hour (from 3 days of ~6 requests/h).
    const current = apac?.points.find((p) => p.hour === Math.floor(Date.now() / HOUR) * HOUR)
    expect(current?.predicted).toBeGreaterThan(0)

    const section = sectionOf(await dashboardHtml(), 'forecast')
    expect(section).toContain('data-forecast-zone="apac"')
    expect(section).toMatch(/<polyline[^>]*stroke-dasharray/)
    expect(section).toContain('actual requests/h')
  })

  it("joins the hourly series with each zone's forecast score (pure)", () => {
    const zoneMetrics = quietZone('weur', { requests: 9, smape: 12.5, evaluatedHours: 3 })
    const points = [
      { hour: HOUR, actual: 7, predicted: 6 },
      { hour: 2 * HOUR, actual: 2, predicted: null },
    ]
    const view = forecastViewOf(
      {
        windowHours: 2,
        zones: [
          { zone: 'weur', points },
          { zone: 'apac', points: [] },
        ],
      },
      {
        planVersion: 0,
        windowHours: 2,
        prefetchThreshold: 1,
        bandit: [],
        migrations: { pending: 0, active: 0, failed: 0 },
        zones: [zoneMetrics],
      },
    )
    expect(view.windowHours).toBe(2)
    expect(view.zones[0]).toEqual({ zone: 'weur', points, smape: 12.5, evaluatedHours: 3 })
    expect(view.zones[1]).toEqual({ zone: 'apac', points: [], smape: null, evaluatedHours: 0 })
  })
})
