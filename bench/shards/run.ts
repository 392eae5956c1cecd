/**
 * Zone sharding evaluation: the prefetch benchmark's real npm dependency trees (bench/prefetch/fixtures)
 * installed by clients in three zones with shifted time zones, replayed hour by hour against four ways of
 * filling each zone's replica capacity:
 *   static hashing   — every package on one zone by HRW, bounded by capacity (no forecast, never moves)
 *   reactive LRU     — each zone an LRU over its capacity, filled by misses
 *   deltaport plan   — predict/shard-plan.ts from per-zone per-package Holt-Winters forecasts, re-planned
 *                      every few hours (what durable-objects/shard-planner.ts does), replicas only
 *   plan + LRU       — the plan on 75 % of the capacity, the rest as an LRU that the hot set is prefetched
 *                      into with the Thompson-sampled threshold: replicas and cache as one store, which the
 *                      edge is not (it warms the hot set into the colo's Workers Cache, a separate store)
 * Run: node bench/shards/run.ts [--seed 42] [--weeks 4] [--warmup-weeks 2] [--capacity 0.25] [--write]
 * No network: everything comes from the committed fixture and the seed.
 */
import { readFileSync, writeFileSync } from 'node:fs'
import { cpus, totalmem } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import type { CoEdge, DemandModel, PlanDependency, PlanShape, Rng } from '../../predict/index.ts'
import {
  assignBounded,
  banditReward,
  buildShardPlan,
  bytesToMove,
  diffPlans,
  forecastZone,
  mulberry32,
  normal,
  pickThreshold,
  recordThresholdReward,
  smape,
  thresholdArms,
} from '../../predict/index.ts'

const { values } = parseArgs({
  options: {
    seed: { type: 'string', default: '42' },
    weeks: { type: 'string', default: '4' },
    'warmup-weeks': { type: 'string', default: '2' },
    capacity: { type: 'string', default: '0.25' },
    'replan-hours': { type: 'string', default: '6' },
    write: { type: 'boolean', default: false },
  },
})
const SEED = Number(values.seed)
const WEEKS = Number(values.weeks)
const WARMUP = Number(values['warmup-weeks']) * 168
const HOURS = WEEKS * 168
const REPLAN = Number(values['replan-hours'])
const CAPACITY_SHARE = Number(values.capacity)
const HISTORY = 28 * 24
const MAX_REFITS = 24
const REFIT_SMAPE = 40
const LAMBDA = 0.5
const THRESHOLDS = [1, 20, 200]
const PREFETCH_ARMS = [0.5, 1, 2, 5, 10]
const started = performance.now()

// ---- workload ---------------------------------------------------------------------------------------
interface FixtureProject {
  name: string
  packages: string[]
  edges: [number, number][]
}
const fixture = JSON.parse(
  readFileSync(join(import.meta.dirname, '..', 'prefetch', 'fixtures', 'projects.json'), 'utf8'),
) as { resolvedAt: string; projects: FixtureProject[] }
const projects = fixture.projects.map((p) => ({ name: p.name, packages: [...new Set(p.packages)] }))
const ids = [...new Set(projects.flatMap((p) => p.packages))].sort()
const index = new Map(ids.map((id, i) => [id, i]))
const edges: CoEdge[] = fixture.projects.flatMap((p) =>
  p.edges.map(([a, b]) => ({ a: p.packages[a] ?? '', b: p.packages[b] ?? '', weight: 1 })),
)
const hashName = (s: string) => {
  let h = 2166136261
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619)
  return h >>> 0
}
const size = ids.map((id) => {
  const r = mulberry32(hashName(id) ^ SEED)
  return Math.round(Math.min(30 * 2 ** 20, Math.max(2048, Math.exp(Math.log(40 * 1024) + 1.3 * normal(r)))))
})
const totalBytes = size.reduce((s, v) => s + v, 0)

/** Zones with their UTC offset and traffic share; each prefers different projects, by day and by night (CI). */
const ZONES = [
  { id: 'wnam', utcOffset: -7, share: 0.4 },
  { id: 'weur', utcOffset: 1, share: 0.35 },
  { id: 'apac', utcOffset: 8, share: 0.25 },
]
const SESSIONS_PER_HOUR = 100
const rngFor = (salt: number): Rng => mulberry32((SEED * 0x9e3779b1) ^ salt)
const zonePrefs = ZONES.map((_, z) => {
  const r = rngFor(100 + z)
  const day = projects.map(() => r() ** 2)
  const night = projects.map(() => r() ** 3)
  return { day, night }
})
/** A project that takes off in one zone in the second half: trends are what forecasts are for. */
const LAUNCH = { zone: 2, project: 6 % projects.length, fromHour: Math.floor(HOURS * 0.6) }

