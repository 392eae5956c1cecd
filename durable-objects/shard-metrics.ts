/**
 * The ShardPlanner's read-only reports: serve metrics per zone over a window (with each zone's forecast
 * error, the threshold bandit and the migration counts), and per zone the requests served hour by hour
 * beside what the planner had predicted for those hours. Nothing here writes.
 */
import { HOUR_MS, hourOf } from '../predict/index.ts'
import type { ForecastSeries, ShardMetrics, ZoneMetrics, ZonesConfig } from '../schemas/shards.ts'
import { HISTORY_HOURS } from './shard-demand.ts'
import { zoneSmape } from './shard-forecast.ts'
import { migrationCounts } from './shard-migrations.ts'
import { readCurrentPlan } from './shard-plans.ts'
import { banditReport, currentThreshold } from './shard-threshold.ts'

/** Requests served and predicted per zone per hour, from `since` on (see `readForecastRows`). */
export interface ForecastRows {
  hours: number
  nowHour: number
  since: number
  actual: Map<string, Map<number, number>>
  predicted: Map<string, Map<number, number>>
}

/** Metrics per zone over the last `windowHours` (sMAPE over the last evaluated hours). */
export function readShardMetrics(
  sql: SqlStorage,
  config: ZonesConfig,
  windowHours: number,
  at: number,
): ShardMetrics {
  const since = hourOf(at) - (windowHours - 1) * HOUR_MS
  const zoneIds = [...new Set([...config.zones.map((z) => z.id), ...metricZones(sql, since)])].sort()
  const zones: ZoneMetrics[] = zoneIds.map((zone) => {
    const m = sql
      .exec<{
        requests: number
        hits: number
        cross_zone: number
        bytes_served: number
        cross_zone_bytes: number
        bytes_moved: number
        warm_fill_bytes: number
        latency_ms: number
        refits: number
      }>(
        `SELECT COALESCE(SUM(requests),0) AS requests, COALESCE(SUM(hits),0) AS hits,
             COALESCE(SUM(cross_zone),0) AS cross_zone, COALESCE(SUM(bytes_served),0) AS bytes_served,
             COALESCE(SUM(cross_zone_bytes),0) AS cross_zone_bytes, COALESCE(SUM(bytes_moved),0) AS bytes_moved,
             COALESCE(SUM(warm_fill_bytes),0) AS warm_fill_bytes, COALESCE(SUM(latency_ms),0) AS latency_ms, COALESCE(SUM(refits),0) AS refits
           FROM zone_metrics WHERE zone = ? AND hour >= ?`,
        zone,
        since,
      )
      .one()
    const error = zoneSmape(sql, zone)
    return {
      zone,
      requests: m.requests,
      hits: m.hits,
      hitRatio: m.requests > 0 ? m.hits / m.requests : 0,
      crossZoneFetches: m.cross_zone,
      bytesServed: m.bytes_served,
      crossZoneBytes: m.cross_zone_bytes,
      bytesMoved: m.bytes_moved,
      warmFillBytes: m.warm_fill_bytes,
      meanLatencyMs: m.requests > 0 ? m.latency_ms / m.requests : 0,
      smape: error.hours > 0 ? error.smape : null,
      evaluatedHours: error.hours,
      refits: m.refits,
    }
  })
  const plan = readCurrentPlan(sql)
  return {
    planVersion: plan?.version ?? 0,
    windowHours,
    zones,
    prefetchThreshold: currentThreshold(sql, config),
    bandit: banditReport(sql, config),
    migrations: migrationCounts(sql, plan),
  }
}

/**
 * The rows of a forecast series over the last `windowHours` (at most the history kept): requests served
 * per zone per hour, and the predictions for those hours, scored or (for hours not over yet) pending.
 */
export function readForecastRows(sql: SqlStorage, windowHours: number, now: number): ForecastRows {
  const hours = Math.min(Math.max(1, Math.floor(windowHours)), HISTORY_HOURS)
  const nowHour = hourOf(now)
  const since = nowHour - (hours - 1) * HOUR_MS
  const byZone = (rows: Array<{ hour: number; zone: string; n: number }>) => {
    const map = new Map<string, Map<number, number>>()
    for (const r of rows) map.set(r.zone, (map.get(r.zone) ?? new Map()).set(r.hour, r.n))
    return map
  }
  const actual = byZone(
    sql
      .exec<{ hour: number; zone: string; n: number }>(
        'SELECT hour, zone, SUM(requests) AS n FROM zone_metrics WHERE hour >= ? GROUP BY hour, zone',
        since,
      )
      .toArray(),
  )
  const predicted = byZone(
    sql
      .exec<{ hour: number; zone: string; n: number }>(
        `SELECT hour, zone, predicted AS n FROM evaluations WHERE hour >= ?
           UNION ALL SELECT hour, zone, requests AS n FROM predictions WHERE hour >= ?`,
        since,
        since,
      )
      .toArray(),
  )
  return { hours, nowHour, since, actual, predicted }
}

/**
 * Per zone (the configured ones and any with rows), hour by hour over the window plus the predicted
 * hours still ahead: the requests served (null for an hour not over yet) and the prediction, if any.
 */
export function forecastSeriesOf(rows: ForecastRows, config: ZonesConfig): ForecastSeries {
  const { hours, nowHour, since, actual, predicted } = rows
  const zoneIds = [
    ...new Set([...config.zones.map((z) => z.id), ...actual.keys(), ...predicted.keys()]),
  ].sort()
  return {
    windowHours: hours,
    zones: zoneIds.map((zone) => {
      const ahead = [...(predicted.get(zone)?.keys() ?? [])].filter((h) => h > nowHour)
      const timeline = [...Array.from({ length: hours }, (_, k) => since + k * HOUR_MS), ...ahead.sort()]
      return {
        zone,
        points: timeline.map((hour) => ({
          hour,
          actual: hour > nowHour ? null : (actual.get(zone)?.get(hour) ?? 0),
          predicted: predicted.get(zone)?.get(hour) ?? null,
        })),
      }
    }),
  }
}

function metricZones(sql: SqlStorage, since: number): string[] {
  return sql
    .exec<{ zone: string }>('SELECT DISTINCT zone FROM zone_metrics WHERE hour >= ?', since)
    .toArray()
    .map((r) => r.zone)
}
