/**
 * Persists an AccessSummary in SQLite tables instead of one JSON row: a region summary with thousands of
 * transitions would approach the 2 MB row limit, and tables let each batch write only the rows it touched.
 * Counters are decayed lazily (value, updatedAt), so a row that was not touched stays correct as stored.
 */
import type { AccessSummary } from '../predict/index.ts'
import { AccessSummarySchema } from '../schemas/aggregation.ts'
import { readMeta, writeMeta } from './meta-table.ts'
import { parseStoredJson } from './stored-json.ts'
import type { SummaryChanges } from './summary-index.ts'

export interface SummaryTables {
  artifacts: string
  transitions: string | null
  /** meta key holding the hour-of-week profile as JSON (168 numbers). */
  profileKey: string
}

const pairKey = (from: string, to: string) => `${from}\u0000${to}`

export function createSummaryTables(sql: SqlStorage, t: SummaryTables): void {
  sql.exec(`CREATE TABLE IF NOT EXISTS ${t.artifacts} (
    artifact TEXT PRIMARY KEY, count REAL NOT NULL, updated_at INTEGER NOT NULL)`)
  if (t.transitions !== null) {
    sql.exec(`CREATE TABLE IF NOT EXISTS ${t.transitions} (
      src TEXT NOT NULL, dst TEXT NOT NULL, count REAL NOT NULL, updated_at INTEGER NOT NULL,
      mean_lag_ms REAL NOT NULL, PRIMARY KEY (src, dst))`)
  }
}

/** Fills `base` (limits, half-lives, scope) with the stored counters and profile. */
export function loadSummary(sql: SqlStorage, t: SummaryTables, base: AccessSummary): AccessSummary {
  const artifacts = sql
    .exec<{ artifact: string; count: number; updated_at: number }>(
      `SELECT artifact, count, updated_at FROM ${t.artifacts}`,
    )
    .toArray()
    .map((r) => ({ artifact: r.artifact, count: r.count, updatedAt: r.updated_at }))
  const transitions =
    t.transitions === null
      ? []
      : sql
          .exec<{ src: string; dst: string; count: number; updated_at: number; mean_lag_ms: number }>(
            `SELECT src, dst, count, updated_at, mean_lag_ms FROM ${t.transitions}`,
          )
          .toArray()
          .map((r) => ({
            from: r.src,
            to: r.dst,
            count: r.count,
            updatedAt: r.updated_at,
            meanLagMs: r.mean_lag_ms,
          }))
  const profileRow = readMeta(sql, t.profileKey)
  // Our own JSON, but a row from an older layout must not break loading: fall back to an empty profile.
  const stored = profileRow === null ? null : parseStoredJson(profileRow, AccessSummarySchema.shape.profile)
  const profile = stored ?? base.profile
  const updatedAt = Math.max(base.updatedAt, ...artifacts.map((a) => a.updatedAt))
  return { ...base, artifacts, transitions, profile, updatedAt }
}

/**
 * Writes `next` over `prev`: upserts counters of `touched` artifacts (and transitions leaving them),
 * deletes what compaction evicted, rewrites the profile. Call inside `transactionSync`.
 */
export function persistSummary(
  sql: SqlStorage,
  t: SummaryTables,
  prev: AccessSummary,
  next: AccessSummary,
  touched: ReadonlySet<string>,
): { evicted: number } {
  const kept = new Set(next.artifacts.map((a) => a.artifact))
  let evicted = 0
  for (const a of prev.artifacts) {
    if (kept.has(a.artifact)) continue
    sql.exec(`DELETE FROM ${t.artifacts} WHERE artifact = ?`, a.artifact)
    evicted++
  }
  for (const a of next.artifacts) {
    if (!touched.has(a.artifact)) continue
    upsertArtifact(sql, t, a)
  }
  if (t.transitions !== null) {
    const keptPairs = new Set(next.transitions.map((x) => pairKey(x.from, x.to)))
    for (const x of prev.transitions) {
      if (!keptPairs.has(pairKey(x.from, x.to))) {
        sql.exec(`DELETE FROM ${t.transitions} WHERE src = ? AND dst = ?`, x.from, x.to)
      }
    }
    for (const x of next.transitions) {
      if (!touched.has(x.from) && !touched.has(x.to)) continue
      upsertTransition(sql, t, x)
    }
  }
  writeMeta(sql, t.profileKey, JSON.stringify(next.profile))
  return { evicted }
}

/**
 * Writes one batch's changes (SummaryIndex.record): upserts what it bumped, deletes what it evicted,
 * rewrites the profile. Call inside `transactionSync`. Costs the batch, not the summary.
 */
export function persistChanges(
  sql: SqlStorage,
  t: SummaryTables,
  changes: SummaryChanges,
  profile: AccessSummary['profile'],
): void {
  for (const artifact of changes.evictedArtifacts) {
    sql.exec(`DELETE FROM ${t.artifacts} WHERE artifact = ?`, artifact)
  }
  for (const a of changes.artifacts) {
    upsertArtifact(sql, t, a)
  }
  if (t.transitions !== null) {
    for (const x of changes.evictedTransitions) {
      sql.exec(`DELETE FROM ${t.transitions} WHERE src = ? AND dst = ?`, x.from, x.to)
    }
    for (const x of changes.transitions) {
      upsertTransition(sql, t, x)
    }
  }
  writeMeta(sql, t.profileKey, JSON.stringify(profile))
}

function upsertArtifact(sql: SqlStorage, t: SummaryTables, a: AccessSummary['artifacts'][number]): void {
  sql.exec(
    `INSERT INTO ${t.artifacts} (artifact, count, updated_at) VALUES (?, ?, ?)
     ON CONFLICT (artifact) DO UPDATE SET count = excluded.count, updated_at = excluded.updated_at`,
    a.artifact,
    a.count,
    a.updatedAt,
  )
}

function upsertTransition(sql: SqlStorage, t: SummaryTables, x: AccessSummary['transitions'][number]): void {
  if (t.transitions === null) return
  sql.exec(
    `INSERT INTO ${t.transitions} (src, dst, count, updated_at, mean_lag_ms) VALUES (?, ?, ?, ?, ?)
     ON CONFLICT (src, dst) DO UPDATE SET count = excluded.count, updated_at = excluded.updated_at,
       mean_lag_ms = excluded.mean_lag_ms`,
    x.from,
    x.to,
    x.count,
    x.updatedAt,
    x.meanLagMs,
  )
}