function localHour(hour: number, z: number): { h: number; weekend: boolean } {
  const local = hour + (ZONES[z]?.utcOffset ?? 0)
  const day = Math.floor(local / 24)
  return { h: ((local % 24) + 24) % 24, weekend: ((day % 7) + 7) % 7 >= 5 }
}

/** Poisson draw by summing exponential gaps (rates here are small). */
function poisson(rate: number, r: Rng): number {
  let n = 0
  let acc = -Math.log(1 - r())
  while (acc < rate) {
    n++
    acc -= Math.log(1 - r())
  }
  return n
}

/** Requested package indexes per zone for hour `t` (a session installs a whole project tree). */
function sessionsAt(t: number, r: Rng): number[][] {
  return ZONES.map((zone, z) => {
    const { h, weekend } = localHour(t, z)
    const working = h >= 8 && h < 19
    const rate = SESSIONS_PER_HOUR * zone.share * (working ? 1 : 0.25) * (weekend ? 0.4 : 1)
    const n = poisson(rate, r)
    const prefs = zonePrefs[z] ?? { day: [], night: [] }
    const weights = (working ? prefs.day : prefs.night).map((w, p) =>
      z === LAUNCH.zone && p === LAUNCH.project && t >= LAUNCH.fromHour ? w + 1.5 : w,
    )
    const out: number[] = []
    for (let s = 0; s < n; s++) {
      let x = r() * weights.reduce((a, b) => a + b, 0)
      let p = 0
      while (p < weights.length - 1 && x >= (weights[p] ?? 0)) x -= weights[p++] ?? 0
      for (const id of projects[p]?.packages ?? []) out.push(index.get(id) ?? 0)
    }
    return out
  })
}

// ---- strategies ---------------------------------------------------------------------------------------
const capacity = Math.round(totalBytes * CAPACITY_SHARE)

class Lru {
  private readonly items = new Map<number, number>()
  used = 0
  limit: number
  constructor(limit: number) {
    this.limit = limit
  }
  has(i: number): boolean {
    const s = this.items.get(i)
    if (s === undefined) return false
    this.items.delete(i)
    this.items.set(i, s)
    return true
  }
  /** Inserts; returns bytes written (0 if it does not fit at all). */
  add(i: number, bytes: number): number {
    if (this.items.has(i) || bytes > this.limit) return 0
    while (this.used + bytes > this.limit) {
      const oldest = this.items.keys().next().value
      if (oldest === undefined) break
      this.used -= this.items.get(oldest) ?? 0
      this.items.delete(oldest)
    }
    this.items.set(i, bytes)
    this.used += bytes
    return bytes
  }
  resize(limit: number): void {
    this.limit = limit
    while (this.used > this.limit) {
      const oldest = this.items.keys().next().value
      if (oldest === undefined) break
      this.used -= this.items.get(oldest) ?? 0
      this.items.delete(oldest)
    }
  }
}

interface Score {
  requests: number
  hits: number
  bytes: number
  crossBytes: number
  moved: number[]
}
const newScore = (): Score => ({ requests: 0, hits: 0, bytes: 0, crossBytes: 0, moved: [] })

// Static hashing: byte-capacity-bounded HRW, one replica, placed once.
const staticHolds = ZONES.map(() => new Set<number>())
{
  const slots = Math.floor(capacity / (totalBytes / ids.length))
  const assignment = assignBounded(
    ids,
    ZONES.map((z) => ({ id: z.id, weight: 1, capacity: slots })),
    1,
  )
  ZONES.forEach((z, zi) => {
    for (const [id, zones] of Object.entries(assignment.placement)) {
      if (zones.includes(z.id)) staticHolds[zi]?.add(index.get(id) ?? 0)
    }
  })
}

