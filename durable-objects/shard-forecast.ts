/**
 * The ShardPlanner's forecasts: Holt-Winters models per dependency per zone (`models`, entry `*` for a
 * zone's own model fitted on its total), the next hour's predicted requests per zone (`predictions`) and,
 * once that hour is over, the prediction beside what was served (`evaluations`, which sMAPE is taken on).
 * The numbers themselves come from predict/; this module keeps them in SQLite.
 */
import type { DemandModel } from '../predict/index.ts'
import { forecastZone, HOUR_MS, hourlySeries, mean, smape } from '../predict/index.ts'
import { StoredDemandModel, type ZonesConfig } from '../schemas/shards.ts'
import { addZoneMetrics, HISTORY_HOURS } from './shard-demand.ts'
import { parseStoredJson } from './stored-json.ts'

/** Dependencies considered per re-plan (hottest by recent requests). */
export const MAX_ENTRIES = 256
/** Per-dependency refits per cycle; the others reuse their zone's fitted weights (a cheap pass). */
const MAX_REFITS_PER_CYCLE = 24
/** sMAPE is judged on this many most recent evaluated hours. */
const SMAPE_WINDOW_HOURS = 24

/** A dependency's forecast: mean requests/hour over the horizon, per zone. */
export interface DemandForecast {
  demand: Record<string, number>
}

/** One round's forecasts: per dependency (what the plan places) and each zone's next hour in total. */
export interface ZoneForecasts {
  dependencies: Map<string, DemandForecast>
  /** Zone → requests predicted for the hour in progress (all dependencies, planned or not). */
  next: Map<string, number>
}

export function createForecastTables(sql: SqlStorage): void {
  sql.exec(`
      CREATE TABLE IF NOT EXISTS models (entry TEXT NOT NULL, zone TEXT NOT NULL, model TEXT NOT NULL,
        PRIMARY KEY (entry, zone));
      CREATE TABLE IF NOT EXISTS predictions (hour INTEGER NOT NULL, zone TEXT NOT NULL, requests REAL NOT NULL,
        PRIMARY KEY (hour, zone));
      CREATE TABLE IF NOT EXISTS evaluations (hour INTEGER NOT NULL, zone TEXT NOT NULL, predicted REAL NOT NULL,
        actual REAL NOT NULL, PRIMARY KEY (hour, zone));
    `)
}

/**
 * Forecast mean requests/hour over the horizon per hot dependency per zone. A dependency reuses its
 * stored weights (or its zone's, fitted on the zone total) unless its zone's sMAPE passed `refitSmape`,
 * then it is refitted by minimising one-step error (at most MAX_REFITS_PER_CYCLE per cycle, hottest first).
 */
export function forecastDemand(sql: SqlStorage, config: ZonesConfig, nowHour: number): ZoneForecasts {
  const from = nowHour - HISTORY_HOURS * HOUR_MS
  const hot = sql
    .exec<{ entry: string }>(
      `SELECT entry FROM demand WHERE hour >= ? GROUP BY entry ORDER BY SUM(requests) DESC, entry LIMIT ?`,
      from,
      MAX_ENTRIES,
    )
    .toArray()
    .map((r) => r.entry)
  const out = new Map<string, DemandForecast>()
  const next = new Map<string, number>()
  let refitBudget = MAX_REFITS_PER_CYCLE
  for (const zone of config.zones.map((z) => z.id)) {
    const firstHour = sql
      .exec<{ h: number | null }>(
        'SELECT MIN(hour) AS h FROM demand WHERE zone = ? AND hour >= ?',
        zone,
        from,
      )
      .one().h
    if (firstHour === null) continue
    const start = Math.max(from, firstHour)
    // Scores change once an hour; a zone refit in this hour already would fit the same history again
    // on every later cycle of it (one a second while copies are queued).
    const needsRefit = zoneSmape(sql, zone).smape > config.refitSmape && !refitIn(sql, zone, nowHour)
    const totals = sql
      .exec<{ hour: number; value: number }>(
        'SELECT hour, SUM(requests) AS value FROM demand WHERE zone = ? AND hour >= ? AND hour < ? GROUP BY hour',
        zone,
        start,
        nowHour,
      )
      .toArray()
    const series = hot.flatMap((entry) => {
      const rows = sql
        .exec<{ hour: number; value: number }>(
          'SELECT hour, requests AS value FROM demand WHERE entry = ? AND zone = ? AND hour >= ? AND hour < ?',
          entry,
          zone,
          start,
          nowHour,
        )
        .toArray()
      return rows.length === 0
        ? []
        : [{ entry, series: hourlySeries(rows, start, nowHour), model: readModel(sql, entry, zone) }]
    })
    const round = forecastZone({
      totals: hourlySeries(totals, start, nowHour),
      zoneModel: readModel(sql, '*', zone),
      entries: series,
      horizon: config.horizonHours,
      refit: needsRefit,
      refitBudget,
    })
    refitBudget = round.refitBudgetLeft
    const refits = round.refits
    if (round.zoneModel !== null) writeModel(sql, '*', zone, round.zoneModel)
    next.set(zone, round.totalNext)
    for (const f of round.entries) {
      if (f.model !== undefined) writeModel(sql, f.entry, zone, f.model)
      const slot = out.get(f.entry) ?? { demand: {} }
      slot.demand[zone] = mean(f.point)
      out.set(f.entry, slot)
    }
    if (refits > 0) addZoneMetrics(sql, nowHour, zone, { refits })
  }
  return { dependencies: out, next }
}

