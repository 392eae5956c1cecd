/**
 * Exponentially decayed counters: recent activity counts fully, activity one half-life ago counts half.
 * Stored as (value, time of value) and decayed lazily, so updating is O(1) and no timer is needed.
 */

/** A count as of `updatedAt` (epoch ms). JSON-friendly. */
export interface DecayedCounter {
  count: number
  updatedAt: number
}

/**
 * `count`, recorded at `lastUpdate`, decayed to `now`. Time running backwards (clock skew between
 * regions) is treated as no time passing rather than inflating the count.
 */
export function decayedCount(count: number, lastUpdate: number, now: number, halfLifeMs: number): number {
  const elapsed = Math.max(0, now - lastUpdate)
  return halfLifeMs > 0 ? count * 2 ** (-elapsed / halfLifeMs) : elapsed > 0 ? 0 : count
}

/** The counter's value at `now`. */
export function counterAt(counter: DecayedCounter, now: number, halfLifeMs: number): number {
  return decayedCount(counter.count, counter.updatedAt, now, halfLifeMs)
}

/**
 * Adds `amount` that happened at `at` (defaults to `now`) and re-bases the counter at `now`. Events are
 * decayed from their own time, so late-arriving batches weigh what they would have weighed on time.
 */
export function bumpCounter(
  counter: DecayedCounter | undefined,
  now: number,
  halfLifeMs: number,
  amount = 1,
  at = now,
): DecayedCounter {
  const base = counter === undefined ? 0 : counterAt(counter, now, halfLifeMs)
  return { count: base + decayedCount(amount, at, now, halfLifeMs), updatedAt: now }
}

/**
 * Steady-state event rate (per ms) implied by a decayed count: a Poisson stream of rate r gives a decayed
 * count of about r * halfLife / ln 2, so r = count * ln 2 / halfLife.
 */
export function rateFromDecayedCount(count: number, halfLifeMs: number): number {
  return halfLifeMs > 0 ? (count * Math.LN2) / halfLifeMs : 0
}