// ---- deltaport: the planner's cycle, same predict/ calls as durable-objects/shard-planner.ts -------------
const demand = ZONES.map(() => ids.map(() => new Float64Array(HOURS)))
const models = new Map<string, DemandModel>()
const zoneModels = new Map<number, DemandModel>()
const evaluations = ZONES.map(() => [] as { predicted: number; actual: number }[])
/** The scored part of `evaluations` (after warm-up): what the table reports. */
const naiveEvaluations = ZONES.map(() => [] as { predicted: number; actual: number }[])
const scoredEvaluations = ZONES.map(() => [] as { predicted: number; actual: number }[])
let plan: PlanShape | null = null
let hybridPlan: PlanShape | null = null
/**
 * The hybrid variant splits each zone: this share for planned replicas, the rest for the hot-set LRU. The
 * deployed edge does not (its hot set goes into the colo cache, beside the replicas' full capacity).
 */
const HYBRID_PLAN_SHARE = 0.75
let arms = thresholdArms(PREFETCH_ARMS)
let threshold = PREFETCH_ARMS[0] ?? 1
const banditRng = rngFor(7)

function cycle(t: number): { deps: PlanDependency[]; predicted: number[][]; refits: number } {
  const from = Math.max(0, t - HISTORY)
  const horizon = REPLAN
  const predicted = ZONES.map(() => new Array<number>(horizon).fill(0))
  const deps: PlanDependency[] = ids.map((id, i) => ({
    id,
    name: id,
    version: '1.0.0',
    key: id,
    size: size[i] ?? 0,
    sha256: '0'.repeat(64),
    demand: {},
  }))
  let refits = 0
  let budget = MAX_REFITS
  ZONES.forEach((zone, z) => {
    const recent = evaluations[z]?.slice(-24) ?? []
    const error = smape(
      recent.map((e) => e.actual),
      recent.map((e) => e.predicted),
    )
    const totals = new Array<number>(t - from).fill(0)
    for (const series of demand[z] ?? []) for (let h = from; h < t; h++) totals[h - from]! += series[h] ?? 0
    // As the planner: dependencies with demand in the window, hottest first.
    const window = (i: number) => (demand[z]?.[i] ?? new Float64Array(0)).subarray(from, t)
    const hot = ids
      .map((_, i) => ({ i, total: window(i).reduce((s, v) => s + v, 0) }))
      .filter((h) => h.total > 0)
      .sort((a, b) => b.total - a.total || a.i - b.i)
    const round = forecastZone({
      totals,
      zoneModel: zoneModels.get(z) ?? null,
      entries: hot.map(({ i }) => ({
        entry: String(i),
        series: Array.from(window(i)),
        model: models.get(`${i}|${z}`) ?? null,
      })),
      horizon,
      refit: error > REFIT_SMAPE,
      refitBudget: budget,
    })
    budget = round.refitBudgetLeft
    refits += round.refits
    if (round.zoneModel !== null) zoneModels.set(z, round.zoneModel)
    for (const f of round.entries) {
      const i = Number(f.entry)
      if (f.model !== undefined) models.set(`${i}|${z}`, f.model)
      const dep = deps[i]
      if (dep) dep.demand[zone.id] = f.point.reduce((s, v) => s + v, 0) / horizon
      f.point.forEach((v, h) => {
        predicted[z]![h]! += v
      })
    }
  })
  return { deps: deps.filter((d) => Object.keys(d.demand).length > 0), predicted, refits }
}

/** Plans one variant from the shared forecasts; copies are instant here (every replica verified at once). */
function place(
  previous: PlanShape | null,
  deps: PlanDependency[],
  capacityBytes: number,
  prefetchThreshold: number,
): { plan: PlanShape; moved: number } {
  const next = buildShardPlan(
    deps,
    ZONES.map((z) => ({ id: z.id, capacityBytes, weight: 1 })),
    edges,
    { replicationThresholds: THRESHOLDS, prefetchThreshold, minEdgeWeight: 1, horizonHours: REPLAN },
    previous,
    new Date(0).toISOString(),
  )
  const active = { ...next, entries: next.entries.map((e) => ({ ...e, active: [...e.replicas] })) }
  return { plan: active, moved: bytesToMove(diffPlans(previous, active)) }
}

