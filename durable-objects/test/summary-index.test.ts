import { runInDurableObject } from 'cloudflare:test'
import { env } from 'cloudflare:workers'
import { describe, expect, it } from 'vitest'
import { type AccessSummary, compactSummary, emptySummary, mulberry32 } from '../../predict/index.ts'
import { recordBatch, recordSegments, segmentKey, type TimedEvent } from '../ingest.ts'
import { RegionAggregator } from '../region-aggregator.ts'
import { SummaryIndex } from '../summary-index.ts'
import { batchOf, postTelemetry } from './helpers.ts'

const HOUR = 3_600_000
const close = (a: number, b: number) => Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(a))

/** `a` and `b` as snapshot() reads them at `at`: same keys in the same order, counts equal up to rounding. */
function expectSame(a: AccessSummary, b: AccessSummary, at: number): void {
  const x = compactSummary(a, at)
  const y = compactSummary(b, at)
  expect(y.artifacts.map((r) => r.artifact)).toEqual(x.artifacts.map((r) => r.artifact))
  expect(y.transitions.map((t) => `${t.from}>${t.to}`)).toEqual(x.transitions.map((t) => `${t.from}>${t.to}`))
  for (const [i, r] of x.artifacts.entries())
    expect(close(r.count, y.artifacts[i]?.count ?? Number.NaN)).toBe(true)
  x.transitions.forEach((t, i) => {
    expect(close(t.count, y.transitions[i]?.count ?? Number.NaN)).toBe(true)
    expect(close(t.meanLagMs, y.transitions[i]?.meanLagMs ?? Number.NaN)).toBe(true)
  })
  for (const [i, v] of x.profile.buckets.entries())
    expect(close(v, y.profile.buckets[i] ?? Number.NaN)).toBe(true)
}

describe('SummaryIndex: a batch costs what it touches, with per-batch compaction’s result', () => {
  it('matches recordBatch/recordSegments batch by batch, from rows over the caps, under eviction', () => {
    const start = Date.UTC(2026, 10, 26)
    const rand = mulberry32(7)
    const limits = { maxArtifacts: 12, maxTransitionsPerArtifact: 3 }
    // As loaded after a cap was lowered: 20 artifacts over a cap of 12, sources over 3 transitions,
    // and a transition whose ends are not counted.
    const names = Array.from({ length: 40 }, (_, i) => `a${i}`)
    const loaded: AccessSummary = {
      ...emptySummary('r', start, { limits, halfLifeMs: 6 * HOUR }),
      artifacts: names
        .slice(0, 20)
        .map((artifact, i) => ({ artifact, count: 1 + (i % 5), updatedAt: start - i * HOUR })),
      transitions: [
        ...names.slice(0, 20).flatMap((from, i) =>
          [1, 2, 3, 4, 5].map((k) => ({
            from,
            to: names[(i + k) % 20] ?? '',
            count: k % 3,
            updatedAt: start - HOUR,
            meanLagMs: k * 1000,
          })),
        ),
        { from: 'gone', to: 'a1', count: 9, updatedAt: start, meanLagMs: 5 },
      ],
    }
    const loadedSegments: AccessSummary = {
      ...emptySummary('r', start, { limits: { maxArtifacts: 6, maxTransitionsPerArtifact: 0 } }),
      artifacts: names
        .slice(0, 9)
        .map((a, i) => ({ artifact: segmentKey(a, 's'), count: i, updatedAt: start })),
    }
    let oldSummary = structuredClone(loaded)
    let oldSegments = structuredClone(loadedSegments)
    const index = new SummaryIndex(loaded, false)
    const segIndex = new SummaryIndex(loadedSegments, false)
    for (let b = 0; b < 300; b++) {
      const now = start + b * 10 * 60_000
      const events: TimedEvent[] = Array.from({ length: 1 + Math.floor(rand() * 8) }, (_, i) => ({
        artifact: names[Math.floor(rand() * rand() * names.length)] ?? 'a0',
        // Equal times make equal counts: ties are broken by name, as compactSummary does.
        at: now - Math.floor(rand() * 4) * 60_000 - (i % 2),
        count: 1 + Math.floor(rand() * 3),
        ...(rand() < 0.5 ? { segment: `s${Math.floor(rand() * 4)}` } : {}),
      }))
      const client = `c${b % 5}`
      oldSummary = recordBatch(oldSummary, client, events, now)
      oldSegments = recordSegments(oldSegments, events, now)
      const changes = index.record(events, now, client)
      // Rows as loaded that compaction drops are deleted by the first batch, orphans included.
      if (b === 0) expect(changes.evictedTransitions).toContainEqual({ from: 'gone', to: 'a1' })
      segIndex.record(
        events.flatMap((e) =>
          e.segment === undefined ? [] : [{ ...e, artifact: segmentKey(e.artifact, e.segment) }],
        ),
        now,
        null,
      )
      expectSame(oldSummary, index.summary(), now)
      expectSame(oldSegments, segIndex.summary(), now)
      expect(index.summary().artifacts.length).toBeLessThanOrEqual(limits.maxArtifacts)
    }
  })
})

