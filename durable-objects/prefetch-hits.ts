/**
 * Prefetch hit counters of a region: how many installs and updates the region's clients reported, and
 * how many of those were served from a version the daemon had prefetched (`prefetch-hit` events, sent by
 * the agent next to the `install`/`update` event of the same switch). Cumulative per artifact, bounded.
 */
import { MAX_PREFETCH_TOP, type PrefetchTally, type PrefetchTotals } from '../schemas/dashboard.ts'
import type { AccessEvent } from '../schemas/telemetry.ts'

export type { PrefetchTally, PrefetchTotals }

/** Artifacts kept; the ones with the fewest deliveries are dropped first. */
export const MAX_PREFETCH_ARTIFACTS = 1000
const TABLE = 'prefetch_hits'

/** Per-artifact counts of one batch (pure; counts honour each event's `count`). */
export function tallyPrefetch(
  events: readonly Pick<AccessEvent, 'artifact' | 'kind' | 'count'>[],
): PrefetchTally[] {
  const byArtifact = new Map<string, PrefetchTally>()
  for (const e of events) {
    const isDelivery = e.kind === 'install' || e.kind === 'update'
    if (!isDelivery && e.kind !== 'prefetch-hit') continue
    const t = byArtifact.get(e.artifact) ?? { artifact: e.artifact, deliveries: 0, hits: 0 }
    if (isDelivery) t.deliveries += e.count
    else t.hits += e.count
    byArtifact.set(e.artifact, t)
  }
  return [...byArtifact.values()]
}

export function createPrefetchHitTable(sql: SqlStorage): void {
  sql.exec(`CREATE TABLE IF NOT EXISTS ${TABLE} (
    artifact TEXT PRIMARY KEY, deliveries INTEGER NOT NULL, hits INTEGER NOT NULL, updated_at INTEGER NOT NULL)`)
}

/** Adds a batch's tallies; call inside the ingest transaction so counts and summaries move together. */
export function recordPrefetchHits(
  sql: SqlStorage,
  tallies: readonly PrefetchTally[],
  now: number,
  maxArtifacts = MAX_PREFETCH_ARTIFACTS,
): void {
  if (tallies.length === 0) return
  // Trimming orders the whole table (up to maxArtifacts rows read, and billed); only a batch that adds
  // an artifact can take it past the cap, and most batches report artifacts the table already has.
  let added = false
  for (const t of tallies) {
    added ||= sql.exec(`SELECT 1 FROM ${TABLE} WHERE artifact = ?`, t.artifact).toArray().length === 0
    sql.exec(
      `INSERT INTO ${TABLE} (artifact, deliveries, hits, updated_at) VALUES (?, ?, ?, ?)
       ON CONFLICT (artifact) DO UPDATE SET deliveries = deliveries + excluded.deliveries,
         hits = hits + excluded.hits, updated_at = excluded.updated_at`,
      t.artifact,
      t.deliveries,
      t.hits,
      now,
    )
  }
  if (!added) return
  sql.exec(
    `DELETE FROM ${TABLE} WHERE artifact IN (
       SELECT artifact FROM ${TABLE} ORDER BY deliveries DESC, updated_at DESC LIMIT -1 OFFSET ?)`,
    maxArtifacts,
  )
}

/** Every artifact's counts, most delivered first. */
export function readPrefetchHits(sql: SqlStorage): PrefetchTally[] {
  return sql
    .exec<{ artifact: string; deliveries: number; hits: number }>(
      `SELECT artifact, deliveries, hits FROM ${TABLE} ORDER BY deliveries DESC, artifact`,
    )
    .toArray()
    .map((r) => ({ artifact: r.artifact, deliveries: r.deliveries, hits: r.hits }))
}

/**
 * The counts summed over every artifact and the `top` most delivered (at most MAX_PREFETCH_TOP): what
 * the dashboard shows, without carrying the whole table (up to MAX_PREFETCH_ARTIFACTS rows, names
 * chosen by clients) out of the object per region per page view.
 */
export function readPrefetchTotals(sql: SqlStorage, top: number): PrefetchTotals {
  const sums = sql
    .exec<{ deliveries: number | null; hits: number | null }>(
      `SELECT SUM(deliveries) AS deliveries, SUM(hits) AS hits FROM ${TABLE}`,
    )
    .one()
  const limit = Number.isFinite(top) ? Math.max(0, Math.min(MAX_PREFETCH_TOP, Math.floor(top))) : 0
  const rows = sql
    .exec<{ artifact: string; deliveries: number; hits: number }>(
      `SELECT artifact, deliveries, hits FROM ${TABLE} ORDER BY deliveries DESC, artifact LIMIT ?`,
      limit,
    )
    .toArray()
  return {
    deliveries: sums.deliveries ?? 0,
    hits: sums.hits ?? 0,
    top: rows.map((r) => ({ artifact: r.artifact, deliveries: r.deliveries, hits: r.hits })),
  }
}