// ---- replay -------------------------------------------------------------------------------------------
const names = [
  'static hashing (no forecast)',
  'reactive LRU only',
  'deltaport plan',
  'plan (75 %) + LRU (25 %) in one store + hot-set prefetch',
]
const scores = names.map(() => ZONES.map(newScore))
const lru = ZONES.map(() => new Lru(capacity))
const hybridLru = ZONES.map(() => new Lru(capacity))
let replicaSets = ZONES.map(() => new Set<number>())
let hybridSets = ZONES.map(() => new Set<number>())
let pending: number[][] = ZONES.map(() => [])
/**
 * The hybrid's bandit interval: what the planner's zone_metrics would hold. `warmFills` is what its reward
 * charges, as the planner's does: the hot-set prefetch bytes (the edge's warm fills), not replica copies or
 * LRU fills on misses, which the threshold does not cause.
 */
let intervalStats = { requests: 0, hits: 0, bytes: 0, warmFills: 0 }
let refitsTotal = 0
let replans = 0
const r = rngFor(1)
for (let t = 0; t < HOURS; t++) {
  const scored = t >= WARMUP
  if (t >= 2 * 24 && t % REPLAN === 0) {
    if (plan !== null && scored) {
      const reward = banditReward({
        hits: intervalStats.hits,
        requests: intervalStats.requests,
        bytesServed: intervalStats.bytes,
        warmFillBytes: intervalStats.warmFills,
        lambda: LAMBDA,
      })
      if (reward !== null) arms = recordThresholdReward(arms, String(threshold), reward, banditRng)
      threshold = pickThreshold(arms, banditRng).threshold
    }
    intervalStats = { requests: 0, hits: 0, bytes: 0, warmFills: 0 }
    const c = cycle(t)
    refitsTotal += c.refits
    replans += scored ? 1 : 0
    pending = c.predicted
    const a = place(plan, c.deps, capacity, threshold)
    const b = place(hybridPlan, c.deps, Math.round(capacity * HYBRID_PLAN_SHARE), threshold)
    plan = a.plan
    hybridPlan = b.plan
    const holders = (p: PlanShape) =>
      ZONES.map(
        (z) => new Set(p.entries.filter((e) => e.replicas.includes(z.id)).map((e) => index.get(e.id) ?? 0)),
      )
    replicaSets = holders(a.plan)
    hybridSets = holders(b.plan)
    let prefetchBytes = 0
    ZONES.forEach((z, zi) => {
      const planned = b.plan.zones.find((p) => p.id === z.id)?.plannedBytes ?? 0
      const cache = hybridLru[zi]!
      cache.resize(Math.max(0, capacity - planned))
      for (const id of b.plan.zones.find((p) => p.id === z.id)?.hot ?? []) {
        const i = index.get(id) ?? 0
        if (!hybridSets[zi]?.has(i) && !cache.has(i)) prefetchBytes += cache.add(i, size[i] ?? 0)
      }
    })
    // Warming the hot set (a blob not already held) is the fill the threshold causes: what the edge reports.
    intervalStats.warmFills += prefetchBytes
    if (scored) {
      for (const s of scores[2]!) s.moved.push(a.moved / ZONES.length)
      for (const s of scores[3]!) s.moved.push((b.moved + prefetchBytes) / ZONES.length)
      for (const s of scores[0]!) s.moved.push(0)
    }
  }
  const requested = sessionsAt(t, r)
  requested.forEach((reqs, z) => {
    for (const i of reqs) demand[z]![i]![t]! += 1
    const predicted = pending[z]?.[t % REPLAN]
    if (predicted !== undefined) {
      evaluations[z]!.push({ predicted, actual: reqs.length })
      if (scored) {
        scoredEvaluations[z]!.push({ predicted, actual: reqs.length })
        // Reference: the same hour one week earlier (seasonal naive), to judge the forecast against.
        let lastWeek = 0
        for (const series of demand[z] ?? []) lastWeek += series[t - 168] ?? 0
        naiveEvaluations[z]!.push({ predicted: lastWeek, actual: reqs.length })
      }
    }
    if (!scored) {
      for (const i of reqs) lru[z]!.has(i) || lru[z]!.add(i, size[i] ?? 0)
      return
    }
    let lruMoved = 0
    for (const i of reqs) {
      const bytes = size[i] ?? 0
      const outcomes = [
        staticHolds[z]!.has(i),
        lru[z]!.has(i),
        replicaSets[z]!.has(i),
        hybridSets[z]!.has(i) || hybridLru[z]!.has(i),
      ]
      if (!outcomes[1]) lruMoved += lru[z]!.add(i, bytes)
      if (!outcomes[3]) hybridLru[z]!.add(i, bytes)
      outcomes.forEach((hit, s) => {
        const score = scores[s]![z]!
        score.requests++
        score.bytes += bytes
        if (hit) score.hits++
        else score.crossBytes += bytes
      })
      intervalStats.requests++
      intervalStats.bytes += bytes
      if (outcomes[3]) intervalStats.hits++
    }
    const lruScore = scores[1]![z]!
    if (t % REPLAN === 0 || lruScore.moved.length === 0) lruScore.moved.push(0)
    lruScore.moved[lruScore.moved.length - 1]! += lruMoved
  })
}

