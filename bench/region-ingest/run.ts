/**
 * CPU per telemetry batch of the RegionAggregator's summary path (durable-objects/region-aggregator.ts
 * ingest), pure functions called in the DO's order, at the configured maxima and at the defaults:
 *   old: recordBatch + recordSegments (each re-compacting the whole summary), persistSummary ×2
 *   new: SummaryIndex.record ×2 (bounds enforced where the batch can break them), persistChanges ×2
 * SQL is a stand-in that only counts statements (SQLite's own time is not ours to shorten; the JS around
 * it is). Summaries start full, and a quarter of each batch's uses are new names, so every batch evicts.
 * Both paths are fed the same batches and their summaries compared at the end.
 * Run: node bench/region-ingest/run.ts   (type-checked with the Workers project: it imports SqlStorage users)
 */
import {
  capBatchWeight,
  recordBatch,
  recordSegments,
  segmentKey,
  type TimedEvent,
} from '../../durable-objects/ingest.ts'
import { SummaryIndex } from '../../durable-objects/summary-index.ts'
import { persistChanges, persistSummary } from '../../durable-objects/summary-table.ts'
import {
  type AccessSummary,
  compactSummary,
  counterAt,
  emptySummary,
  mulberry32,
} from '../../predict/index.ts'

const HOUR = 3_600_000
const BATCHES = 200
const EVENTS = 20
const name = (i: number) => `org.example.artifact-${i.toString(36).padStart(6, '0')}`
let statements = 0
const sql = {
  exec() {
    statements++
    return { toArray: () => [], one: () => ({}), raw: () => [] }
  },
} as unknown as SqlStorage
const start = Date.UTC(2026, 10, 26)

function full(
  N: number,
  T: number,
  S: number,
  rand: () => number,
): { summary: AccessSummary; segments: AccessSummary } {
  const base = emptySummary('bench', start, { limits: { maxArtifacts: N, maxTransitionsPerArtifact: T } })
  const artifacts = Array.from({ length: N }, (_, i) => ({
    artifact: name(i),
    count: 1 + rand() * 1000,
    updatedAt: start - Math.floor(rand() * 48 * HOUR),
  }))
  const transitions = artifacts.flatMap((a, i) =>
    Array.from({ length: T }, (_, k) => ({
      from: a.artifact,
      to: name((i + 1 + k) % N),
      count: rand() * 50,
      updatedAt: a.updatedAt,
      meanLagMs: rand() * HOUR,
    })),
  )
  const segBase = emptySummary('bench', start, { limits: { maxArtifacts: S, maxTransitionsPerArtifact: 0 } })
  const segs = Array.from({ length: S }, (_, i) => ({
    artifact: segmentKey(name(i % N), `seg-${i}`),
    count: 1 + rand() * 100,
    updatedAt: start - Math.floor(rand() * 48 * HOUR),
  }))
  return { summary: { ...base, artifacts, transitions }, segments: { ...segBase, artifacts: segs } }
}

function batch(now: number, b: number, N: number, rand: () => number): TimedEvent[] {
  // Mostly known artifacts, a quarter never seen (a long tail: the summary is full, so they evict).
  return Array.from({ length: EVENTS }, (_, i) => {
    const known = rand() < 0.75
    const artifact = known ? name(Math.floor(rand() * N)) : `new-${b}-${i}`
    return { artifact, segment: `seg-${i}`, at: now - (EVENTS - i) * 1000, count: 1 + (i % 3) }
  })
}

const quantiles = (times: number[]) => {
  const warm = times.slice(20).sort((a, b) => a - b)
  const q = (p: number) => Number(warm[Math.min(warm.length - 1, Math.floor(p * warm.length))]?.toFixed(2))
  return { p50: q(0.5), p90: q(0.9), max: q(1) }
}

function run(N: number, T: number, S: number) {
  const initial = full(N, T, S, mulberry32(42))
  const batches = Array.from({ length: BATCHES }, (_, b) => {
    const rand = mulberry32(1000 + b)
    const now = start + b * 60_000
    return { now, client: `client-${b % 50}`, events: capBatchWeight(batch(now, b, N, rand)) }
  })
  const A = { artifacts: 'a', transitions: 't', profileKey: 'p' }
  const B = { artifacts: 's', transitions: null, profileKey: 'q' }

  let { summary, segments } = initial
  const oldTimes: number[] = []
  statements = 0
  for (const { now, client, events } of batches) {
    const t0 = performance.now()
    const nextSummary = recordBatch(summary, client, events, now)
    const nextSegments = recordSegments(segments, events, now)
    const touched = new Set(events.map((e) => e.artifact))
    const touchedSegments = new Set(events.map((e) => segmentKey(e.artifact, e.segment ?? '')))
    persistSummary(sql, A, summary, nextSummary, touched)
    persistSummary(sql, B, segments, nextSegments, touchedSegments)
    oldTimes.push(performance.now() - t0)
    summary = nextSummary
    segments = nextSegments
  }
  const oldStatements = statements / BATCHES

  const index = new SummaryIndex(initial.summary, false)
  const segIndex = new SummaryIndex(initial.segments, false)
  const newTimes: number[] = []
  statements = 0
  for (const { now, client, events } of batches) {
    const t0 = performance.now()
    const keyed = events.flatMap((e) =>
      e.segment === undefined ? [] : [{ ...e, artifact: segmentKey(e.artifact, e.segment) }],
    )
    const changes = index.record(events, now, client)
    const segChanges = segIndex.record(keyed, now, null)
    persistChanges(sql, A, changes, index.profile())
    if (keyed.length > 0) persistChanges(sql, B, segChanges, segIndex.profile())
    newTimes.push(performance.now() - t0)
  }
  const newStatements = statements / BATCHES

  // Same summary either way (compared compacted at the last batch's time, as snapshot() reads it).
  const at = start + BATCHES * 60_000
  const a = compactSummary(summary, at)
  const b = compactSummary(index.summary(), at)
  const same =
    JSON.stringify(a.artifacts.map((x) => x.artifact)) ===
      JSON.stringify(b.artifacts.map((x) => x.artifact)) &&
    a.transitions.length === b.transitions.length &&
    a.artifacts.every(
      (x, i) => Math.abs(x.count - counterAt(b.artifacts[i]!, at, b.halfLifeMs)) <= 1e-9 * x.count,
    )
  return {
    artifacts: N,
    transitionsPerArtifact: T,
    segments: S,
    eventsPerBatch: EVENTS,
    batches: BATCHES,
    oldMsPerBatch: quantiles(oldTimes),
    newMsPerBatch: quantiles(newTimes),
    statementsPerBatch: { old: oldStatements, new: newStatements },
    sameSummary: same,
  }
}

console.log(JSON.stringify(run(5000, 32, 20_000)))
console.log(JSON.stringify(run(1000, 8, 4000)))
