import { runInDurableObject } from 'cloudflare:test'
import { env } from 'cloudflare:workers'
import { describe, expect, it } from 'vitest'
import { readPrefetchHits, recordPrefetchHits, tallyPrefetch } from '../../durable-objects/prefetch-hits.ts'
import type { YankNote } from '../../schemas/artifact-index.ts'
import type { DashboardData } from '../dashboard/page-data.ts'
import type { ArtifactsView } from '../dashboard/sections/artifacts.ts'
import { loadSection } from '../dashboard/sections/section.ts'
import { shardsViewOf } from '../dashboard/sections/shards.ts'
import { artifactsView } from '../dashboard/views/artifacts.ts'
import { lineChart } from '../dashboard/views/charts.ts'
import { dashboardPage } from '../dashboard/views/dashboard.ts'
import { shardsView } from '../dashboard/views/shards.ts'
import { quietZone } from './dashboard-helpers.ts'

const EVIL = '<script>alert(1)</script>'

function artifactsOf(name: string, yanked: (YankNote & { signed: boolean }) | null = null): ArtifactsView {
  return {
    artifacts: [
      {
        name,
        versionCount: 1,
        channels: [{ channel: 'stable', version: '1.0.0' }],
        versions: [
          {
            version: '1.0.0',
            serial: 1,
            fullBytes: 1000,
            createdAt: '2026-11-23T00:00:00.000Z',
            channels: ['stable'],
            deltaCount: 1,
            bestDelta: { from: '0.9.0', method: 'vcdiff', bytes: 100 },
            savedRatio: 0.9,
            yanked,
          },
        ],
      },
    ],
    failed: [],
    truncated: false,
    totals: { fullBytes: 1000, deltaBytes: 100, versionsWithDelta: 1 },
  }
}

describe('dashboard views', () => {
  it('escape every name, including in attributes and SVG titles', async () => {
    const html = String(await artifactsView(artifactsOf(EVIL)))
    expect(html).not.toContain('<script')
    expect(html).toContain('&lt;script&gt;alert(1)&lt;/script&gt;')
    expect(html).toContain('data-artifact="&lt;script&gt;alert(1)&lt;/script&gt;"')
    const quote = String(await artifactsView(artifactsOf('a" onmouseover="x')))
    expect(quote).not.toContain('" onmouseover="x"')
    expect(quote).toContain('&quot; onmouseover=&quot;x')

    const chart = String(
      await lineChart([{ label: EVIL, color: '#000', points: [{ x: 1, y: 2 }] }], { title: EVIL }),
    )
    expect(chart).not.toContain('<script')
    expect(chart).toContain('<title>&lt;script&gt;')
  })

  it('mark a yanked version with its reason, escaped', async () => {
    expect(String(await artifactsView(artifactsOf('app')))).not.toContain('data-yanked')
    const html = String(
      await artifactsView(
        artifactsOf('app', { at: '2026-11-24T10:00:00.000Z', reason: EVIL, signed: false }),
      ),
    )
    expect(html).toContain('data-yanked')
    expect(html).toContain('unsigned: devices warned')
    const signed = { at: '2026-11-24T10:00:00.000Z', reason: 'x', signed: true }
    expect(String(await artifactsView(artifactsOf('app', signed)))).toContain('signed: devices move back')
    expect(html).toContain('&lt;script&gt;alert(1)&lt;/script&gt;')
    expect(html).not.toContain('<script')
  })

  it('say before the first shard plan how to run the planner, and show no capacity of 0 B', async () => {
    const metrics = {
      planVersion: 0,
      windowHours: 24,
      zones: [quietZone('wnam'), quietZone('weur')],
      prefetchThreshold: 5,
      bandit: [],
      migrations: { pending: 0, active: 0, failed: 0 },
    }
    const html = String(await shardsView(shardsViewOf(null, metrics)))
    expect(html).toContain('POST /v1/shards/replan')
    expect(html).toContain('data-zone="weur"')
    // The zones' capacities are the config's until a plan exists: "0 B of 0 B" read as zones without room.
    expect(html).not.toContain('0 B')
    expect(html).toContain('no plan yet')
  })

  it('render a failed section as an inline error next to working ones', async () => {
    const failed = await loadSection('rollouts', () => Promise.reject(new Error(`boom ${EVIL}`)))
    const slow = await loadSection('shards', () => new Promise<never>(() => {}), 20)
    const data: DashboardData = {
      generatedAt: '2026-11-23T00:00:00.000Z',
      artifacts: { ok: true, data: artifactsOf('fine-app') },
      hotArtifacts: { ok: true, data: { regions: [] } },
      prefetch: { ok: true, data: { regions: [], total: { deliveries: 0, hits: 0, ratio: null } } },
      config: { ok: false, error: 'kv down' },
      rollouts: failed,
      shards: slow,
      forecast: { ok: true, data: { zones: [], windowHours: 24 } },
    }
    const page = String(await dashboardPage(data))
    expect(page).toContain('fine-app')
    expect(page).toContain('This section could not be loaded: boom &lt;script&gt;')
    expect(page).toContain('timed out after 20 ms')
    expect(page).toContain('kv down')
    expect(page).not.toContain('<script')
  })
})

describe('prefetch hit counters', () => {
  it('tally installs and updates as deliveries and prefetch-hit events as hits', () => {
    expect(
      tallyPrefetch([
        { artifact: 'a', kind: 'install', count: 1 },
        { artifact: 'a', kind: 'update', count: 3 },
        { artifact: 'a', kind: 'prefetch-hit', count: 2 },
        { artifact: 'b', kind: 'use', count: 9 },
        { artifact: 'c', kind: 'prefetch-hit', count: 1 },
      ]),
    ).toEqual([
      { artifact: 'a', deliveries: 4, hits: 2 },
      { artifact: 'c', deliveries: 0, hits: 1 },
    ])
  })

  it('accumulate in the region object and keep the most delivered artifacts', async () => {
    const stub = env.REGION_AGGREGATOR.get(env.REGION_AGGREGATOR.idFromName('prefetch-cap'))
    await runInDurableObject(stub, (_, state) => {
      const sql = state.storage.sql
      recordPrefetchHits(sql, [{ artifact: 'a', deliveries: 2, hits: 1 }], 1, 2)
      recordPrefetchHits(
        sql,
        [
          { artifact: 'a', deliveries: 1, hits: 1 },
          { artifact: 'b', deliveries: 5, hits: 0 },
        ],
        2,
        2,
      )
      recordPrefetchHits(sql, [{ artifact: 'c', deliveries: 1, hits: 0 }], 3, 2)
      // Capped at 2: the least delivered (c, 1) goes.
      expect(readPrefetchHits(sql)).toEqual([
        { artifact: 'b', deliveries: 5, hits: 0 },
        { artifact: 'a', deliveries: 3, hits: 2 },
      ])
    })
    expect(await stub.prefetchHits()).toHaveLength(2)
  })
})