// ---- report -------------------------------------------------------------------------------------------
const MiB = 2 ** 20
const sum = (xs: readonly number[]) => xs.reduce((s, v) => s + v, 0)
const pct = (x: number) => `${(100 * x).toFixed(1)} %`
const rows = names.map((name, s) => {
  const zs = scores[s]!
  const requests = sum(zs.map((z) => z.requests))
  const hits = sum(zs.map((z) => z.hits))
  const perZone = zs.map((z, zi) => `${ZONES[zi]?.id} ${pct(z.hits / Math.max(1, z.requests))}`).join(', ')
  const movedPerReplan = sum(zs.map((z) => sum(z.moved))) / Math.max(1, zs[0]?.moved.length ?? 1)
  return {
    name,
    hit: hits / Math.max(1, requests),
    perZone,
    crossMiB: sum(zs.map((z) => z.crossBytes)) / MiB,
    movedMiB: movedPerReplan / MiB,
  }
})
const forecastError = ZONES.map((z, zi) => {
  const e = scoredEvaluations[zi] ?? []
  return `${z.id} ${smape(
    e.map((x) => x.actual),
    e.map((x) => x.predicted),
  ).toFixed(1)} %`
})
const naiveError = ZONES.map((z, zi) => {
  const e = naiveEvaluations[zi] ?? []
  return `${z.id} ${smape(
    e.map((x) => x.actual),
    e.map((x) => x.predicted),
  ).toFixed(1)} %`
})
const table = [
  '| strategy | zone hit ratio | per zone | cross-zone MiB | MiB moved per re-plan |',
  '|---|---:|---|---:|---:|',
  ...rows.map(
    (row) =>
      `| ${row.name} | ${pct(row.hit)} | ${row.perZone} | ${row.crossMiB.toFixed(0)} | ${row.movedMiB.toFixed(1)} |`,
  ),
].join('\n')
const seconds = (performance.now() - started) / 1000
const facts = [
  `- seed ${SEED}; ${WEEKS} simulated weeks, first ${WARMUP / 168} warm-up (demand recorded, not scored); re-plan every ${REPLAN} h (${replans} scored re-plans)`,
  `- ${projects.length} real npm project trees, ${ids.length} packages, ${(totalBytes / MiB).toFixed(0)} MiB in all; zone capacity ${pct(CAPACITY_SHARE)} of that (${(capacity / MiB).toFixed(0)} MiB) per zone`,
  `- zones ${ZONES.map((z) => `${z.id} (UTC${z.utcOffset >= 0 ? '+' : ''}${z.utcOffset}, ${pct(z.share)})`).join(', ')}; project mix differs per zone and between working hours and nights (CI); one project takes off in ${ZONES[LAUNCH.zone]?.id} at hour ${LAUNCH.fromHour}`,
  `- forecast error (sMAPE of hourly zone requests, up to ${REPLAN} h ahead): ${forecastError.join(', ')} (same hour last week as a reference: ${naiveError.join(', ')}); ${refitsTotal} refits`,
  `- bandit: prefetch threshold arms ${JSON.stringify(arms.map((a) => [a.threshold, a.successes, a.failures]))} ([threshold, successes, failures]), λ = ${LAMBDA}`,
  `- run time ${seconds.toFixed(1)} s`,
].join('\n')
console.log(table)
console.log(facts)

