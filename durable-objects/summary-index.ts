/**
 * A region's AccessSummary held as maps, so a telemetry batch costs what it touches rather than the whole
 * summary. recordBatch/recordSegments (ingest.ts) rebuild every map and compactSummary re-sorts every
 * counter on each batch: at the configured maxima (5000 artifacts × 32 transitions) that, with the
 * persist around it, was over a second of Durable Object CPU per batch (bench/region-ingest).
 *
 * Same result as those two, batch by batch (ADR 0006, amended 2026-11-26): counters are bumped by the
 * same functions in the same order, and the bounds are enforced after every batch with compactSummary's
 * ranking, but only where a batch can break them. A summary that met its bounds before a batch can only
 * exceed the artifact cap (new names) and the transition cap of sources the batch linked from; evicting
 * an artifact drops every transition touching it. Counters are not re-based to the batch time: decay is
 * applied on read (counterAt), so a counter's value at any time is the same either way, up to rounding,
 * and stored rows were never re-based either (persistSummary writes only touched rows).
 * Pure: no Workers imports.
 */
import type { AccessSummary, ArtifactAccess, Transition } from '../predict/index.ts'
import { bumpCounter, counterAt, recordInProfile } from '../predict/index.ts'
import type { TimedEvent } from './ingest.ts'

/** What one batch changed: rows to upsert and rows to delete. */
export interface SummaryChanges {
  artifacts: ArtifactAccess[]
  transitions: Transition[]
  evictedArtifacts: string[]
  evictedTransitions: { from: string; to: string }[]
}

/** Hottest first at `now`, by name among equals: compactSummary's order. */
function rankDesc<T extends { count: number; updatedAt: number }>(
  items: readonly T[],
  id: (x: T) => string,
  now: number,
  halfLifeMs: number,
): T[] {
  return items
    .map((x) => ({ x, c: counterAt(x, now, halfLifeMs), k: id(x) }))
    .sort((a, b) => b.c - a.c || (a.k < b.k ? -1 : a.k > b.k ? 1 : 0))
    .map((r) => r.x)
}

/**
 * The `n` artifacts rankDesc would put last, without sorting them all: one pass keeping the coldest so
 * far (a batch evicts about as many as it brings new names, a few dozen, out of thousands).
 */
function coldest(
  items: readonly ArtifactAccess[],
  n: number,
  now: number,
  halfLifeMs: number,
): ArtifactAccess[] {
  // Ascending by warmth: colder first (lower count, then later name, as rankDesc's tail reversed).
  const colder = (a: { c: number; x: ArtifactAccess }, b: { c: number; x: ArtifactAccess }) =>
    a.c < b.c || (a.c === b.c && a.x.artifact > b.x.artifact)
  const kept: { c: number; x: ArtifactAccess }[] = []
  for (const x of items) {
    const r = { c: counterAt(x, now, halfLifeMs), x }
    const last = kept[kept.length - 1]
    if (kept.length >= n && last !== undefined && !colder(r, last)) continue
    let i = kept.length
    while (i > 0 && colder(r, kept[i - 1]!)) i--
    kept.splice(i, 0, r)
    if (kept.length > n) kept.pop()
  }
  return kept.map((r) => r.x)
}

export class SummaryIndex {
  private readonly artifacts = new Map<string, ArtifactAccess>()
  /** Transitions by source, then destination. */
  private readonly out = new Map<string, Map<string, Transition>>()
  /** Sources of transitions into each destination, to drop them with an evicted artifact. */
  private readonly into = new Map<string, Set<string>>()
  private meta: AccessSummary
  /** Set while the summary may not meet its bounds (loaded rows, a lowered cap): the next batch checks all. */
  private checkAll: boolean
  private view: AccessSummary | null = null

  /** `bounded`: `summary` already meets its limits (it came from compactSummary). */
  constructor(summary: AccessSummary, bounded: boolean) {
    this.meta = { ...summary, artifacts: [], transitions: [] }
    for (const a of summary.artifacts) this.artifacts.set(a.artifact, a)
    for (const t of summary.transitions) this.link(t)
    this.checkAll = !bounded
  }

  setScope(scope: string): void {
    this.meta = { ...this.meta, scope }
    this.view = null
  }

  /** The hour-of-week profile (what a batch rewrites), without building the whole summary. */
  profile(): AccessSummary['profile'] {
    return this.meta.profile
  }

  /**
   * The summary as an AccessSummary: artifacts hottest first (the prefetch planner seeds its lookups in
   * this order), transitions by source. Built once per change.
   */
  summary(): AccessSummary {
    if (this.view !== null) return this.view
    const { halfLifeMs, updatedAt } = this.meta
    const artifacts = rankDesc([...this.artifacts.values()], (a) => a.artifact, updatedAt, halfLifeMs)
    const transitions: Transition[] = []
    for (const a of artifacts) for (const t of this.out.get(a.artifact)?.values() ?? []) transitions.push(t)
    this.view = { ...this.meta, artifacts, transitions }
    return this.view
  }

