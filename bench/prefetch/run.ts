/**
 * Prefetch evaluation: real npm dependency trees (fixtures/projects.json, see fetch-fixtures.ts) replayed
 * through the edge's own telemetry ingest (durable-objects/ingest.ts recordBatch) and prefetch planner
 * (durable-objects/prefetch-planner.ts planPrefetch), against simple baselines and an oracle.
 * Run: node bench/prefetch/run.ts [--seed 42] [--clients 300] [--weeks 6] [--warmup-weeks 2]
 *      [--budget-mib 4] [--link-mbit 20] [--write]   (--write refreshes RESULTS.md beside this file)
 *      [--expansion-only]   (just the dependency-expansion table, printed)
 * No network: everything comes from the committed fixture and the seed.
 */
import { readFileSync, writeFileSync } from 'node:fs'
import { cpus, totalmem } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { gt as semverGt, inc as semverInc } from 'semver'
import type { Catalog, ChannelHead } from '../../durable-objects/catalog-types.ts'
import { capBatchWeight, recordBatch } from '../../durable-objects/ingest.ts'
import {
  MAX_CANDIDATE_NAMES,
  PREFETCH_HORIZON_MS,
  planPrefetch,
} from '../../durable-objects/prefetch-planner.ts'
import type { AccessSummary, ManifestEntry, Rng, ScheduledUpdate } from '../../predict/index.ts'
import {
  buildPrefetchQueue,
  calculateArtifactProbabilities,
  counterAt,
  emptySummary,
  hourOfWeek,
  mulberry32,
  nextUses,
  normal,
} from '../../predict/index.ts'
import type { ArtifactManifest } from '../../schemas/manifest.ts'
import { measureExpansion } from './expansion.ts'

// ---------------------------------------------------------------------------------------------------------
// The edge's own planner, replayed in Node with an in-memory catalog.

// ---------------------------------------------------------------------------------------------------------
const { values } = parseArgs({
  options: {
    seed: { type: 'string', default: '42' },
    'expansion-only': { type: 'boolean', default: false },
    clients: { type: 'string', default: '300' },
    weeks: { type: 'string', default: '6' },
    'warmup-weeks': { type: 'string', default: '2' },
    'budget-mib': { type: 'string', default: '4' },
    'link-mbit': { type: 'string', default: '20' },
    'recent-hours': { type: 'string', default: '168' },
    write: { type: 'boolean', default: false },
  },
})
if (values['expansion-only']) {
  console.log(measureExpansion(MAX_CANDIDATE_NAMES))
  process.exit(0)
}
const SEED = Number(values.seed)
const CLIENTS = Number(values.clients)
const WEEKS = Number(values.weeks)
const WARMUP_WEEKS = Number(values['warmup-weeks'])
const BUDGET = Math.round(Number(values['budget-mib']) * 1024 * 1024)
const LINK_BYTES_PER_S = (Number(values['link-mbit']) * 1e6) / 8

const HOUR = 3_600_000
const DAY = 24 * HOUR
const WEEK = 7 * DAY
/** Monday 2026-01-05 00:00 UTC. */
const START = Date.UTC(2026, 0, 5)
const END = START + WEEKS * WEEK
const EVAL_FROM = START + WARMUP_WEEKS * WEEK
const HORIZON = PREFETCH_HORIZON_MS
/** Local hour at which an idle agent asks for its queue and stages it. */
const PLAN_LOCAL_HOUR = 3
/** Gap between consecutive package requests inside an update session. */
const REQUEST_GAP_MS = 2_000
/** How much of its own history an agent reports as `recent`. */
const RECENT_WINDOW_MS = Number(values['recent-hours']) * HOUR
const RECENT_MAX = 128
const CHANNEL = 'stable'

const REGIONS = [
  { id: 'eu', utcOffset: 1, share: 0.4 },
  { id: 'us', utcOffset: -5, share: 0.4 },
  { id: 'apac', utcOffset: 8, share: 0.2 },
] as const
const ZIPF_S = 1.1
const TWO_PROJECTS_P = 0.4
const SESSIONS_PER_WEEK = [1, 5] as const
/** Daily publish probability of a package: base + popularity-driven part. */
const PUBLISH_BASE = 0.004
const PUBLISH_POP = 0.05
const SIZE_MEDIAN = 40 * 1024
const SIZE_SIGMA = 1.3

// ---------------------------------------------------------------------------------------------------------
interface FixtureProject {
  name: string
  roots: string[]
  packages: string[]
  edges: [number, number][]
}
const fixture = JSON.parse(readFileSync(join(import.meta.dirname, 'fixtures', 'projects.json'), 'utf8')) as {
  resolvedAt: string
  projects: FixtureProject[]
}

