/**
 * Size bounds of what our Durable Objects write. Production SQLite-backed Durable Objects refuse a string,
 * BLOB or row over 2 MB ("Maximum string, BLOB or table row size", Durable Objects limits); local workerd
 * does not enforce it, so a row over it passes every test and fails only in production, on every write
 * of it, for good (a region summary that never rolls up again). Each JSON row is bounded by its schema's
 * worst case (durable-objects/test/row-limits.test.ts builds each and measures it) or, where a setting
 * allows more than fits, trimmed here by a deterministic rule before it is written.
 */
import type { AccessSummary } from '../predict/index.ts'

/** The platform's limit on one string, BLOB or row, read as decimal megabytes (the smaller reading). */
export const DO_ROW_LIMIT_BYTES = 2_000_000

/**
 * What one of our rows may take: three quarters of the limit, leaving 500 kB for the row's other columns
 * and for the schema growing a field.
 */
export const ROW_BUDGET_BYTES = 1_500_000

const encoder = new TextEncoder()

/** Bytes of `text` as SQLite stores it (UTF-8). */
export function utf8Bytes(text: string): number {
  return encoder.encode(text).byteLength
}

/** `summary` as stored (JSON), or null when its UTF-8 bytes exceed `budget`. */
function serializedWithin(summary: AccessSummary, budget: number): string | null {
  const text = JSON.stringify(summary)
  return utf8Bytes(text) <= budget ? text : null
}

/** Hottest first, by name among equals: the order the trim keeps. */
function hottestFirst(
  a: { artifact: string; count: number },
  b: { artifact: string; count: number },
): number {
  return b.count - a.count || (a.artifact < b.artifact ? -1 : a.artifact > b.artifact ? 1 : 0)
}

/** `summary` with only its `keep` hottest artifacts, and the transitions between those. */
function keepHottest(
  summary: AccessSummary,
  sorted: AccessSummary['artifacts'],
  keep: number,
): AccessSummary {
  const artifacts = sorted.slice(0, keep)
  const kept = new Set(artifacts.map((a) => a.artifact))
  const transitions = summary.transitions.filter((t) => kept.has(t.from) && kept.has(t.to))
  return { ...summary, artifacts, transitions }
}

/**
 * `summary` fitted to `budget` bytes of JSON: unchanged when it fits, else its lowest-count artifacts
 * (the last by name among equals) dropped, with their transitions, until it does; the most artifacts
 * that fit are kept. `dropped` says how many went, so the caller logs it. Without any artifact the
 * summary is a few KiB (the 168-hour profile), so a result always fits.
 *
 * Sizes are added up per element instead of serializing each candidate: an artifact costs its JSON and
 * a comma, a transition the same once both its ends are kept (from the later of their ranks on). That
 * over-counts by at most two commas, and the result is serialized once to check; the alarm runs every
 * minute, and serializing an ≈8 MB summary a dozen times (a binary search) cost it ≈0.5 s of CPU.
 */
export function fitSummary(
  summary: AccessSummary,
  budget: number = ROW_BUDGET_BYTES,
): { summary: AccessSummary; json: string; dropped: number } {
  const whole = serializedWithin(summary, budget)
  if (whole !== null) return { summary, json: whole, dropped: 0 }
  const sorted = [...summary.artifacts].sort(hottestFirst)
  const rank = new Map(sorted.map((a, i) => [a.artifact, i]))
  // adds[k]: what the k-th hottest artifact adds when kept after the k before it (itself and the
  // transitions it completes).
  const adds = sorted.map((a) => utf8Bytes(JSON.stringify(a)) + 1)
  for (const t of summary.transitions) {
    const from = rank.get(t.from)
    const to = rank.get(t.to)
    if (from === undefined || to === undefined) continue
    const k = Math.max(from, to)
    adds[k] = (adds[k] ?? 0) + utf8Bytes(JSON.stringify(t)) + 1
  }
  let size = utf8Bytes(JSON.stringify({ ...summary, artifacts: [], transitions: [] }))
  let keep = 0
  while (keep < sorted.length && size + (adds[keep] ?? 0) <= budget) {
    size += adds[keep] ?? 0
    keep++
  }
  // The estimate is an upper bound; the check below is what guarantees the fit.
  for (; keep >= 0; keep--) {
    const fitted = keepHottest(summary, sorted, keep)
    const json = serializedWithin(fitted, budget)
    if (json !== null) return { summary: fitted, json, dropped: sorted.length - keep }
  }
  const empty = keepHottest(summary, sorted, 0)
  return { summary: empty, json: JSON.stringify(empty), dropped: sorted.length }
}
