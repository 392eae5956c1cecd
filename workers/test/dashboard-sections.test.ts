import { env } from 'cloudflare:workers'
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { batchOf, postTelemetry } from '../../durable-objects/test/helpers.ts'
import { emptySummary } from '../../predict/index.ts'
import {
  clearRuntimeConfigCache,
  RUNTIME_CONFIG_KEY,
  setRuntimeConfigClock,
} from '../config/runtime-config.ts'
import { loadDashboard } from '../dashboard/page-data.ts'
import { loadArtifacts } from '../dashboard/sections/artifacts.ts'
import { knownRegions, loadPrefetch, MAX_REGIONS } from '../dashboard/sections/regions.ts'
import { keys } from '../storage/keys.ts'
import { dashboardHtml, sectionOf } from './dashboard-helpers.ts'
import { publishWithDeltas } from './delta-helpers.ts'
import { FaultyR2 } from './faulty-r2.ts'
import { bytesOf } from './publish-helpers.ts'

const V1 = bytesOf(300_000, 1)
const V2 = (() => {
  const b = V1.slice()
  b.set(bytesOf(2_000, 7), 1000)
  return b
})()
const DELTA = bytesOf(12_000, 3)

beforeAll(async () => {
  clearRuntimeConfigCache()
  await publishWithDeltas('dash-app', '1.0.0', V1, 1, [])
  await publishWithDeltas('dash-app', '1.1.0', V2, 2, [{ from: '1.0.0', method: 'vcdiff', bytes: DELTA }])
  await publishWithDeltas('@acme/tool', '2.0.0', bytesOf(5_000, 9), 1, [])
})

afterEach(() => setRuntimeConfigClock(null))

describe('dashboard: artifacts and delta savings', () => {
  it('reads full vs delta bytes from the signed manifests', async () => {
    const view = await loadArtifacts(env)
    const app = view.artifacts.find((a) => a.name === 'dash-app')
    expect(app?.versionCount).toBe(2)
    expect(app?.channels).toEqual([{ channel: 'stable', version: '1.1.0' }])
    const [newest, oldest] = app?.versions ?? []
    expect(newest).toMatchObject({
      version: '1.1.0',
      fullBytes: V2.length,
      deltaCount: 1,
      bestDelta: { from: '1.0.0', method: 'vcdiff', bytes: DELTA.length },
    })
    expect(newest?.savedRatio).toBeCloseTo(1 - DELTA.length / V2.length, 6)
    expect(oldest).toMatchObject({ version: '1.0.0', bestDelta: null, savedRatio: null })
    expect(view.artifacts.map((a) => a.name)).toContain('@acme/tool')
    expect(view.totals.fullBytes).toBeGreaterThanOrEqual(V2.length)
  })

  it('renders names, sizes and the saving on the page', async () => {
    const section = sectionOf(await dashboardHtml(), 'artifacts')
    expect(section).toContain('dash-app')
    expect(section).toContain('@acme/tool')
    expect(section).toContain('1.1.0')
    // 300 000 B full, 12 000 B delta: 96.0 % saved.
    expect(section).toContain('293 KiB')
    expect(section).toContain('11.7 KiB')
    expect(section).toContain('96.0 %')
    expect(section).toContain('<svg')
  })

  it('escapes names it reads from storage and isolates a corrupt index', async () => {
    // No `/` in it: R2 keys would split the name into two segments.
    const evil = '<script>alert(1)'
    await env.ARTIFACTS.put(keys.index(evil), JSON.stringify({ name: evil, versions: 'nope' }))
    try {
      const page = await dashboardHtml()
      expect(page).not.toContain(evil)
      expect(page).toContain('&lt;script&gt;alert(1)')
      // The other artifacts still show.
      expect(sectionOf(page, 'artifacts')).toContain('dash-app')
    } finally {
      await env.ARTIFACTS.delete(keys.index(evil))
    }
  })

  it('shows a failing data source as an inline error and renders the rest', async () => {
    const broken: Env = { ...env, ARTIFACTS: new FaultyR2(env.ARTIFACTS, { failNth: { list: [1] } }) }
    const data = await loadDashboard(broken)
    expect(data.artifacts.ok).toBe(false)
    expect(data.config.ok).toBe(true)
    expect(data.hotArtifacts.ok).toBe(true)
  })
})

