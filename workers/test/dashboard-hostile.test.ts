import { runDurableObjectAlarm, runInDurableObject } from 'cloudflare:test'
import { env } from 'cloudflare:workers'
import { describe, expect, it } from 'vitest'
import { batchOf, postTelemetry } from '../../durable-objects/test/helpers.ts'
import {
  clientsBetween,
  HOUR,
  reportOutcome,
  startRollout,
} from '../../durable-objects/test/rollout-helpers.ts'
import { publishDep } from '../../durable-objects/test/shard-helpers.ts'
import {
  HOT_PER_REGION,
  knownRegions,
  loadHotArtifacts,
  loadPrefetch,
} from '../dashboard/sections/regions.ts'
import { MAX_ROLLOUTS_PROBED } from '../dashboard/sections/rollouts.ts'
import { keys } from '../storage/keys.ts'
import { dashboardHtml, sectionOf } from './dashboard-helpers.ts'
import { auth, call } from './publish-helpers.ts'

/**
 * What someone other than the operator can plant, through the routes that accept it, and what the
 * page then shows. The free text (a yank reason) must come out escaped in text and attributes; the
 * names devices report (artifacts, regions, error classes) are refused at the door by their schemas.
 */
const MARKUP = `"><script>alert(1)</script></title><svg onload=alert(2)><a href="javascript:alert(3)">x</a>`

/** Nothing of MARKUP may reach the page as markup (its words may, as text). */
function expectInert(page: string): void {
  expect(page).not.toMatch(/<script|<svg onload|<a href|<img/i)
}

describe('dashboard under hostile input', () => {
  it('shows a yank reason with markup as text, in the row and in its title attribute', async () => {
    await publishDep('hostile-yank', 2_000, 41)
    const yanked = await call('/v1/publish/hostile-yank/1.0.0/yank', {
      method: 'PUT',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify({ reason: MARKUP }),
    })
    expect(yanked.status, await yanked.clone().text()).toBe(200)
    const section = sectionOf(await dashboardHtml(), 'artifacts')
    expect(section).toContain('data-yanked')
    expectInert(section)
    const escaped =
      '&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;&lt;/title&gt;&lt;svg onload=alert(2)&gt;&lt;a href=&quot;javascript:alert(3)&quot;&gt;x&lt;/a&gt;'
    expect(section).toContain(`title="${escaped}"`)
    expect(section).toContain(`: ${escaped}</span>`)
  })

  it('refuses markup in names devices report: telemetry artifacts and regions, rollout error classes', async () => {
    const client = 'hostile-client-1'
    const badArtifact = await postTelemetry('hostile', batchOf(client, 1, ['<script>alert(1)</script>']))
    expect(badArtifact.status).toBe(400)
    const badRegion = await postTelemetry('<svg onload=x>', batchOf(client, 2, ['fine-app']))
    expect(badRegion.status).toBe(400)

    await publishDep('hostile-roll', 2_000, 42)
    const spec = { version: '1.0.0', stages: [{ percent: 100, durationMs: HOUR }], maxFailureRate: 0.5 }
    expect((await startRollout('hostile-roll', spec)).status).toBe(201)
    const [device] = clientsBetween('hostile-roll', '1.0.0', 0, 1, 1)
    const badClass = await reportOutcome('hostile-roll', {
      client: device,
      version: '1.0.0',
      outcome: 'failed',
      errorClass: '<img src=x onerror=alert(1)>',
    })
    expect(badClass.status).toBe(400)

    const page = await dashboardHtml()
    expectInert(page)
    expect(page).not.toContain('onerror')
    expect(page).not.toContain('&lt;svg onload=x')
    expect(sectionOf(page, 'rollouts')).toContain('hostile-roll')
  })
})

describe('dashboard bounds', () => {
  it("asks every artifact's channels before any artifact's next one, and says what it left unasked", async () => {
    // 40 artifacts of three channels each (indexes only: no rollouts) sort before b-roll, whose one
    // channel has a rollout: 120 pairs ahead of it, more than the page asks.
    const channels = { beta: '1.0.0', canary: '1.0.0', stable: '1.0.0' }
    for (let i = 0; i < 40; i++) {
      const name = `a-${String(i).padStart(2, '0')}`
      await env.ARTIFACTS.put(
        keys.index(name),
        JSON.stringify({ name, latestSerial: 0, versions: [], channels }),
      )
    }
    await publishDep('b-roll', 2_000, 43)
    const spec = { version: '1.0.0', stages: [{ percent: 100, durationMs: HOUR }], maxFailureRate: 0.5 }
    expect((await startRollout('b-roll', spec)).status).toBe(201)

    const section = sectionOf(await dashboardHtml(), 'rollouts')
    expect(section).toContain('data-rollout="b-roll/stable"')
    expect(section).toContain('id="rollouts-unchecked"')
    expect(section).toMatch(/\d+ artifact channels were not checked/)
    expect(section).toContain(`at most ${MAX_ROLLOUTS_PROBED} artifact channels`)
  })
})

/**
 * The real REGION_AGGREGATOR namespace, passed through, adding up the JSON size of every RPC answer
 * its stubs return: what a page view carries out of the region objects.
 */