  /**
   * Folds a batch in as recordBatch (`session` = the client id: its uses are linked in time order) or
   * recordSegments (`session` = null: no transitions, and an empty batch changes nothing) would, then
   * enforces the limits as compactSummary would. Mutates; returns the rows to write.
   */
  record(events: readonly TimedEvent[], now: number, session: string | null): SummaryChanges {
    const changes: SummaryChanges = {
      artifacts: [],
      transitions: [],
      evictedArtifacts: [],
      evictedTransitions: [],
    }
    if (session === null && events.length === 0) return changes
    this.view = null
    const hl = this.meta.halfLifeMs
    const touched = new Set<string>()
    const touchedPairs = new Map<string, Transition>()
    const bump = (artifact: string, amount: number, at: number) => {
      this.artifacts.set(artifact, {
        artifact,
        ...bumpCounter(this.artifacts.get(artifact), now, hl, amount, at),
      })
      touched.add(artifact)
    }
    // addMultiplicity, then recordAccesses: the same bumps in the same order.
    const extra = events.filter((e) => e.count > 1)
    for (const e of extra) bump(e.artifact, e.count - 1, e.at)
    let profile = this.meta.profile
    if (extra.length > 0) {
      profile = recordInProfile(
        profile,
        extra.map((e) => ({ at: e.at, amount: e.count - 1 })),
        now,
        this.meta.profileHalfLifeMs,
      )
    }
    for (const e of events) bump(e.artifact, 1, e.at)
    if (session !== null) {
      const ordered = [...events].sort((a, b) => a.at - b.at)
      for (let i = 1; i < ordered.length; i++) {
        const prev = ordered[i - 1]!
        const next = ordered[i]!
        const lag = next.at - prev.at
        if (prev.artifact === next.artifact || lag > this.meta.limits.maxLagMs) continue
        const old = this.out.get(prev.artifact)?.get(next.artifact)
        const oldCount = old === undefined ? 0 : counterAt(old, now, hl)
        const bumped = bumpCounter(old, now, hl, 1, next.at)
        const weight = bumped.count - oldCount
        const w = oldCount + weight
        const t: Transition = {
          from: prev.artifact,
          to: next.artifact,
          count: bumped.count,
          updatedAt: now,
          meanLagMs: w > 0 ? ((old?.meanLagMs ?? 0) * oldCount + lag * weight) / w : lag,
        }
        this.link(t)
        touchedPairs.set(`${t.from}\u0000${t.to}`, t)
      }
    }
    profile = recordInProfile(
      profile,
      events.map((e) => ({ at: e.at })),
      now,
      this.meta.profileHalfLifeMs,
    )
    this.meta = { ...this.meta, profile, updatedAt: Math.max(this.meta.updatedAt, now) }

    const sources = this.checkAll
      ? [...this.out.keys()]
      : [...new Set([...touchedPairs.values()].map((t) => t.from))]
    if (this.checkAll) this.dropOrphans(changes)
    this.enforce(now, sources, changes)
    this.checkAll = false
    for (const name of touched) {
      const a = this.artifacts.get(name)
      if (a !== undefined) changes.artifacts.push(a)
    }
    for (const t of touchedPairs.values())
      if (this.out.get(t.from)?.get(t.to) === t) changes.transitions.push(t)
    return changes
  }

  private link(t: Transition): void {
    const out = this.out.get(t.from)
    if (out === undefined) this.out.set(t.from, new Map([[t.to, t]]))
    else out.set(t.to, t)
    const into = this.into.get(t.to)
    if (into === undefined) this.into.set(t.to, new Set([t.from]))
    else into.add(t.from)
  }

  private unlink(from: string, to: string, changes: SummaryChanges): void {
    const out = this.out.get(from)
    if (out?.delete(to) !== true) return
    if (out.size === 0) this.out.delete(from)
    const into = this.into.get(to)
    into?.delete(from)
    if (into?.size === 0) this.into.delete(to)
    changes.evictedTransitions.push({ from, to })
  }

  /** Transitions whose ends are not both counted (compactSummary drops them); only rows as loaded can have them. */
  private dropOrphans(changes: SummaryChanges): void {
    for (const [from, out] of [...this.out]) {
      for (const to of [...out.keys()]) {
        if (!this.artifacts.has(from) || !this.artifacts.has(to)) this.unlink(from, to, changes)
      }
    }
  }

  /** compactSummary's bounds: the hottest maxArtifacts, then the hottest maxTransitionsPerArtifact per source. */
  private enforce(now: number, sources: readonly string[], changes: SummaryChanges): void {
    const { halfLifeMs: hl, limits } = this.meta
    if (this.artifacts.size > limits.maxArtifacts) {
      for (const a of coldest(
        [...this.artifacts.values()],
        this.artifacts.size - limits.maxArtifacts,
        now,
        hl,
      )) {
        this.artifacts.delete(a.artifact)
        changes.evictedArtifacts.push(a.artifact)
        for (const to of [...(this.out.get(a.artifact)?.keys() ?? [])]) this.unlink(a.artifact, to, changes)
        for (const from of [...(this.into.get(a.artifact) ?? [])]) this.unlink(from, a.artifact, changes)
      }
    }
    for (const from of sources) {
      const out = this.out.get(from)
      if (out === undefined || out.size <= limits.maxTransitionsPerArtifact) continue
      const ranked = rankDesc([...out.values()], (t) => t.to, now, hl)
      for (const t of ranked.slice(limits.maxTransitionsPerArtifact)) this.unlink(t.from, t.to, changes)
    }
  }
}
