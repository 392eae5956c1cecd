import { runDurableObjectAlarm, runInDurableObject } from 'cloudflare:test'
import { env } from 'cloudflare:workers'
import { describe, expect, it } from 'vitest'
import { artifactCount, nextUses } from '../../predict/index.ts'
import { TelemetryReceipt } from '../../schemas/aggregation.ts'
import { ProblemDetails } from '../../schemas/problem.ts'
import { clearRuntimeConfigCache } from '../../workers/config/runtime-config.ts'
import { readPrefetchHits, recordPrefetchHits } from '../prefetch-hits.ts'
import { RegionAggregator } from '../region-aggregator.ts'
import { batchOf, postTelemetry, rowsReadDuring } from './helpers.ts'

const regionStub = (region: string) => env.REGION_AGGREGATOR.get(env.REGION_AGGREGATOR.idFromName(region))

describe('POST /v1/telemetry → RegionAggregator', () => {
  it('accepts a batch, counts uses (with multiplicity and segments) and learns the ordering', async () => {
    const res = await postTelemetry(
      'ingest',
      batchOf('client-0001', 1, ['app', { artifact: 'lib', count: 3, segment: 'bin/x' }]),
    )
    expect(res.status).toBe(202)
    expect(TelemetryReceipt.parse(await res.json())).toEqual({
      region: 'ingest',
      accepted: 2,
      duplicate: false,
    })

    const { summary, segments, population } = await regionStub('ingest').snapshot()
    const now = summary.updatedAt
    expect(population).toBe(1)
    expect(artifactCount(summary, 'app', now)).toBeCloseTo(1, 2)
    expect(artifactCount(summary, 'lib', now)).toBeCloseTo(3, 2)
    expect(segments.artifacts.map((s) => s.artifact)).toEqual(['lib\u0000bin/x'])
    expect(nextUses(summary, 'app', now).map((n) => n.to)).toEqual(['lib'])
    expect(summary.profile.buckets.reduce((s, b) => s + b, 0)).toBeCloseTo(4, 2)
  })

  it('drops a replayed batch: 202, nothing counted twice', async () => {
    const batch = batchOf('client-0002', 7, ['replayed'])
    expect((await postTelemetry('replay', batch)).status).toBe(202)
    const again = await postTelemetry('replay', batch)
    expect(again.status).toBe(202)
    expect(TelemetryReceipt.parse(await again.json())).toMatchObject({ accepted: 0, duplicate: true })
    const older = await postTelemetry('replay', batchOf('client-0002', 3, ['replayed']))
    expect(TelemetryReceipt.parse(await older.json()).duplicate).toBe(true)
    const { summary } = await regionStub('replay').snapshot()
    expect(artifactCount(summary, 'replayed', summary.updatedAt)).toBeCloseTo(1, 2)
  })

  it('rate-limits per client with 429 and Retry-After (limit from RuntimeConfig)', async () => {
    // The edge caches the runtime config per isolate; forget it so the new document is read now.
    clearRuntimeConfigCache()
    await env.CONFIG.put('runtime', JSON.stringify({ limits: { telemetryPerClientPerMinute: 2 } }))
    try {
      for (const seq of [1, 2])
        expect((await postTelemetry('ratelimit', batchOf('client-0003', seq, ['a']))).status).toBe(202)
      const limited = await postTelemetry('ratelimit', batchOf('client-0003', 3, ['a']))
      expect(limited.status).toBe(429)
      // 2 per minute: the next token is ~30 s away.
      expect(Number(limited.headers.get('retry-after'))).toBeGreaterThanOrEqual(1)
      expect(Number(limited.headers.get('retry-after'))).toBeLessThanOrEqual(30)
      expect(ProblemDetails.parse(await limited.json()).type).toContain('too-many-requests')
      // Another client has its own bucket.
      expect((await postTelemetry('ratelimit', batchOf('client-0004', 1, ['a']))).status).toBe(202)
    } finally {
      await env.CONFIG.delete('runtime')
      clearRuntimeConfigCache()
    }
  })

  it('refuses oversized and invalid batches as problem+json', async () => {
    const huge = `{"pad":"${'x'.repeat(300 * 1024)}"}`
    const tooBig = await postTelemetry('invalid', huge)
    expect(tooBig.status).toBe(413)
    expect(tooBig.headers.get('content-type')).toBe('application/problem+json')
    const bad = await postTelemetry('invalid', { clientId: 'x', batchSeq: -1, sentAt: 'now', events: [] })
    expect(bad.status).toBe(400)
    expect(ProblemDetails.parse(await bad.json()).errors?.length).toBeGreaterThan(0)
    const badRegion = await postTelemetry('Not A Region', batchOf('client-0005', 1, ['a']))
    expect(badRegion.status).toBe(400)
  })

  it('decays counts with the configured half-life', async () => {
    const stub = regionStub('decay')
    const halfLifeMs = 3_600_000
    await stub.configure({ halfLifeMs })
    await postTelemetry('decay', batchOf('client-0006', 1, [{ artifact: 'aging', count: 8 }]))
    const now = Date.now()
    const later = await stub.snapshot(now + 2 * halfLifeMs)
    // 8 uses a minute before `now`, two half-lives later: ~2.
    expect(artifactCount(later.summary, 'aging', now + 2 * halfLifeMs)).toBeCloseTo(2, 1)
  })

  it('evicts the coldest keys and the least recently seen clients under pressure', async () => {
    const stub = regionStub('evict')
    await stub.configure({ maxArtifacts: 3, maxSegments: 2, maxClients: 2 })
    // Stored first while under the caps, then pushed out by hotter keys.
    const early = [{ artifact: 'cold', segment: 's0' }, 'frozen']
    const hot = [
      { artifact: 'hot', count: 50, segment: 's1' },
      { artifact: 'warm', count: 20, segment: 's2' },
      { artifact: 'mild', count: 10, segment: 's3' },
    ]
    for (const [id, uses] of [
      ['client-e001', early],
      ['client-e002', hot],
      ['client-e003', ['mild']],
    ] as const) {
      expect((await postTelemetry('evict', batchOf(id, 1, uses))).status).toBe(202)
    }
    const { summary, segments, population } = await stub.snapshot()
    expect(summary.artifacts.map((a) => a.artifact)).toEqual(['hot', 'warm', 'mild'])
    expect(segments.artifacts).toHaveLength(2)
    expect(population).toBe(2)
    await runInDurableObject(stub, (_instance, state) => {
      const n = (table: string) =>
        state.storage.sql.exec<{ n: number }>(`SELECT COUNT(*) AS n FROM ${table}`).one().n
      expect(n('artifacts')).toBe(3)
      expect(n('segments')).toBe(2)
      expect(
        state.storage.sql
          .exec<{ id: string }>('SELECT client_id AS id FROM clients ORDER BY id')
          .toArray()
          .map((r) => r.id),
      ).toEqual(['client-e002', 'client-e003'])
    })
  })

  it('survives rows it cannot read: damaged settings give defaults, a damaged client row only its history', async () => {
    const stub = regionStub('damaged-rows')
    expect((await postTelemetry('damaged-rows', batchOf('client-d001', 1, ['app']))).status).toBe(202)
    await runInDurableObject(stub, async (_instance: RegionAggregator, state) => {
      const sql = state.storage.sql
      sql.exec(
        "INSERT INTO meta (key, value) VALUES ('settings', '{not json') ON CONFLICT (key) DO UPDATE SET value = excluded.value",
      )
      sql.exec("UPDATE clients SET history = '{', installed = '[1,' WHERE client_id = 'client-d001'")
      // A fresh instance over the same storage, as after an eviction or a deploy.
      const fresh = new RegionAggregator(state, env)
      // Its constructor's blockConcurrencyWhile has run once the event loop turns.
      await new Promise((resolve) => setTimeout(resolve, 0))
      await fresh.ingest({
        region: 'damaged-rows',
        batch: batchOf('client-d001', 2, ['lib']),
        ratePerMinute: 30,
      })
      const { summary, population } = await fresh.snapshot()
      expect(population).toBe(1)
      expect(summary.artifacts.map((a) => a.artifact).sort()).toEqual(['app', 'lib'])
    })
  })

  it('counts prefetch hits of known artifacts without reading the whole table, and still caps it', async () => {
    await runInDurableObject(regionStub('hits-rows'), async (_instance: RegionAggregator, state) => {
      const sql = state.storage.sql
      const delivered = (artifact: string) => ({ artifact, deliveries: 1, hits: 0 })
      const now = Date.now()
      recordPrefetchHits(
        sql,
        Array.from({ length: 300 }, (_, i) => delivered(`hits-${i}`)),
        now,
        400,
      )
      const rowsRead = (tallies: ReturnType<typeof delivered>[]) =>
        rowsReadDuring(sql, () => recordPrefetchHits(sql, tallies, now, 400))
      expect(await rowsRead([delivered('hits-7'), delivered('hits-8')])).toBeLessThan(10)
      // New artifacts past the cap: the fewest delivered go.
      await rowsRead(Array.from({ length: 150 }, (_, i) => delivered(`hits-new-${i}`)))
      expect(readPrefetchHits(sql)).toHaveLength(400)
      expect(
        readPrefetchHits(sql)
          .slice(0, 2)
          .map((t) => t.artifact),
      ).toEqual(['hits-7', 'hits-8'])
    })
  })

  it('reads a bounded number of rows per batch, however many clients the region holds', async () => {
    // Durable Object SQL is billed (and slowed) per row read: counting every client on each batch to
    // decide eviction made each telemetry post cost the whole client table (20,000 rows by default).
    const stub = regionStub('rows-read')
    await runInDurableObject(stub, async (instance: RegionAggregator, state) => {
      for (let i = 0; i < 1500; i++)
        await instance.ingest({
          region: 'rows-read',
          batch: batchOf(`client-rows-${i}`, 1, ['app']),
          ratePerMinute: 30,
        })
      // Every row the object reads while it takes one more batch (a new client, then a known one).
      const rows = await rowsReadDuring(state.storage.sql, async () => {
        await instance.ingest({
          region: 'rows-read',
          batch: batchOf('client-rows-new', 1, ['app']),
          ratePerMinute: 30,
        })
        await instance.ingest({
          region: 'rows-read',
          batch: batchOf('client-rows-7', 2, ['app']),
          ratePerMinute: 30,
        })
      })
      expect(rows).toBeLessThan(100)
    })
    expect((await stub.snapshot()).population).toBe(1501)
    // The cap still holds: lowering it evicts the least recently seen at the next batch.
    await stub.configure({ maxClients: 1000 })
    expect((await postTelemetry('rows-read', batchOf('client-rows-last', 1, ['app']))).status).toBe(202)
    expect((await stub.snapshot()).population).toBe(1000)
    await runInDurableObject(stub, (_instance, state) => {
      expect(state.storage.sql.exec<{ n: number }>('SELECT COUNT(*) AS n FROM clients').one().n).toBe(1000)
    })
  }, 120_000)

  it('rolls regions up to the GlobalAggregator from the alarm', async () => {
    await postTelemetry('roll-a', batchOf('client-0007', 1, ['shared', 'only-a']))
    await postTelemetry('roll-b', batchOf('client-0008', 1, ['shared']))
    expect(await runDurableObjectAlarm(regionStub('roll-a'))).toBe(true)
    expect(await runDurableObjectAlarm(regionStub('roll-b'))).toBe(true)
    const global = env.GLOBAL_AGGREGATOR.get(env.GLOBAL_AGGREGATOR.idFromName('global'))
    const regions = await global.regions()
    expect(regions.filter((r) => r.region.startsWith('roll-')).map((r) => [r.region, r.population])).toEqual([
      ['roll-a', 1],
      ['roll-b', 1],
    ])
    const merged = await global.summary()
    expect(merged.scope).toBe('global')
    expect(artifactCount(merged, 'shared', merged.updatedAt)).toBeCloseTo(2, 2)
    expect(artifactCount(merged, 'only-a', merged.updatedAt)).toBeCloseTo(1, 2)
  })
})
