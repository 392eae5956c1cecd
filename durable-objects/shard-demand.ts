/**
 * What the ShardPlanner was told was served, by the hour: requests and bytes per dependency per zone
 * (`demand`, which the forecasts are fitted on) and per-zone serve counters (`zone_metrics`, which the
 * metrics report and the threshold reward read, and the edge's warm fills, migrations and refits add to).
 */
import { HOUR_MS, hourOf } from '../predict/index.ts'
import type { ServeOutcome, WarmFill } from '../schemas/shards.ts'

/** Four weeks of hourly history: enough for double-seasonal Holt-Winters, bounded storage. */
export const HISTORY_HOURS = 28 * 24

/**
 * How far a reported hour may lie ahead of the planner's clock: the hour in progress is always taken, the
 * next one only within this much of its start (a caller's clock a little fast). Further ahead, the row
 * would sit in the table until its hour came and then count as demand that hour never had.
 */
export const MAX_CLOCK_SKEW_MS = 5 * 60_000

/** Rows the history may take, and how many it refused and why. */
export interface DemandRowsInWindow<T> {
  accepted: T[]
  dropped: { future: number; expired: number }
}

/**
 * Keeps the rows whose hour lies in the history window at `now`: not before its first hour (the cycle
 * would prune them unread) and not after the hour `MAX_CLOCK_SKEW_MS` from now (a skewed clock or a bad
 * caller would plant demand in hours not yet served, which forecasts and sMAPE scores then take as real).
 */
export function demandRowsInWindow<T extends { hour: number }>(
  rows: readonly T[],
  now: number,
): DemandRowsInWindow<T> {
  const first = hourOf(now) - HISTORY_HOURS * HOUR_MS
  const last = hourOf(now + MAX_CLOCK_SKEW_MS)
  const accepted: T[] = []
  let future = 0
  let expired = 0
  for (const r of rows) {
    const hour = hourOf(r.hour)
    if (hour > last) future++
    else if (hour < first) expired++
    else accepted.push(r)
  }
  return { accepted, dropped: { future, expired } }
}

export type ZoneMetricColumn =
  | 'requests'
  | 'hits'
  | 'cross_zone'
  | 'bytes_served'
  | 'cross_zone_bytes'
  | 'bytes_moved'
  | 'warm_fill_bytes'
  | 'latency_ms'
  | 'refits'

/**
 * Columns `zone_metrics` gained after planners were already running, with their definitions. A table
 * created before keeps its old shape (CREATE TABLE IF NOT EXISTS leaves it alone), so they are added in
 * place; every added column needs a default, which its existing rows take.
 */
const ADDED_ZONE_METRIC_COLUMNS: ReadonlyArray<readonly [ZoneMetricColumn, string]> = [
  ['warm_fill_bytes', 'REAL NOT NULL DEFAULT 0'],
]

export function createDemandTables(sql: SqlStorage): void {
  sql.exec(`
      CREATE TABLE IF NOT EXISTS demand (hour INTEGER NOT NULL, zone TEXT NOT NULL, entry TEXT NOT NULL,
        requests REAL NOT NULL, bytes REAL NOT NULL, PRIMARY KEY (hour, zone, entry));
      CREATE INDEX IF NOT EXISTS demand_entry ON demand (entry, zone, hour);
      CREATE TABLE IF NOT EXISTS zone_metrics (hour INTEGER NOT NULL, zone TEXT NOT NULL,
        requests REAL NOT NULL DEFAULT 0, hits REAL NOT NULL DEFAULT 0, cross_zone REAL NOT NULL DEFAULT 0,
        bytes_served REAL NOT NULL DEFAULT 0, cross_zone_bytes REAL NOT NULL DEFAULT 0,
        bytes_moved REAL NOT NULL DEFAULT 0, warm_fill_bytes REAL NOT NULL DEFAULT 0,
        latency_ms REAL NOT NULL DEFAULT 0, refits REAL NOT NULL DEFAULT 0,
        PRIMARY KEY (hour, zone));
    `)
  const present = new Set(
    sql
      .exec<{ name: string }>('PRAGMA table_info(zone_metrics)')
      .toArray()
      .map((c) => c.name),
  )
  for (const [column, definition] of ADDED_ZONE_METRIC_COLUMNS) {
    if (!present.has(column)) sql.exec(`ALTER TABLE zone_metrics ADD COLUMN ${column} ${definition}`)
  }
}

/**
 * One serve outcome reported by the edge: a request of its dependency in its zone, and a hit unless the
 * bytes came from the primary bucket to a zone other than the primary's.
 */
export function recordServeOutcome(sql: SqlStorage, o: ServeOutcome, primaryZone: string): void {
  const hour = hourOf(o.at)
  addDemand(sql, hour, o.zone, o.entry, 1, o.bytes)
  const hit = o.source !== 'primary' || o.zone === primaryZone
  addZoneMetrics(sql, hour, o.zone, {
    requests: 1,
    hits: hit ? 1 : 0,
    cross_zone: hit ? 0 : 1,
    bytes_served: o.bytes,
    cross_zone_bytes: hit ? 0 : o.bytes,
    latency_ms: o.latencyMs,
  })
}

/**
 * One warm fill reported by the edge: bytes read to warm the zone's hot set into a colo cache. Charged
 * to the zone's hour for the threshold reward; not a request, not demand (warming is not a client).
 */
export function recordWarmFill(sql: SqlStorage, f: WarmFill): void {
  addZoneMetrics(sql, hourOf(f.at), f.zone, { warm_fill_bytes: f.bytes })
}

/** Adds to the hour's demand for `entry` in `zone`. */
export function addDemand(
  sql: SqlStorage,
  hour: number,
  zone: string,
  entry: string,
  requests: number,
  bytes: number,
): void {
  sql.exec(
    `INSERT INTO demand (hour, zone, entry, requests, bytes) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (hour, zone, entry) DO UPDATE SET requests = requests + excluded.requests,
         bytes = bytes + excluded.bytes`,
    hour,
    zone,
    entry,
    requests,
    bytes,
  )
}

/** Adds to the hour's counters of `zone` (only the columns given). */
export function addZoneMetrics(
  sql: SqlStorage,
  hour: number,
  zone: string,
  add: Partial<Record<ZoneMetricColumn, number>>,
): void {
  const columns = Object.keys(add) as (keyof typeof add)[]
  if (columns.length === 0) return
  sql.exec(
    `INSERT INTO zone_metrics (hour, zone, ${columns.join(', ')}) VALUES (?, ?, ${columns.map(() => '?').join(', ')})
       ON CONFLICT (hour, zone) DO UPDATE SET ${columns.map((c) => `${c} = ${c} + excluded.${c}`).join(', ')}`,
    hour,
    zone,
    ...columns.map((c) => add[c] ?? 0),
  )
}

/** Drops demand and zone counters of hours before `before` (the end of the history window). */
export function pruneDemand(sql: SqlStorage, before: number): void {
  sql.exec('DELETE FROM demand WHERE hour < ?', before)
  sql.exec('DELETE FROM zone_metrics WHERE hour < ?', before)
}