function measuredRegions(): { env: Env; bytes: () => number } {
  let bytes = 0
  const namespace = env.REGION_AGGREGATOR
  const measured = new Proxy(namespace, {
    get(target, prop) {
      if (prop !== 'get') {
        const value: unknown = Reflect.get(target, prop, target)
        return typeof value === 'function' ? value.bind(target) : value
      }
      return (id: DurableObjectId) => {
        const stub = target.get(id)
        return new Proxy(stub, {
          get(inner, method) {
            const value: unknown = Reflect.get(inner, method, inner)
            if (typeof value !== 'function') return value
            return async (...args: unknown[]) => {
              const answer: unknown = await Reflect.apply(value, inner, args)
              bytes += JSON.stringify(answer).length
              return answer
            }
          },
        })
      }
    },
  })
  return { env: { ...env, REGION_AGGREGATOR: measured }, bytes: () => bytes }
}

/**
 * Bytes `sql` hands to JavaScript while `work` runs: each SELECT it ran is run again afterwards and its
 * rows measured as JSON (the cursors the code under test got are left to it, untouched).
 */
async function selectedBytesDuring(sql: SqlStorage, work: () => Promise<unknown>): Promise<number> {
  const exec = sql.exec.bind(sql)
  const queries: Array<[string, unknown[]]> = []
  const recording = (query: string, ...bindings: unknown[]) => {
    queries.push([query, bindings])
    return exec(query, ...bindings)
  }
  Object.defineProperty(sql, 'exec', { value: recording, configurable: true })
  try {
    await work()
  } finally {
    Reflect.deleteProperty(sql, 'exec')
  }
  return queries
    .filter(([query]) => /^\s*SELECT/i.test(query))
    .reduce((n, [query, bindings]) => n + JSON.stringify(exec(query, ...bindings).toArray()).length, 0)
}

describe('dashboard bounds under hostile telemetry', () => {
  it('carries only what it shows out of a region that clients filled with long names', async () => {
    // Unauthenticated clients fill one region's caps: long artifact names, long segments, installs.
    const region = 'hostile-fill'
    for (let b = 0; b < 4; b++) {
      const now = Date.now()
      const events = Array.from({ length: 500 }, (_, i) => ({
        artifact: `h${'x'.repeat(100)}-${b * 500 + i}`,
        segment: `${b}-${i}-${'s'.repeat(240)}`,
        at: new Date(now - 60_000 + i).toISOString(),
        count: 1 + (i % 7),
        kind: i % 2 === 0 ? 'install' : 'prefetch-hit',
      }))
      const body = {
        clientId: `hostile-filler-${b}`,
        batchSeq: 1,
        sentAt: new Date(now).toISOString(),
        events,
      }
      const res = await postTelemetry(region, body)
      expect(res.status, await res.clone().text()).toBeLessThan(300)
    }

    const measured = measuredRegions()
    const hot = await loadHotArtifacts(measured.env, [region])
    const prefetch = await loadPrefetch(measured.env, [region])
    // Eight artifacts, a count and a few totals: a few KiB, not the region's whole summary.
    expect(measured.bytes()).toBeLessThan(8 * 1024)
    expect(hot.regions[0]?.population).toBe(4)
    expect(hot.regions[0]?.hot).toHaveLength(HOT_PER_REGION)
    // Counts 1..7 by i % 7; the most used have 7.
    expect(hot.regions[0]?.hot[0]?.count).toBeGreaterThan(6)
    // Every install counted, not just the top rows: 1000 installs of counts 1..7, 1000 hits.
    const stub = env.REGION_AGGREGATOR.get(env.REGION_AGGREGATOR.idFromName(region))
    const all = await stub.prefetchHits()
    expect(prefetch.total.deliveries).toBe(all.reduce((n, t) => n + t.deliveries, 0))
    expect(prefetch.total.hits).toBe(all.reduce((n, t) => n + t.hits, 0))
    expect(prefetch.total.deliveries).toBeGreaterThan(1000)
  })
})

describe('dashboard region listing', () => {
  it('lists rolled-up regions without reading their summaries', async () => {
    // A region full of long artifact names rolls its summary (hundreds of KiB) up to the global object.
    const region = 'hostile-rollup'
    const now = Date.now()
    const events = Array.from({ length: 500 }, (_, i) => ({
      artifact: `r${'x'.repeat(120)}-${i}`,
      at: new Date(now - 60_000 + i).toISOString(),
      count: 1,
      kind: 'use',
    }))
    const body = { clientId: 'hostile-roller-1', batchSeq: 1, sentAt: new Date(now).toISOString(), events }
    expect((await postTelemetry(region, body)).status).toBeLessThan(300)
    await runDurableObjectAlarm(env.REGION_AGGREGATOR.get(env.REGION_AGGREGATOR.idFromName(region)))

    const global = env.GLOBAL_AGGREGATOR.get(env.GLOBAL_AGGREGATOR.idFromName('global'))
    const stored = await runInDurableObject(global, (_, state) =>
      state.storage.sql
        .exec<{ n: number }>('SELECT length(summary) AS n FROM regions WHERE region = ?', region)
        .one(),
    )
    expect(stored.n).toBeGreaterThan(50_000)

    // Up to 512 such regions are kept (any name without a regions.map): the page's listing must not
    // carry their summaries into the object's memory on every view.
    let regions: string[] = []
    const bytes = await runInDurableObject(global, (_, state) =>
      selectedBytesDuring(state.storage.sql, async () => {
        regions = await knownRegions(env)
      }),
    )
    expect(regions).toContain(region)
    expect(bytes).toBeLessThan(4 * 1024)
    expect((await global.regions()).find((r) => r.region === region)).toMatchObject({
      population: 1,
      artifacts: 500,
    })
  })
})