if (values.write) {
  const machine = `${cpus()[0]?.model.split(' ').slice(0, 2).join(' ') ?? 'cpu'} × ${cpus().length}, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}`
  const doc = `# Zone sharding evaluation (bench/shards)

Generated by \`node bench/shards/run.ts --write\` on ${new Date().toISOString()} (${machine}).
Fixture: \`bench/prefetch/fixtures/projects.json\` (resolved from the npm registry on ${fixture.resolvedAt}).

${table}

${facts}

## Method

- **Workload.** The prefetch benchmark's seven real npm dependency trees; a session installs one whole tree
  (every package is a request for its blob). Each zone has its own project preferences, a different mix at
  night (CI) than in working hours, its own UTC offset (so the three zones peak at different UTC hours),
  weekends at 40 %, and one project that takes off in apac 60 % of the way in.
- **Capacity.** Every strategy may keep ${pct(CAPACITY_SHARE)} of all bytes per zone. A request is a *zone hit*
  when its zone holds the package; otherwise the bytes cross zones (from the primary bucket).
- **static hashing**: bounded-load HRW (predict/hashing.ts), one replica per package, never moves.
  **reactive LRU**: per zone, filled by misses (its "bytes moved" are the fills in each re-plan interval).
  **deltaport plan**: each re-plan runs the planner's own forecasting round (\`forecastZone\` in
  predict/shard-feedback.ts, the function durable-objects/shard-planner.ts calls): every package's hourly
  requests per zone with Holt-Winters (weights reused, refit when the zone's sMAPE over the last 24 h
  passes ${REFIT_SMAPE} %, at most ${MAX_REFITS} refits per cycle; the zone total lends its weights to new
  series), then
  \`buildShardPlan\` (replication thresholds ${JSON.stringify(THRESHOLDS)} req/h, demand-weighted HRW, capacity,
  co-location over the trees' dependency edges); replicas change by \`diffPlans\`. Copies are instant here.
  **plan (75 %) + LRU (25 %) in one store + hot-set prefetch**: the plan gets 75 % of each zone, the rest
  (plus anything the plan leaves free) is an LRU; at each re-plan the zone's hot
  set (forecast ≥ the Thompson-sampled threshold) is prefetched into it. This is *not* how the edge is
  built: there the hot set is warmed into the colo's Workers Cache, a store of its own on top of the zone
  bucket's replica capacity, which the plan uses whole. The variant shares one store between replicas and
  cache so the bandit has something to trade off here; it measures that split, not the edge's warming. The bandit's reward is what the
  planner's is: hit ratio − λ·warm-fill bytes/bytes served, where the warm fills are the bytes this
  prefetch wrote (hot packages the zone did not hold yet); replica copies and LRU fills on misses are not
  charged, since the threshold causes neither.
- **Forecast error** is the sMAPE of the summed per-package forecasts against the zone's actual hourly requests.

## Findings

- The forecast plan has the best zone hit ratio and the fewest cross-zone bytes, and moves a few MiB per
  re-plan (stickiness + HRW keep placement stable); static hashing cannot follow per-zone demand (≈ 1/3 of
  what a zone holds is what it asks for), and a reactive LRU thrashes because one install reads a whole
  dependency tree, often larger than the zone's capacity (the classic LRU scan failure), so it also moves
  by far the most bytes.
- Taking a quarter of a zone's replica capacity for a reactive LRU with hot-set prefetch *loses* to planning
  all of it, on this workload, for the same reason: the LRU part thrashes. The deployed edge makes no such
  split (its warmed hot set sits in the colo cache beside the replicas), so this row is no verdict on it. Charged only for its warm fills, the Thompson
  bandit's rewards (Bernoulli trick) are close to each interval's hit ratio, since the hot-set prefetch
  writes little beside the bytes served; it plays some thresholds more than others, but 56 intervals have
  not settled it, as the hit ratio barely depends on the threshold here. (Charged for replica copies and
  LRU fills as well, as before 2026-11-26, nearly every reward was a failure: 2 successes in 56.) The
  threshold matters more where the edge cache is separate from replica capacity (the edge's Cache API, as
  deployed), which this replay does not model: its hit ratios count the zone store only, never a colo cache.
- Forecast error is dominated by session lumpiness (one install = tens to hundreds of requests); the
  Holt-Winters forecasts still beat "same hour last week" in every zone. apac stays above the refit
  threshold after its launch, so its models are refit every cycle (bounded by the per-cycle budget).
`
  writeFileSync(join(import.meta.dirname, 'RESULTS.md'), doc)
  console.log('wrote bench/shards/RESULTS.md')
}
