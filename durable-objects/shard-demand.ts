/**
 * What the ShardPlanner was told was served, by the hour: requests and bytes per dependency per zone
 * (`demand`, which the forecasts are fitted on) and per-zone serve counters (`zone_metrics`, which the
 * metrics report and the threshold reward read, and migrations and refits add to).
 */
import { hourOf } from '../predict/index.ts'
import type { ServeOutcome } from '../schemas/shards.ts'

/** Four weeks of hourly history: enough for double-seasonal Holt-Winters, bounded storage. */
export const HISTORY_HOURS = 28 * 24

export type ZoneMetricColumn =
  | 'requests'
  | 'hits'
  | 'cross_zone'
  | 'bytes_served'
  | 'cross_zone_bytes'
  | 'bytes_moved'
  | 'latency_ms'
  | 'refits'

export function createDemandTables(sql: SqlStorage): void {
  sql.exec(`
      CREATE TABLE IF NOT EXISTS demand (hour INTEGER NOT NULL, zone TEXT NOT NULL, entry TEXT NOT NULL,
        requests REAL NOT NULL, bytes REAL NOT NULL, PRIMARY KEY (hour, zone, entry));
      CREATE INDEX IF NOT EXISTS demand_entry ON demand (entry, zone, hour);
      CREATE TABLE IF NOT EXISTS zone_metrics (hour INTEGER NOT NULL, zone TEXT NOT NULL,
        requests REAL NOT NULL DEFAULT 0, hits REAL NOT NULL DEFAULT 0, cross_zone REAL NOT NULL DEFAULT 0,
        bytes_served REAL NOT NULL DEFAULT 0, cross_zone_bytes REAL NOT NULL DEFAULT 0,
        bytes_moved REAL NOT NULL DEFAULT 0, latency_ms REAL NOT NULL DEFAULT 0, refits REAL NOT NULL DEFAULT 0,
        PRIMARY KEY (hour, zone));
    `)
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