describe('dashboard: regions and prefetch', () => {
  it('lists hot artifacts per region and the prefetch hit ratio', async () => {
    // Unmapped traffic lands in the fallback region `global`; `weur` is named by the client.
    const usesGlobal = batchOf('client-global', 1, ['dash-app', 'dash-app', 'dash-app', '@acme/tool'])
    expect((await postTelemetry('global', usesGlobal)).status).toBe(202)
    const updates = batchOf('client-weur', 1, [
      { artifact: 'dash-app', version: '1.1.0' },
      { artifact: 'dash-app', version: '1.1.0' },
    ])
    updates.events = [
      ...updates.events.map((e) => ({ ...e, kind: 'update' as const })),
      { ...updates.events[0]!, kind: 'update' as const, count: 2 },
      { ...updates.events[0]!, kind: 'prefetch-hit' as const },
    ]
    const posted = await postTelemetry('weur', updates)
    expect(posted.status, await posted.clone().text()).toBe(202)

    // weur has not rolled up yet, so the operator maps it for it to be listed.
    clearRuntimeConfigCache()
    await env.CONFIG.put(RUNTIME_CONFIG_KEY, JSON.stringify({ regions: { map: { FRA: 'weur' } } }))
    try {
      expect(await knownRegions(env)).toEqual(['global', 'weur'])
      const prefetch = await loadPrefetch(env, ['global', 'weur'])
      // 4 updates (2 + count 2), 1 hit; the `use` events of `global` are not deliveries.
      expect(prefetch.total).toEqual({ deliveries: 4, hits: 1, ratio: 0.25 })
      expect(prefetch.regions.map((r) => r.region)).toEqual(['weur'])

      const page = await dashboardHtml()
      const hot = sectionOf(page, 'hot')
      expect(hot).toContain('data-region="global"')
      expect(hot).toContain('data-region="weur"')
      expect(hot.indexOf('dash-app')).toBeLessThan(hot.indexOf('@acme/tool'))
      expect(sectionOf(page, 'prefetch')).toContain('25.0 %')
    } finally {
      await env.CONFIG.delete(RUNTIME_CONFIG_KEY)
      clearRuntimeConfigCache()
    }
  })

  it('keeps the fallback and the most populous regions when clients invent more than it shows', async () => {
    // Without `regions.map` a client may name any region; each invented name rolls up with a population
    // of one. Listing the first MAX_REGIONS names alphabetically let 24 names like `aa-0` hide `global`
    // (where all unmapped traffic lands) and every real region behind them.
    const global = env.GLOBAL_AGGREGATOR.get(env.GLOBAL_AGGREGATOR.idFromName('global'))
    const rollup = (region: string, population: number) => ({
      region,
      population,
      summary: emptySummary(region, Date.now()),
    })
    await global.submit(rollup('weur', 400))
    for (let i = 0; i < MAX_REGIONS + 6; i++) await global.submit(rollup(`aa-${i}`, 1))
    const regions = await knownRegions(env)
    expect(regions).toHaveLength(MAX_REGIONS)
    expect(regions).toContain('global')
    expect(regions).toContain('weur')
    // Shown in name order, as before.
    expect(regions).toEqual([...regions].sort())
  })
})

describe('dashboard: runtime config', () => {
  it('shows the config in force and the last rejected document, escaped', async () => {
    let now = 5_000_000
    clearRuntimeConfigCache()
    setRuntimeConfigClock(() => now)
    await env.CONFIG.put(RUNTIME_CONFIG_KEY, JSON.stringify({ stream: { fecM: 5 }, cacheTtlSeconds: 1 }))
    try {
      let config = sectionOf(await dashboardHtml(), 'config')
      expect(config).toContain('KV document')
      expect(config).toContain('&quot;fecM&quot;: 5')
      expect(config).toContain('None since this isolate started')

      const evilRegion = '<script>x</script>'
      await env.CONFIG.put(
        RUNTIME_CONFIG_KEY,
        JSON.stringify({ stream: { fecK: 0 }, regions: { map: { [evilRegion]: 'weur' } } }),
      )
      now += 2000
      config = sectionOf(await dashboardHtml(), 'config')
      // The good document stays in force; the rejected one is listed with its problems.
      expect(config).toContain('&quot;fecM&quot;: 5')
      expect(config).toContain('stream.fecK')
      expect(config).toContain('regions.map.&lt;script&gt;x&lt;/script&gt;')
      expect(config).not.toContain(evilRegion)
    } finally {
      await env.CONFIG.delete(RUNTIME_CONFIG_KEY)
      clearRuntimeConfigCache()
    }
  })

  it('lists the values of the config in force that the edge ignores, escaped', async () => {
    clearRuntimeConfigCache()
    const evilValue = '<b>eu</b>'
    await env.CONFIG.put(
      RUNTIME_CONFIG_KEY,
      JSON.stringify({ stream: { fecM: 5 }, regions: { map: { EU: evilValue } } }),
    )
    try {
      const config = sectionOf(await dashboardHtml(), 'config')
      expect(config).toContain('&quot;fecM&quot;: 5')
      expect(config).toContain('id="config-warnings"')
      expect(config).toContain('regions.map.EU')
      expect(config).toContain('&quot;&lt;b&gt;eu&lt;/b&gt;&quot; is not a region name')
      expect(config).not.toContain(evilValue)

      await env.CONFIG.delete(RUNTIME_CONFIG_KEY)
      clearRuntimeConfigCache()
      expect(sectionOf(await dashboardHtml(), 'config')).toContain(
        'every value of the config in force takes effect',
      )
    } finally {
      await env.CONFIG.delete(RUNTIME_CONFIG_KEY)
      clearRuntimeConfigCache()
    }
  })
})
