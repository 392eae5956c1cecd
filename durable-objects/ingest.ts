/**
 * Folds one telemetry batch into a region's summaries with predict's access model. Pure: the region
 * object loads state, calls this, and persists what changed.
 */
import type { AccessSummary, AccessEvent as ModelEvent } from '../predict/index.ts'
import { bumpCounter, recordAccesses, recordInProfile } from '../predict/index.ts'
import type { AccessEvent } from '../schemas/telemetry.ts'

/** Segment counters live in a second summary keyed `artifact NUL segment`, without transitions. */
export const segmentKey = (artifact: string, segment: string) => `${artifact}\u0000${segment}`

export interface TimedEvent {
  artifact: string
  version?: string
  segment?: string
  at: number
  count: number
}

/**
 * Event times as epoch ms, in observed order, clamped to `now`: a client clock running ahead must not
 * plant counts in the future (they would decay from there and outweigh real traffic).
 */
export function timeEvents(events: readonly AccessEvent[], now: number): TimedEvent[] {
  return events.map((e) => ({
    artifact: e.artifact,
    ...(e.version === undefined ? {} : { version: e.version }),
    ...(e.segment === undefined ? {} : { segment: e.segment }),
    at: Math.min(now, Date.parse(e.at)),
    count: e.count,
  }))
}

/**
 * Weight one batch may add to one artifact in the region's counts and profile. Regional counts become
 * every client's historical prefetch probability, so without a bound one request (1000 events claiming a
 * million uses each) would put any published artifact into every queue of the region. A real device
 * reporting more uses than this in one batch tells the region nothing more about other devices.
 */
export const MAX_BATCH_WEIGHT_PER_ARTIFACT = 32

/**
 * The batch's events as the region counts them: in order, each artifact's total weight (events plus
 * their extra `count`) capped at `max`; events beyond the cap are dropped, a straddling one is trimmed.
 * The client's own history and installed list still see every event.
 */
export function capBatchWeight(
  events: readonly TimedEvent[],
  max = MAX_BATCH_WEIGHT_PER_ARTIFACT,
): TimedEvent[] {
  const left = new Map<string, number>()
  const out: TimedEvent[] = []
  for (const e of events) {
    const budget = left.get(e.artifact) ?? max
    if (budget <= 0) continue
    const count = Math.min(e.count, budget)
    left.set(e.artifact, budget - count)
    out.push(count === e.count ? e : { ...e, count })
  }
  return out
}

/**
 * `recordAccesses` counts one per event; an event with `count = n` carries n - 1 more uses, which are
 * added to the artifact counter and the hour-of-week profile (not to transitions: repeats of one
 * artifact are not an ordering). Added before recording so compaction sees the full weight.
 */
function addMultiplicity(summary: AccessSummary, events: readonly TimedEvent[], now: number): AccessSummary {
  const extra = events.filter((e) => e.count > 1)
  if (extra.length === 0) return summary
  const counters = new Map(summary.artifacts.map((a) => [a.artifact, a]))
  for (const e of extra) {
    const bumped = bumpCounter(counters.get(e.artifact), now, summary.halfLifeMs, e.count - 1, e.at)
    counters.set(e.artifact, { artifact: e.artifact, ...bumped })
  }
  return {
    ...summary,
    artifacts: [...counters.values()],
    profile: recordInProfile(
      summary.profile,
      extra.map((e) => ({ at: e.at, amount: e.count - 1 })),
      now,
      summary.profileHalfLifeMs,
    ),
  }
}

/** The region summary after a client's batch: counts, profile and that client's ordering transitions. */
export function recordBatch(
  summary: AccessSummary,
  clientId: string,
  events: readonly TimedEvent[],
  now: number,
): AccessSummary {
  const model: ModelEvent[] = events.map((e) => ({ artifact: e.artifact, at: e.at, session: clientId }))
  return recordAccesses(addMultiplicity(summary, events, now), model, now)
}

/** Segment counts after a batch; each event is its own session so no transitions are formed. */
export function recordSegments(
  segments: AccessSummary,
  events: readonly TimedEvent[],
  now: number,
): AccessSummary {
  const keyed = events
    .filter((e) => e.segment !== undefined)
    .map((e) => ({ ...e, artifact: segmentKey(e.artifact, e.segment ?? '') }))
  if (keyed.length === 0) return segments
  const model: ModelEvent[] = keyed.map((e, i) => ({ artifact: e.artifact, at: e.at, session: String(i) }))
  return recordAccesses(addMultiplicity(segments, keyed, now), model, now)
}
