import type { ForecastPoint, ForecastSeries, ShardMetrics } from '../../../schemas/shards.ts'
import { shardPlanner } from './shards.ts'

/** Hours of actual demand plotted. */
export const FORECAST_WINDOW_HOURS = 24

export interface ZoneForecastView {
  zone: string
  /** Hour by hour, oldest first: requests served and the planner's forecast for that hour. */
  points: ForecastPoint[]
  /** sMAPE (%) of the planner's scored hourly forecasts; null before the first scored hour. */
  smape: number | null
  evaluatedHours: number
}

export interface ForecastView {
  zones: ZoneForecastView[]
  windowHours: number
}

/** Pure: the planner's hourly series joined with its per-zone forecast score. */
export function forecastViewOf(series: ForecastSeries, metrics: ShardMetrics): ForecastView {
  return {
    windowHours: series.windowHours,
    zones: series.zones.map((z) => {
      const score = metrics.zones.find((m) => m.zone === z.zone)
      return {
        zone: z.zone,
        points: z.points,
        smape: score?.smape ?? null,
        evaluatedHours: score?.evaluatedHours ?? 0,
      }
    }),
  }
}

/** Forecast vs actual per zone: one series call and one metrics call to the ShardPlanner. */
export async function loadForecast(env: Env, now = Date.now()): Promise<ForecastView> {
  const planner = shardPlanner(env)
  const [series, metrics] = await Promise.all([
    planner.forecastSeries(FORECAST_WINDOW_HOURS, now),
    planner.metrics(FORECAST_WINDOW_HOURS, now),
  ])
  return forecastViewOf(series, metrics)
}
