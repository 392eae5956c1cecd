/**
 * A regional access summary: what gets requested (decayed counts), when in the week (hour-of-week profile),
 * and what tends to follow what (first-order Markov transitions). Plain JSON so a Durable Object can store
 * it and regions can be merged into a global summary. All functions return new values.
 *
 * Collections are arrays of records keyed by an `artifact` field rather than objects keyed by artifact id:
 * ids come from publishers, and an id like "__proto__" must not be able to reach an object's prototype.
 */
import type { DecayedCounter } from './decay.ts'
import { bumpCounter, counterAt, decayedCount } from './decay.ts'
import { HOURS_PER_WEEK } from './holt-winters.ts'

const HOUR_MS = 3_600_000

/** Decayed request count of one artifact. */
export interface ArtifactAccess {
  artifact: string
  count: number
  updatedAt: number
}

/** "`to` was used after `from` by the same session", decayed count and the mean gap between the two uses. */
export interface Transition {
  from: string
  to: string
  count: number
  updatedAt: number
  meanLagMs: number
}

/**
 * Requests per hour of the week (UTC, Monday 00:00 = 0), decayed with their own, longer half-life so the
 * profile remembers several weeks while the artifact counts follow the current mix.
 */
export interface HourOfWeekProfile {
  buckets: number[]
  updatedAt: number
}

export interface SummaryLimits {
  /** Keep at most this many artifacts; the coldest by decayed count are evicted. */
  maxArtifacts: number
  /** Keep at most this many outgoing transitions per artifact (coldest evicted). */
  maxTransitionsPerArtifact: number
  /** Two uses further apart than this are not linked as a transition. */
  maxLagMs: number
}

export interface AccessSummary {
  version: 1
  /** Region id, or "global" for a merged summary. */
  scope: string
  /** Half-life of artifact and transition counts. */
  halfLifeMs: number
  /** Half-life of the hour-of-week profile. */
  profileHalfLifeMs: number
  updatedAt: number
  artifacts: ArtifactAccess[]
  transitions: Transition[]
  profile: HourOfWeekProfile
  limits: SummaryLimits
}

/** One observed request. `session` groups requests of one client run, for transitions. */
export interface AccessEvent {
  artifact: string
  at: number
  session: string
}

export const DEFAULT_LIMITS: SummaryLimits = {
  maxArtifacts: 2000,
  maxTransitionsPerArtifact: 16,
  maxLagMs: 6 * HOUR_MS,
}

export interface SummaryOptions {
  halfLifeMs?: number
  profileHalfLifeMs?: number
  limits?: Partial<SummaryLimits>
}

export function emptySummary(scope: string, now: number, options: SummaryOptions = {}): AccessSummary {
  return {
    version: 1,
    scope,
    halfLifeMs: options.halfLifeMs ?? 3 * 24 * HOUR_MS,
    profileHalfLifeMs: options.profileHalfLifeMs ?? 28 * 24 * HOUR_MS,
    updatedAt: now,
    artifacts: [],
    transitions: [],
    profile: { buckets: new Array<number>(HOURS_PER_WEEK).fill(0), updatedAt: now },
    limits: { ...DEFAULT_LIMITS, ...options.limits },
  }
}

/** Hour of the week in UTC with Monday 00:00 as 0. The epoch (1970-01-01) was a Thursday, 72 h in. */
export function hourOfWeek(epochMs: number): number {
  const hours = Math.floor(epochMs / HOUR_MS) + 72
  return ((hours % HOURS_PER_WEEK) + HOURS_PER_WEEK) % HOURS_PER_WEEK
}

/** The profile decayed to `now` with `amount` added at `at`. */
export function recordInProfile(
  profile: HourOfWeekProfile,
  events: readonly { at: number; amount?: number }[],
  now: number,
  halfLifeMs: number,
): HourOfWeekProfile {
  const buckets = profile.buckets.map((b) => decayedCount(b, profile.updatedAt, now, halfLifeMs))
  for (const e of events) buckets[hourOfWeek(e.at)]! += decayedCount(e.amount ?? 1, e.at, now, halfLifeMs)
  return { buckets, updatedAt: now }
}

/**
 * How busy hour-of-week `hour` is relative to the average hour (1 = average). Shrunk towards 1 by
 * `priorCount` pseudo-requests per bucket so a young profile does not produce wild factors.
 */
export function seasonalFactor(profile: HourOfWeekProfile, hour: number, priorCount = 5): number {
  const total = profile.buckets.reduce((s, b) => s + b, 0)
  const mean = total / HOURS_PER_WEEK
  return ((profile.buckets[hour] ?? 0) + priorCount) / (mean + priorCount)
}