const splitRef = (ref: string): [string, string] => {
  const at = ref.lastIndexOf('@')
  return [ref.slice(0, at), ref.slice(at + 1)]
}

/** Per-purpose generators so one part's draws do not shift another's. */
const rngFor = (salt: number): Rng => mulberry32((SEED * 0x9e3779b1) ^ salt)
function hashName(s: string): number {
  let h = 2166136261
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619)
  return h >>> 0
}

interface Project {
  name: string
  /** Package names in dependency (pre-)order: a package before what it depends on. */
  order: string[]
}
const initialVersion = new Map<string, string>()
const depsOf = new Map<string, Set<string>>()
const projects: Project[] = fixture.projects.map((p) => {
  const names = p.packages.map((ref) => {
    const [name, version] = splitRef(ref)
    const had = initialVersion.get(name)
    if (had === undefined || semverGt(version, had)) initialVersion.set(name, version)
    return name
  })
  const children = new Map<string, string[]>()
  for (const [from, to] of p.edges) {
    const a = names[from] ?? ''
    const b = names[to] ?? ''
    children.set(a, [...(children.get(a) ?? []), b])
    depsOf.set(a, (depsOf.get(a) ?? new Set()).add(b))
  }
  const order: string[] = []
  const seen = new Set<string>()
  const visit = (n: string) => {
    if (seen.has(n)) return
    seen.add(n)
    order.push(n)
    for (const c of [...(children.get(n) ?? [])].sort()) visit(c)
  }
  for (const r of p.roots) visit(r)
  for (const n of names) visit(n) // anything unreachable from the roots (peer-only links)
  return { name: p.name, order }
})
const packageNames = [...initialVersion.keys()].sort()

// Sizes: the lockfile has none; a seeded log-normal per package (tarball-like, median 40 KiB).
const sizeOf = new Map<string, number>()
for (const name of packageNames) {
  const r = mulberry32(hashName(name) ^ SEED)
  const s = Math.exp(Math.log(SIZE_MEDIAN) + SIZE_SIGMA * normal(r))
  sizeOf.set(name, Math.round(Math.min(30 * 1024 * 1024, Math.max(2048, s))))
}

// ---------------------------------------------------------------------------------------------------------
// Clients: region, one or two projects by Zipf popularity, a personal update rate.
interface Client {
  id: string
  region: number
  projects: Project[]
  sessionsPerWeek: number
}
const zipf = projects.map((_, i) => 1 / (i + 1) ** ZIPF_S)
const projectRank = (() => {
  const r = rngFor(1)
  const idx = projects.map((_, i) => i)
  for (let i = idx.length - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1))
    ;[idx[i], idx[j]] = [idx[j] ?? 0, idx[i] ?? 0]
  }
  return idx // projectRank[k] = project holding popularity rank k
})()
const pick = (r: Rng, weights: readonly number[]) => {
  let x = r() * weights.reduce((s, w) => s + w, 0)
  for (let i = 0; i < weights.length; i++) {
    x -= weights[i] ?? 0
    if (x < 0) return i
  }
  return weights.length - 1
}
const clients: Client[] = []
{
  const r = rngFor(2)
  for (let i = 0; i < CLIENTS; i++) {
    const region = pick(
      r,
      REGIONS.map((g) => g.share),
    )
    const first = projectRank[pick(r, zipf)] ?? 0
    const owned = [first]
    if (r() < TWO_PROJECTS_P) {
      const second = projectRank[pick(r, zipf)] ?? 0
      if (second !== first) owned.push(second)
    }
    clients.push({
      id: `client-${String(i).padStart(4, '0')}`,
      region,
      projects: owned.map((k) => projects[k] as Project),
      sessionsPerWeek: SESSIONS_PER_WEEK[0] + r() * (SESSIONS_PER_WEEK[1] - SESSIONS_PER_WEEK[0]),
    })
  }
}

// Package popularity = share of clients whose projects contain it; drives publish frequency.
const popularity = new Map<string, number>()
for (const c of clients) {
  const names = new Set(c.projects.flatMap((p) => p.order))
  for (const n of names) popularity.set(n, (popularity.get(n) ?? 0) + 1 / CLIENTS)
}

// ---------------------------------------------------------------------------------------------------------
// Timeline: publishes, nightly plans, update sessions.
type Ev =
  | { kind: 'publish'; at: number; name: string; version: string }
  | { kind: 'plan'; at: number; client: number }
  | { kind: 'session'; at: number; client: number }