/**
 * Predicted requests per zone for the hour in progress, scored by `scoreForecasts` once it is over
 * against everything the zone served in it: so the prediction is the zone total's forecast.
 */
export function storePredictions(sql: SqlStorage, next: ReadonlyMap<string, number>, nowHour: number): void {
  for (const [zone, requests] of next) {
    sql.exec(
      'INSERT OR REPLACE INTO predictions (hour, zone, requests) VALUES (?, ?, ?)',
      nowHour,
      zone,
      requests,
    )
  }
}

/** Compares each stored prediction for a finished hour with what was served then. */
export function scoreForecasts(sql: SqlStorage, nowHour: number): void {
  const due = sql
    .exec<{ hour: number; zone: string; requests: number }>(
      `SELECT p.hour, p.zone, p.requests FROM predictions p
         WHERE p.hour < ? AND NOT EXISTS (SELECT 1 FROM evaluations e WHERE e.hour = p.hour AND e.zone = p.zone)`,
      nowHour,
    )
    .toArray()
  for (const p of due) {
    const actual = sql
      .exec<{ n: number }>(
        'SELECT COALESCE(SUM(requests),0) AS n FROM demand WHERE hour = ? AND zone = ?',
        p.hour,
        p.zone,
      )
      .one().n
    sql.exec(
      'INSERT OR REPLACE INTO evaluations (hour, zone, predicted, actual) VALUES (?, ?, ?, ?)',
      p.hour,
      p.zone,
      p.requests,
      actual,
    )
  }
  sql.exec('DELETE FROM predictions WHERE hour < ?', nowHour)
}

/** The zone's sMAPE over its last SMAPE_WINDOW_HOURS evaluated hours (and how many there were). */
export function zoneSmape(sql: SqlStorage, zone: string): { smape: number; hours: number } {
  const rows = sql
    .exec<{ predicted: number; actual: number }>(
      'SELECT predicted, actual FROM evaluations WHERE zone = ? ORDER BY hour DESC LIMIT ?',
      zone,
      SMAPE_WINDOW_HOURS,
    )
    .toArray()
  return {
    smape: smape(
      rows.map((r) => r.actual),
      rows.map((r) => r.predicted),
    ),
    hours: rows.length,
  }
}

/** Whether `zone` had models refit during the hour starting `hour` (counted in its zone metrics). */
function refitIn(sql: SqlStorage, zone: string, hour: number): boolean {
  return (
    sql
      .exec<{ n: number }>(
        'SELECT COALESCE(SUM(refits),0) AS n FROM zone_metrics WHERE zone = ? AND hour = ?',
        zone,
        hour,
      )
      .one().n > 0
  )
}

/** Drops the evaluations of hours before `before` (the end of the history window). */
export function pruneEvaluations(sql: SqlStorage, before: number): void {
  sql.exec('DELETE FROM evaluations WHERE hour < ?', before)
}

/** Drops the models of dependencies with no demand left (zone models stay); prune the demand first. */
export function pruneModels(sql: SqlStorage): void {
  sql.exec(
    `DELETE FROM models WHERE entry <> '*' AND NOT EXISTS (SELECT 1 FROM demand d WHERE d.entry = models.entry)`,
  )
}

function readModel(sql: SqlStorage, entry: string, zone: string): DemandModel | null {
  const row = sql
    .exec<{ model: string }>('SELECT model FROM models WHERE entry = ? AND zone = ?', entry, zone)
    .toArray()[0]
  if (row === undefined) return null
  return parseStoredJson(row.model, StoredDemandModel)
}

function writeModel(sql: SqlStorage, entry: string, zone: string, model: DemandModel): void {
  sql.exec(
    'INSERT OR REPLACE INTO models (entry, zone, model) VALUES (?, ?, ?)',
    entry,
    zone,
    JSON.stringify(model),
  )
}