/** Mean seasonal factor over the hours touched by [from, to), for windows longer than an hour. */
export function meanSeasonalFactor(
  profile: HourOfWeekProfile,
  from: number,
  to: number,
  priorCount = 5,
): number {
  const hours = Math.max(1, Math.min(HOURS_PER_WEEK, Math.ceil((to - from) / HOUR_MS)))
  let sum = 0
  for (let i = 0; i < hours; i++) sum += seasonalFactor(profile, hourOfWeek(from + i * HOUR_MS), priorCount)
  return sum / hours
}

/** 0..1: how much the profile can be trusted, from its total mass against the prior. */
export function profileConfidence(profile: HourOfWeekProfile, priorCount = 5): number {
  const total = profile.buckets.reduce((s, b) => s + b, 0)
  return total / (total + priorCount * HOURS_PER_WEEK)
}

const transitionKey = (from: string, to: string) => `${from}\u0000${to}`

/** Mean of two lags weighted by their (decayed) counts. */
function weightedLag(lagA: number, weightA: number, lagB: number, weightB: number): number {
  const w = weightA + weightB
  return w > 0 ? (lagA * weightA + lagB * weightB) / w : lagB
}

/**
 * Records a batch of requests. Transitions link consecutive requests of the same session (in time order,
 * distinct artifacts, at most `maxLagMs` apart); sessions are not linked across batches, so batch by
 * session window. The result is compacted to the summary's limits.
 */
export function recordAccesses(
  summary: AccessSummary,
  events: readonly AccessEvent[],
  now: number,
): AccessSummary {
  const hl = summary.halfLifeMs
  const artifacts = new Map<string, DecayedCounter>()
  for (const a of summary.artifacts) artifacts.set(a.artifact, a)
  const transitions = new Map<string, Transition>()
  for (const t of summary.transitions) transitions.set(transitionKey(t.from, t.to), t)

  for (const e of events) artifacts.set(e.artifact, bumpCounter(artifacts.get(e.artifact), now, hl, 1, e.at))

  const bySession = new Map<string, AccessEvent[]>()
  for (const e of events) {
    const list = bySession.get(e.session)
    if (list === undefined) bySession.set(e.session, [e])
    else list.push(e)
  }
  for (const list of bySession.values()) {
    const ordered = [...list].sort((a, b) => a.at - b.at)
    for (let i = 1; i < ordered.length; i++) {
      const prev = ordered[i - 1]!
      const next = ordered[i]!
      const lag = next.at - prev.at
      if (prev.artifact === next.artifact || lag > summary.limits.maxLagMs) continue
      const key = transitionKey(prev.artifact, next.artifact)
      const old = transitions.get(key)
      const oldCount = old === undefined ? 0 : counterAt(old, now, hl)
      const bumped = bumpCounter(old, now, hl, 1, next.at)
      transitions.set(key, {
        from: prev.artifact,
        to: next.artifact,
        count: bumped.count,
        updatedAt: now,
        meanLagMs: weightedLag(old?.meanLagMs ?? 0, oldCount, lag, bumped.count - oldCount),
      })
    }
  }

  return compactSummary(
    {
      ...summary,
      updatedAt: Math.max(summary.updatedAt, now),
      artifacts: [...artifacts].map(([artifact, c]) => ({
        artifact,
        count: c.count,
        updatedAt: c.updatedAt,
      })),
      transitions: [...transitions.values()],
      profile: recordInProfile(summary.profile, events, now, summary.profileHalfLifeMs),
    },
    now,
  )
}

const byCountThenId = <T extends { count: number }>(id: (x: T) => string) => {
  return (a: T, b: T) => b.count - a.count || (id(a) < id(b) ? -1 : id(a) > id(b) ? 1 : 0)
}

/**
 * Decays every counter to `now` and enforces the limits: keep the hottest `maxArtifacts` artifacts, drop
 * transitions touching evicted artifacts, keep the hottest `maxTransitionsPerArtifact` per source. Output
 * is sorted (hottest first) so equal summaries serialise identically.
 */