const timeline: Ev[] = []
{
  const r = rngFor(3)
  for (const name of packageNames) {
    let version = initialVersion.get(name) ?? '0.0.0'
    const pDay = PUBLISH_BASE + PUBLISH_POP * (popularity.get(name) ?? 0)
    for (let day = START; day < END; day += DAY) {
      const weekday = ((day - START) / DAY) % 7 < 5
      if (r() >= pDay * (weekday ? 1.2 : 0.5)) continue
      const u = r()
      version = semverInc(version, u < 0.9 ? 'patch' : u < 0.99 ? 'minor' : 'major') ?? version
      // Publishers work roughly 08:00-20:00 UTC.
      timeline.push({ kind: 'publish', at: day + 8 * HOUR + Math.floor(r() * 12 * HOUR), name, version })
    }
  }
}
/** Relative chance that a developer runs an update in this local hour of the week. */
function activity(localHourOfWeek: number): number {
  const day = Math.floor(localHourOfWeek / 24)
  const hour = localHourOfWeek % 24
  if (day < 5)
    return hour >= 9 && hour < 18 ? 1 : (hour >= 7 && hour < 9) || (hour >= 18 && hour < 22) ? 0.25 : 0.02
  return hour >= 10 && hour < 20 ? 0.15 : 0.02
}
const activityTotal = Array.from({ length: 168 }, (_, h) => activity(h)).reduce((s, w) => s + w, 0)
{
  const r = rngFor(4)
  clients.forEach((c, i) => {
    const offset = REGIONS[c.region]?.utcOffset ?? 0
    for (let t = START; t < END; t += HOUR) {
      const local = hourOfWeek(t + offset * HOUR)
      if (r() < (c.sessionsPerWeek * activity(local)) / activityTotal)
        timeline.push({ kind: 'session', at: t + Math.floor(r() * 50 * 60_000), client: i })
    }
    // Nightly plan at PLAN_LOCAL_HOUR local time, every day, whether or not an update follows.
    for (let d = START - DAY; d < END; d += DAY) {
      const at = d + (PLAN_LOCAL_HOUR - offset) * HOUR
      if (at >= START && at < END) timeline.push({ kind: 'plan', at, client: i })
    }
  })
}
const kindOrder = { publish: 0, plan: 1, session: 2 } as const
timeline.sort((a, b) => a.at - b.at || kindOrder[a.kind] - kindOrder[b.kind])

/** A client starts with its projects' resolved versions, in dependency order. */
function initialInstalled(c: Client): Map<string, string> {
  return new Map(
    c.projects.flatMap((p) => p.order.map((n): [string, string] => [n, initialVersion.get(n) ?? ''])),
  )
}

