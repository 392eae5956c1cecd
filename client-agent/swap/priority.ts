import { forecast } from '../../predict/holt-winters.ts'
import type { SlaTier, SwapSettings } from '../../schemas/swap.ts'

const HOUR_MS = 3_600_000
/** Two weeks of hourly counts: what double-seasonal Holt-Winters needs, and no more. */
const HISTORY_HOURS = 336
/** Clients tracked at once; the least recently seen is forgotten first. */
const MAX_CLIENTS = 10_000

/** Maps client ids to their configured SLA tier (the default tier for everyone not listed). */
export class TierMap {
  private readonly byClient = new Map<string, SlaTier>()
  readonly defaultTier: SlaTier

  constructor(settings: Pick<SwapSettings, 'tiers' | 'defaultTier'>) {
    this.defaultTier = settings.defaultTier
    for (const tier of settings.tiers) for (const client of tier.clients) this.byClient.set(client, tier)
  }

  tierOf(client: string): SlaTier {
    return this.byClient.get(client) ?? this.defaultTier
  }
}

/**
 * Per-client request counts in hourly buckets, and a Holt-Winters forecast of each client's next hour
 * (predict/holt-winters.ts; short histories fall back to its EWMA / seasonal-naive forecasts). Forecasts
 * are cached per client and hour, since fitting is the expensive part.
 */
export class ClientLoadTracker {
  private readonly counts = new Map<string, { firstHour: number; buckets: number[] }>()
  private readonly cache = new Map<string, { hour: number; value: number }>()
  private readonly now: () => number

  constructor(now: () => number = Date.now) {
    this.now = now
  }

  record(client: string, at = this.now()): void {
    const hour = Math.floor(at / HOUR_MS)
    let series = this.counts.get(client)
    if (!series) {
      if (this.counts.size >= MAX_CLIENTS) {
        const oldest = this.counts.keys().next().value
        // Its forecast goes with it: kept, the cache grew by one per client id ever forecast (a hostile
        // client picks as many as it likes), and a client seen again got back its old forecast.
        if (oldest !== undefined) {
          this.counts.delete(oldest)
          this.cache.delete(oldest)
        }
      }
      series = { firstHour: hour, buckets: [0] }
    } else this.counts.delete(client)
    this.counts.set(client, series)
    const index = hour - series.firstHour
    if (index < 0) return
    while (series.buckets.length <= index) series.buckets.push(0)
    series.buckets[index]! += 1
    if (series.buckets.length > HISTORY_HOURS) {
      const drop = series.buckets.length - HISTORY_HOURS
      series.buckets.splice(0, drop)
      series.firstHour += drop
    }
  }

  /** Seeds a client's history (oldest first, ending at the current hour), e.g. from a saved profile. */
  seed(client: string, hourly: readonly number[], at = this.now()): void {
    const hour = Math.floor(at / HOUR_MS)
    const buckets = hourly.slice(-HISTORY_HOURS).map((v) => Math.max(0, v))
    this.counts.set(client, { firstHour: hour - buckets.length + 1, buckets })
    this.cache.delete(client)
  }

  /** Expected requests in the coming hour (0 for a client never seen). */
  forecastNextHour(client: string, at = this.now()): number {
    const series = this.counts.get(client)
    if (!series) return 0
    const hour = Math.floor(at / HOUR_MS)
    const cached = this.cache.get(client)
    if (cached && cached.hour === hour) return cached.value
    // Hours with no requests are real zeros, up to and including the current (partial) hour.
    const values = [...series.buckets]
    while (values.length < hour - series.firstHour + 1) values.push(0)
    const value = forecast(values.slice(-HISTORY_HOURS), 1).point[0] ?? 0
    this.cache.set(client, { hour, value })
    return value
  }
}

/**
 * Replay priority of a client: its tier's weight, scaled by its forecast load relative to the other
 * clients waiting. Lighter clients go first within a tier (shortest job first keeps the mean wait low, and
 * a client about to send a lot will wait behind its own backlog anyway); the load factor is in (0.5, 1],
 * so a tier with twice the weight of another always wins.
 */
export function replayPriorities(
  clients: readonly string[],
  tiers: TierMap,
  loads: ClientLoadTracker,
): Map<string, number> {
  const forecasts = clients.map((c) => Math.max(0, loads.forecastNextHour(c)))
  const total = forecasts.reduce((a, b) => a + b, 0)
  const out = new Map<string, number>()
  clients.forEach((client, i) => {
    const share = total > 0 ? forecasts[i]! / total : 0
    out.set(client, tiers.tierOf(client).weight / (1 + share))
  })
  return out
}

/**
 * The order in which buffered writes are replayed when one runs at a time: repeatedly the head of the
 * highest-priority client's queue (ties: whoever's head arrived first). Every client's own writes keep
 * their arrival order. The replay loop applies the same rule with several lanes.
 */
export function replayOrder<T extends { client: string; id: number }>(
  writes: readonly T[],
  priority: ReadonlyMap<string, number>,
): T[] {
  const queues = new Map<string, T[]>()
  for (const w of writes) {
    const q = queues.get(w.client)
    if (q) q.push(w)
    else queues.set(w.client, [w])
  }
  const out: T[] = []
  while (queues.size > 0) {
    const client = pickClient(queues, priority, new Set())
    if (client === null) break
    const q = queues.get(client)!
    out.push(q.shift()!)
    if (q.length === 0) queues.delete(client)
  }
  return out
}

/** The client whose queue head goes next, skipping `busy` ones; null when none is free. */
export function pickClient<T extends { id: number }>(
  queues: ReadonlyMap<string, readonly T[]>,
  priority: ReadonlyMap<string, number>,
  busy: ReadonlySet<string>,
): string | null {
  let best: string | null = null
  let bestScore = Number.NEGATIVE_INFINITY
  let bestId = Number.POSITIVE_INFINITY
  for (const [client, q] of queues) {
    if (busy.has(client) || q.length === 0) continue
    const score = priority.get(client) ?? 0
    const id = q[0]!.id
    if (score > bestScore || (score === bestScore && id < bestId)) {
      best = client
      bestScore = score
      bestId = id
    }
  }
  return best
}