export function compactSummary(summary: AccessSummary, now: number): AccessSummary {
  const hl = summary.halfLifeMs
  const artifacts = summary.artifacts
    .map((a) => ({ artifact: a.artifact, count: counterAt(a, now, hl), updatedAt: now }))
    .sort(byCountThenId((a: ArtifactAccess) => a.artifact))
    .slice(0, summary.limits.maxArtifacts)
  const kept = new Set(artifacts.map((a) => a.artifact))
  const perSource = new Map<string, number>()
  const transitions = summary.transitions
    .filter((t) => kept.has(t.from) && kept.has(t.to))
    .map((t) => ({ ...t, count: counterAt(t, now, hl), updatedAt: now }))
    .sort(byCountThenId((t: Transition) => transitionKey(t.from, t.to)))
    .filter((t) => {
      const n = perSource.get(t.from) ?? 0
      perSource.set(t.from, n + 1)
      return n < summary.limits.maxTransitionsPerArtifact
    })
  return {
    ...summary,
    artifacts,
    transitions,
    profile: recordInProfile(summary.profile, [], now, summary.profileHalfLifeMs),
    updatedAt: now,
  }
}

/**
 * Rolls several summaries (e.g. all regions) into one: counts are decayed to `now` with each source's own
 * half-lives and added, lags are averaged by count. Takes half-lives and limits from the first summary.
 */
export function mergeSummaries(
  scope: string,
  summaries: readonly AccessSummary[],
  now: number,
): AccessSummary {
  const first = summaries[0]
  if (first === undefined) return emptySummary(scope, now)
  const artifacts = new Map<string, number>()
  const transitions = new Map<string, Transition>()
  const buckets = new Array<number>(HOURS_PER_WEEK).fill(0)
  for (const s of summaries) {
    for (const a of s.artifacts) {
      artifacts.set(a.artifact, (artifacts.get(a.artifact) ?? 0) + counterAt(a, now, s.halfLifeMs))
    }
    for (const t of s.transitions) {
      const key = transitionKey(t.from, t.to)
      const count = counterAt(t, now, s.halfLifeMs)
      const old = transitions.get(key)
      transitions.set(key, {
        from: t.from,
        to: t.to,
        count: (old?.count ?? 0) + count,
        updatedAt: now,
        meanLagMs: weightedLag(old?.meanLagMs ?? 0, old?.count ?? 0, t.meanLagMs, count),
      })
    }
    s.profile.buckets.forEach((b, i) => {
      buckets[i]! += decayedCount(b, s.profile.updatedAt, now, s.profileHalfLifeMs)
    })
  }
  return compactSummary(
    {
      ...first,
      scope,
      updatedAt: now,
      artifacts: [...artifacts].map(([artifact, count]) => ({ artifact, count, updatedAt: now })),
      transitions: [...transitions.values()],
      profile: { buckets, updatedAt: now },
    },
    now,
  )
}

/** Decayed request count of `artifact` at `now` (0 if unknown). */
export function artifactCount(summary: AccessSummary, artifact: string, now: number): number {
  const a = summary.artifacts.find((x) => x.artifact === artifact)
  return a === undefined ? 0 : counterAt(a, now, summary.halfLifeMs)
}

/** Estimated P(next use is `to` | `from` was used), with the evidence behind it. */
export interface NextUse {
  to: string
  probability: number
  meanLagMs: number
  /** Decayed uses of `from`: the sample size behind `probability`. */
  support: number
}

/**
 * First-order Markov successors of `from`, most likely first: count(from -> to) / count(from), capped at 1
 * (decay of late batches can leave a transition marginally above its source count).
 */
export function nextUses(summary: AccessSummary, from: string, now: number): NextUse[] {
  return nextUsesIndex(summary, now)(from)
}

/**
 * `nextUses` for many sources: indexes the summary once (O(artifacts + transitions)) and answers each
 * source from its own transitions. Asking `nextUses` per source scanned every transition and artifact
 * each time, which at the configured maxima (5000 artifacts x 32 transitions, 256 recent artifacts of a
 * client) was 42 million reads, over a second, per prefetch query.
 */
export function nextUsesIndex(summary: AccessSummary, now: number): (from: string) => NextUse[] {
  const sources = new Map<string, ArtifactAccess>()
  // The first record of an artifact wins, as `artifactCount`'s find does.
  for (const a of summary.artifacts) if (!sources.has(a.artifact)) sources.set(a.artifact, a)
  const bySource = new Map<string, Transition[]>()
  for (const t of summary.transitions) {
    const list = bySource.get(t.from)
    if (list === undefined) bySource.set(t.from, [t])
    else list.push(t)
  }
  return (from) => {
    const source = sources.get(from)
    const support = source === undefined ? 0 : counterAt(source, now, summary.halfLifeMs)
    if (support <= 0) return []
    return (bySource.get(from) ?? [])
      .map((t) => ({
        to: t.to,
        probability: Math.min(1, counterAt(t, now, summary.halfLifeMs) / support),
        meanLagMs: t.meanLagMs,
        support,
      }))
      .sort((a, b) => b.probability - a.probability || (a.to < b.to ? -1 : 1))
  }
}