// ---------------------------------------------------------------------------------------------------------
// Pass 1: what each session requests (independent of any strategy), so the oracle can look ahead.
interface Request {
  name: string
  version: string
  at: number
}
const sessionRequests = new Map<Ev, Request[]>()
const futureOf: Request[][] = clients.map(() => [])
{
  const head = new Map(initialVersion)
  const installed = clients.map(initialInstalled)
  for (const ev of timeline) {
    if (ev.kind === 'publish') head.set(ev.name, ev.version)
    else if (ev.kind === 'session') {
      const have = installed[ev.client] as Map<string, string>
      const reqs: Request[] = []
      const done = new Set<string>()
      for (const p of clients[ev.client]?.projects ?? []) {
        for (const name of p.order) {
          if (done.has(name)) continue
          done.add(name)
          const v = head.get(name) ?? ''
          if (have.get(name) !== v) {
            reqs.push({ name, version: v, at: ev.at + reqs.length * REQUEST_GAP_MS })
            have.set(name, v)
          }
        }
      }
      sessionRequests.set(ev, reqs)
      futureOf[ev.client]?.push(...reqs)
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Pass 2: telemetry through the edge's ingest, plans per strategy, hits against the staging area.
const STRATEGIES = ['none', 'popularity', 'markov', 'deltaport', 'unbounded', 'oracle'] as const
type Strategy = (typeof STRATEGIES)[number]
interface Staged {
  bytes: number
  plannedAt: number
  /** The client had no version of this package when it was staged. */
  foreign: boolean
}
interface Tally {
  requests: number
  hits: number
  requestBytes: number
  hitBytes: number
  prefetchedBytes: number
  usedBytes: number
  /** Staged items still the current head at the end, not yet requested: neither used nor wasted yet. */
  pendingBytes: number
  items: number
  /** Prefetched bytes of packages the client did not have (never requested in this simulation). */
  foreignBytes: number
  planMs: number
}
const tally = Object.fromEntries(
  STRATEGIES.map((s) => [
    s,
    {
      requests: 0,
      hits: 0,
      requestBytes: 0,
      hitBytes: 0,
      prefetchedBytes: 0,
      usedBytes: 0,
      pendingBytes: 0,
      items: 0,
      foreignBytes: 0,
      planMs: 0,
    },
  ]),
) as Record<Strategy, Tally>
const staging = Object.fromEntries(
  STRATEGIES.map((s) => [s, clients.map(() => new Map<string, Staged>())]),
) as Record<Strategy, Map<string, Staged>[]>
const refKey = (name: string, version: string) => `${name}@${version}`

const summaries: AccessSummary[] = REGIONS.map((g) => emptySummary(g.id, START))
const population = REGIONS.map((_, i) => clients.filter((c) => c.region === i).length)
const head = new Map<string, ChannelHead>(
  [...initialVersion].map(([n, v]) => [n, { version: v, createdAt: START - 30 * DAY }]),
)
const installedOf = clients.map(initialInstalled)
const recentOf: { artifact: string; at: number }[][] = clients.map(() => [])
const futureCursor = clients.map(() => 0)

const manifestCache = new Map<string, ArtifactManifest>()
const catalog: Catalog = {
  head: async (name) => head.get(name) ?? null,
  // The replay yanks nothing.
  yanked: async () => false,
  manifest: async (name, version) => {
    const key = refKey(name, version)
    let m = manifestCache.get(key)
    if (m === undefined) {
      const created = new Date(START).toISOString()
      m = {
        schemaVersion: 1,
        name,
        version,
        size: sizeOf.get(name) ?? 0,
        sha256: '0'.repeat(64),
        mediaType: 'application/gzip',
        dependencies: [...(depsOf.get(name) ?? [])].sort().map((d) => ({ name: d, range: '*' })),
        channels: [CHANNEL],
        createdAt: created,
        expires: new Date(END + WEEK).toISOString(),
        serial: 1,
        chunkIndex: null,
        deltas: [],
      }
      manifestCache.set(key, m)
    }
    return m
  },
}

interface Pick {
  name: string
  version: string
}
/** Candidates at their channel head, not what the client already has, into `budget` by predict's queue. */
function queueFrom(scored: { name: string; probability: number }[], client: number, now: number): Pick[] {
  const have = installedOf[client] as Map<string, string>
  const candidates = scored.flatMap(({ name, probability }) => {
    const h = head.get(name)
    if (h === undefined || have.get(name) === h.version) return []
    const bytes = sizeOf.get(name) ?? 0
    return [{ artifact: name, version: h.version, probability, bytes }]
  })
  return buildPrefetchQueue(candidates, { now, budgetBytes: BUDGET }).queue.map((q) => ({
    name: q.artifact,
    version: q.version ?? '',
  }))
}

async function plan(strategy: Strategy, client: number, now: number): Promise<Pick[]> {
  const c = clients[client] as Client
  const summary = summaries[c.region] as AccessSummary
  switch (strategy) {
    case 'none':
      return []
    case 'popularity': {
      // The region's most requested packages (decayed counts), at their heads.
      const ranked = summary.artifacts
        .map((a) => ({ name: a.artifact, count: counterAt(a, now, summary.halfLifeMs) }))
        .sort((a, b) => b.count - a.count || (a.name < b.name ? -1 : 1))
      const top = ranked[0]?.count ?? 1
      return queueFrom(
        ranked.map((a) => ({ name: a.name, probability: a.count / top })),
        client,
        now,
      )
    }
    case 'markov': {
      // First-order transitions (predict's nextUses) from what the client used in its last sessions,
      // noisy-OR over sources; no lag cut-off, no counts, no seasonality, no schedule, no manifest.
      const recent = recentOf[client] ?? []
      const froms = new Set(recent.map((r) => r.artifact))
      if (froms.size === 0) return []
      const narrowed = { ...summary, transitions: summary.transitions.filter((t) => froms.has(t.from)) }
      const miss = new Map<string, number>()
      for (const from of froms) {
        for (const n of nextUses(narrowed, from, now)) {
          if (froms.has(n.to)) continue
          miss.set(n.to, (miss.get(n.to) ?? 1) * (1 - n.probability))
        }
      }
      return queueFrom(
        [...miss].map(([name, q]) => ({ name, probability: 1 - q })),
        client,
        now,
      )
    }
    case 'deltaport': {
      const installed = [...(installedOf[client] as Map<string, string>)]
      const queue = await planPrefetch({
        clientId: c.id,
        now,
        validForMs: HORIZON,
        summary,
        population: population[c.region] ?? 1,
        recent: (recentOf[client] ?? []).filter((r) => r.at >= now - RECENT_WINDOW_MS).slice(-RECENT_MAX),
        installed: installed.map(([artifact, version]) => ({ artifact, version })),
        channel: CHANNEL,
        budgetBytes: BUDGET,
        catalog,
      })
      return queue.items.map((i) => ({ name: i.name, version: i.version }))
    }
    case 'unbounded':
      return planWithoutLookupCap(client, now)
    case 'oracle': {
      // Knows all of this client's future requests; can stage only versions already published. Soonest
      // first, then smallest, within the budget (it never stages anything that will not be requested).
      const future = futureOf[client] ?? []
      let k = futureCursor[client] ?? 0
      while (k < future.length && (future[k]?.at ?? 0) <= now) k++
      futureCursor[client] = k
      const staged = staging.oracle[client] as Map<string, Staged>
      const out: Pick[] = []
      let used = 0
      for (let j = k; j < future.length; j++) {
        const f = future[j] as Request
        if (head.get(f.name)?.version !== f.version || staged.has(refKey(f.name, f.version))) continue
        const bytes = sizeOf.get(f.name) ?? 0
        if (used + bytes > BUDGET) continue
        used += bytes
        out.push({ name: f.name, version: f.version })
      }
      return out
    }
  }
}

/**
 * What-if, not the shipped planner: planPrefetch's steps restated (seeds, channel heads newer than installed
 * as scheduled updates, manifest dependencies, calculateArtifactProbabilities, buildPrefetchQueue, min
 * probability 0.01) but every seed and dependency is looked up instead of the first MAX_CANDIDATE_NAMES.
 */
function planWithoutLookupCap(client: number, now: number): Pick[] {
  const c = clients[client] as Client
  const summary = summaries[c.region] as AccessSummary
  const have = installedOf[client] as Map<string, string>
  const recent = (recentOf[client] ?? []).filter((r) => r.at >= now - RECENT_WINDOW_MS).slice(-RECENT_MAX)
  const installed = [...have].map(([artifact, version]) => ({ artifact, version }))
  const seeds = new Set<string>()
  for (const r of [...recent].reverse()) seeds.add(r.artifact)
  for (const i of installed) seeds.add(i.artifact)
  for (const a of summary.artifacts) seeds.add(a.artifact)
  const queue = [...seeds]
  const seen = new Set(queue)
  const scheduled: ScheduledUpdate[] = []
  const manifest: ManifestEntry[] = []
  for (let i = 0; i < queue.length; i++) {
    const name = queue[i] ?? ''
    const h = head.get(name)
    if (h === undefined) continue
    const v = have.get(name)
    if (v !== undefined && v !== h.version && semverGt(h.version, v))
      scheduled.push({ artifact: name, version: h.version, startsAt: h.createdAt, cohortProbability: 1 })
    const deps = [...(depsOf.get(name) ?? [])].sort()
    if (deps.length === 0) continue
    manifest.push({ artifact: name, version: h.version, dependsOn: deps.map((d) => ({ artifact: d })) })
    for (const d of deps) {
      if (!seen.has(d)) {
        seen.add(d)
        queue.push(d)
      }
    }
  }
  const probabilities = calculateArtifactProbabilities({
    now,
    horizonMs: HORIZON,
    summary,
    population: population[c.region] ?? 1,
    client: { recent, installed },
    scheduled,
    manifest,
    options: { minProbability: 0.01 },
  })
  const candidates = probabilities.flatMap((p) => {
    const version = p.version ?? head.get(p.artifact)?.version
    if (version === undefined || have.get(p.artifact) === version) return []
    const bytes = sizeOf.get(p.artifact) ?? 0
    return [{ artifact: p.artifact, version, probability: p.probability, confidence: p.confidence, bytes }]
  })
  return buildPrefetchQueue(candidates, { now, budgetBytes: BUDGET, minProbability: 0.01 }).queue.map(
    (q) => ({
      name: q.artifact,
      version: q.version ?? '',
    }),
  )
}

const started = performance.now()
let evalSessions = 0
for (const ev of timeline) {
  if (ev.kind === 'publish') {
    head.set(ev.name, { version: ev.version, createdAt: ev.at })
  } else if (ev.kind === 'plan') {
    for (const s of STRATEGIES) {
      const t0 = performance.now()
      const picks = await plan(s, ev.client, ev.at)
      const tl = tally[s]
      tl.planMs += performance.now() - t0
      const staged = staging[s][ev.client] as Map<string, Staged>
      for (const p of picks) {
        const key = refKey(p.name, p.version)
        if (staged.has(key)) continue
        const bytes = sizeOf.get(p.name) ?? 0
        staged.set(key, { bytes, plannedAt: ev.at, foreign: !installedOf[ev.client]?.has(p.name) })
        if (ev.at >= EVAL_FROM - DAY) {
          tl.prefetchedBytes += bytes
          tl.items++
          if (!installedOf[ev.client]?.has(p.name)) tl.foreignBytes += bytes
        }
      }
    }
  } else {
    const reqs = sessionRequests.get(ev) ?? []
    const scored = ev.at >= EVAL_FROM
    if (scored) evalSessions++
    for (const s of STRATEGIES) {
      const staged = staging[s][ev.client] as Map<string, Staged>
      const tl = tally[s]
      for (const r of reqs) {
        const bytes = sizeOf.get(r.name) ?? 0
        const key = refKey(r.name, r.version)
        const hit = staged.get(key)
        if (hit !== undefined) {
          staged.delete(key)
          if (hit.plannedAt >= EVAL_FROM - DAY) tl.usedBytes += bytes
        }
        if (!scored) continue
        tl.requests++
        tl.requestBytes += bytes
        if (hit !== undefined) {
          tl.hits++
          tl.hitBytes += bytes
        }
      }
    }
    const have = installedOf[ev.client] as Map<string, string>
    for (const r of reqs) have.set(r.name, r.version)
    if (reqs.length > 0) {
      // The agent's telemetry batch for this session, folded in by the region's ingest.
      const c = clients[ev.client] as Client
      const end = (reqs[reqs.length - 1]?.at ?? ev.at) + REQUEST_GAP_MS
      const events = reqs.map((r) => ({ artifact: r.name, version: r.version, at: r.at, count: 1 }))
      // Capped like the region's ingest caps every batch (RegionAggregator.ingest).
      summaries[c.region] = recordBatch(
        summaries[c.region] as AccessSummary,
        c.id,
        capBatchWeight(events),
        end,
      )
      const recent = recentOf[ev.client] as { artifact: string; at: number }[]
      recent.push(...reqs.map((r) => ({ artifact: r.name, at: r.at })))
      const keepFrom = recent.findIndex((x) => x.at >= end - RECENT_WINDOW_MS)
      recent.splice(0, keepFrom < 0 ? recent.length : keepFrom)
    }
  }
}
// Still-staged updates the client's next session would request (current head, older version installed)
// are pending, neither used nor wasted; anything else still staged is waste.
for (const s of STRATEGIES) {
  staging[s].forEach((staged, i) => {
    for (const [key, item] of staged) {
      const [name, version] = splitRef(key)
      if (item.plannedAt < EVAL_FROM - DAY) continue
      const have = installedOf[i]?.get(name)
      if (!item.foreign && head.get(name)?.version === version && have !== undefined && have !== version)
        tally[s].pendingBytes += item.bytes
    }
  })
}
const elapsedS = (performance.now() - started) / 1000

// ---------------------------------------------------------------------------------------------------------
const MiB = 1024 * 1024
const pct = (x: number) => `${(100 * x).toFixed(1)} %`
const oracleHit = tally.oracle.hits / Math.max(1, tally.oracle.requests)
const LABEL: Record<Strategy, string> = {
  none: 'no prefetch',
  popularity: 'popularity top-K',
  markov: 'Markov only',
  deltaport: 'deltaport (planPrefetch)',
  unbounded: `what-if: planner without the ${MAX_CANDIDATE_NAMES}-lookup cap`,
  oracle: 'oracle',
}
const rows = STRATEGIES.map((s) => {
  const t = tally[s]
  const hit = t.hits / Math.max(1, t.requests)
  const settled = t.prefetchedBytes - t.pendingBytes
  const waste = settled > 0 ? (settled - t.usedBytes) / settled : 0
  const savedS = t.hitBytes / LINK_BYTES_PER_S
  return {
    s,
    hit,
    line: `| ${LABEL[s]} | ${pct(hit)} | ${(hit / oracleHit).toFixed(2)} | ${pct(t.hitBytes / Math.max(1, t.requestBytes))} | ${(t.prefetchedBytes / MiB).toFixed(0)} | ${s === 'none' ? '–' : pct(waste)} | ${s === 'none' ? '–' : pct(t.foreignBytes / Math.max(1, settled))} | ${(savedS / Math.max(1, evalSessions)).toFixed(2)} | ${(savedS / 3600).toFixed(2)} | ${(t.planMs / 1000).toFixed(1)} |`,
    waste,
  }
})
const header =
  '| strategy | hit ratio | ÷ oracle | byte hit | prefetched MiB | waste | of which not installed | saved s/session | saved h total | plan time s |\n' +
  '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|'
const table = [header, ...rows.map((r) => r.line)].join('\n')
const dp = rows.find((r) => r.s === 'deltaport')
const goalMet = dp !== undefined && dp.hit / oracleHit >= 0.8 && dp.waste <= 0.25
const totalRequests = tally.none.requests
const params = [
  `seed ${SEED}, ${CLIENTS} clients in ${REGIONS.map((g) => `${g.id} (UTC${g.utcOffset >= 0 ? '+' : ''}${g.utcOffset}, ${population[REGIONS.indexOf(g)]})`).join(', ')}`,
  `${WEEKS} simulated weeks from ${new Date(START).toISOString().slice(0, 10)}, first ${WARMUP_WEEKS} warm-up (telemetry only, not scored)`,
  `${projects.length} projects, ${packageNames.length} distinct packages; Zipf s=${ZIPF_S} project popularity, ${TWO_PROJECTS_P * 100} % of clients draw a second project`,
  `${timeline.filter((e) => e.kind === 'publish').length} publishes (daily p = ${PUBLISH_BASE} + ${PUBLISH_POP} × client share), ${evalSessions} scored sessions, ${totalRequests} scored requests`,
  `budget ${values['budget-mib']} MiB per nightly plan (03:00 local, horizon ${HORIZON / HOUR} h), link ${values['link-mbit']} Mbit/s`,
]
const out = [
  `${table}`,
  '',
  `deltaport ÷ oracle = ${(dp === undefined ? 0 : dp.hit / oracleHit).toFixed(2)} (goal ≥ 0.80), waste ${pct(dp?.waste ?? 0)} (goal ≤ 25 %): goal ${goalMet ? 'MET' : 'NOT met'}`,
  '',
  ...params.map((p) => `- ${p}`),
  `- run time ${elapsedS.toFixed(1)} s`,
].join('\n')
console.log(out)
const expansion = measureExpansion(MAX_CANDIDATE_NAMES)
console.log(`\n${expansion}`)

if (values.write) {
  const machine = `${cpus()[0]?.model ?? 'unknown CPU'} × ${cpus().length}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}`
  const doc = `# Prefetch evaluation (bench/prefetch)

Generated by \`node bench/prefetch/run.ts --write\` on ${new Date().toISOString()} (${machine}).
Fixture: \`fixtures/projects.json\`, resolved from the npm registry on ${fixture.resolvedAt} by \`fetch-fixtures.ts\`.

${out}

## Dependency expansion: per-root walk vs closure (same run)

${expansion}

predict's manifest dependency expansion on the planner's worst case (bench/prefetch/expansion.ts):
${MAX_CANDIDATE_NAMES} manifests (the planner's lookup cap), each needing that many others by name (random,
seeded), nothing installed, every artifact a scheduled update, so every one is a root; depth 3 as the
planner uses. *Per-root walk* is the old expansion (a breadth-first walk from every root, roots × edges),
kept in predict as the fallback for graphs that name one artifact at two versions, which the planner
never sends. *Closure* is what the planner now runs: "within k steps" per artifact as a bitset, once per
level, and each root the union of its dependencies' sets. Both get the same input; "same result" compares
the outputs (artifacts, versions, probabilities, confidences) exactly. Wall-clock, one thread.

## Method

- **Structure is real, time is simulated.** Seven package.json files (express API, React+Vite, Next,
  commander/chalk CLI, lodash/axios utility, TypeScript+ESLint tooling, webpack+Babel) were resolved with
  \`npm install --package-lock-only --ignore-scripts\`; the fixture keeps one (hoisted) version per name and
  the name-level dependency edges. Publishing, clients and sessions are simulated from the seed.
- **Publishing.** Each package gets new versions (90 % patch, 9 % minor, 1 % major) at a daily probability
  that grows with the share of clients using it, during 08:00–20:00 UTC, less at weekends.
- **Clients and sessions.** Each client lives in a region, owns one or two projects (Zipf popularity) and
  updates 1–5 times a week with a local working-hours/weekday profile. A session requests every package
  whose head differs from what the client has, in dependency pre-order (a package before its
  dependencies), ${REQUEST_GAP_MS / 1000} s apart; that order is what the Markov transitions learn.
- **Telemetry** of each session is folded into its region's summary with the edge's own
  \`recordBatch\` (durable-objects/ingest.ts → predict's \`recordAccesses\`), one batch per session.
- **Planning.** Every client plans every night at 03:00 local (whether or not it will update the next day),
  with the same byte budget for every strategy; what a plan names is staged and stays staged until used.
  A request is a hit if that exact package@version was staged before it.
  - *deltaport*: the edge's \`planPrefetch\` (durable-objects/prefetch-planner.ts, which calls predict's
    \`calculateArtifactProbabilities\` and \`buildPrefetchQueue\`) with an in-memory Catalog (channel heads
    as published so far, manifests with the fixture's dependencies and sizes), the region summary and
    population, the client's installed set and its last 7 days of uses. It is imported at run time by a
    non-literal specifier only because its type-only import of catalog.ts pulls Workers types into the Node
    tsconfig; the code that runs is the edge's.
  - *popularity top-K*: the region's most requested packages (decayed counts) at their heads, skipping what
    the client already has, filled by predict's \`buildPrefetchQueue\`.
  - *Markov only*: predict's \`nextUses\` from every package the client used in its last 7 days,
    noisy-OR over sources, heads, same queue builder. Unlike deltaport's Markov component it ignores the
    6 h lag cut-off (which silences Markov entirely at a nightly plan).
  - *what-if, planner without the lookup cap*: NOT shipped code. planPrefetch's steps restated in the bench
    (same seeds, heads newer than installed as scheduled updates, manifest dependencies, predict's
    \`calculateArtifactProbabilities\` + \`buildPrefetchQueue\`, min probability 0.01) but every seed and
    dependency is looked up instead of the first \`MAX_CANDIDATE_NAMES\` (${MAX_CANDIDATE_NAMES}). It isolates
    the cap from the scoring.
  - *oracle*: knows all of the client's future requests and stages those whose version is already
    published, soonest first, within the same nightly budget; it never stages anything unused. Its ceiling
    is below 100 % because many requests are for versions published after the client's last nightly plan.
- **Metrics** (scored weeks only): hit ratio = hits ÷ requests; byte hit = bytes served from staging ÷
  requested bytes; waste = prefetched bytes never used ÷ prefetched bytes, not counting items that are still
  the current head of a package the client has at an older version at the end (pending); "of which not
  installed" = share of those bytes spent on packages the client did not have when they were staged (never
  requested here); saved = bytes served from staging ÷ link rate. Plan time is wall-clock inside each planner.

## Findings (seed 42; read with the caveats)

- **Goal met** (seed 42: 0.97 of the oracle's hit ratio, 21.8 % waste; \`--seed 7\`: 0.99, 4.7 %;
  \`--budget-mib 1\`: 0.92, 12.5 %). The first version of the planner reached only 0.40 with 30 % waste;
  this bench found two causes, both fixed in \`durable-objects/prefetch-planner.ts\`:
  - it looked up channel heads for at most 48 names, seeded with recent uses first, so most outdated
    installed packages (trees here have 26–224) never became scheduled updates. Installed names now come
    first and the cap is 256 lookups per queue (cached per request);
  - the historical (regional popularity) term staged packages the client does not have; those now need a
    probability of at least 0.25 (new dependencies of a scheduled update still pass).
- The remaining waste is mostly staged updates that a newer version superseded before the client's next
  session, plus the not-installed items that still clear the 0.25 bar.
- The planner's own Markov term is inert at a nightly plan: its 6 h lag cut-off drops uses from previous
  days. The Markov-only baseline here ignores the cut-off, so it is not the same as deltaport's term.
- Results move with the seed, because the seed also decides which project is most popular; the three
  runs above are the ones measured.

## Caveats

- Package sizes are synthetic (log-normal, median 40 KiB, seeded per name): lockfiles carry no sizes and
  the fetch script deliberately does not query the registry per package. Transfers are full artifacts
  (the simulated releases publish no deltas; the edge's \`cheapestPlan\` stages by the smallest delta
  from the installed version where one exists), so "bytes" overstate what deltas would move.
- One version per package name per client (nested duplicate versions in node_modules are dropped); the
  dependency ranges are not modelled: a client always moves to the head of every package it has.
- Requests do not depend on staging and clients never fail or go offline; telemetry arrives instantly.
`
  writeFileSync(join(import.meta.dirname, 'RESULTS.md'), doc)
  console.log('wrote bench/prefetch/RESULTS.md')
}