describe('RegionAggregator stores each batch’s changes, bounded, and a restart reads them back', () => {
  it('keeps the caps in its rows and serves the same summary after a fresh start', async () => {
    const region = 'summary-index'
    const stub = env.REGION_AGGREGATOR.get(env.REGION_AGGREGATOR.idFromName(region))
    await stub.configure({ maxArtifacts: 5, maxTransitionsPerArtifact: 2, maxSegments: 3 })
    const rand = mulberry32(3)
    for (let seq = 1; seq <= 12; seq++) {
      const uses = Array.from({ length: 6 }, (_, i) => ({
        artifact: `p${Math.floor(rand() * 10)}`,
        count: 1 + ((seq + i) % 3),
        segment: `s${i % 2}`,
      }))
      expect((await postTelemetry(region, batchOf(`client-${seq % 3}`, seq, uses))).status).toBe(202)
    }
    await runInDurableObject(stub, async (instance: RegionAggregator, state) => {
      const sql = state.storage.sql
      const n = (q: string) => sql.exec<{ n: number }>(q).one().n
      expect(n('SELECT COUNT(*) AS n FROM artifacts')).toBe(5)
      expect(n('SELECT COUNT(*) AS n FROM segments')).toBe(3)
      expect(
        n('SELECT COALESCE(MAX(c), 0) AS n FROM (SELECT COUNT(*) AS c FROM transitions GROUP BY src)'),
      ).toBe(2)
      expect(
        n(`SELECT COUNT(*) AS n FROM transitions WHERE src NOT IN (SELECT artifact FROM artifacts)
             OR dst NOT IN (SELECT artifact FROM artifacts)`),
      ).toBe(0)
      const at = Date.now() + HOUR
      const live = await instance.snapshot(at)
      // The rows are the summary: nothing evicted is left behind, nothing kept is missing.
      const pairs = (rows: { src: string; dst: string }[]) => rows.map((r) => `${r.src}>${r.dst}`).sort()
      expect(
        pairs(sql.exec<{ src: string; dst: string }>('SELECT src, dst FROM transitions').toArray()),
      ).toEqual(pairs(live.summary.transitions.map((t) => ({ src: t.from, dst: t.to }))))
      expect(live.summary.transitions.length).toBeGreaterThan(0)
      // A fresh instance over the same storage, as after an eviction or a deploy.
      const fresh = new RegionAggregator(state, env)
      await new Promise((resolve) => setTimeout(resolve, 0))
      const again = await fresh.snapshot(at)
      expectSame(live.summary, again.summary, at)
      expectSame(live.segments, again.segments, at)
      const hot = await instance.hotArtifacts(5, at)
      expect(hot.hot.map((h) => h.artifact)).toEqual(live.summary.artifacts.map((a) => a.artifact))
    })
  })
})
