/**
 * Additive Holt-Winters for hourly request series, with Taylor's double seasonality (day + week) when the
 * history allows it. See docs/decisions/0006-forecasting-and-placement.md for why this and not a heavier
 * model. Everything is plain arrays and numbers: a fitted state is JSON and can live in a Durable Object.
 */
import { nelderMead } from './optimize.ts'

export const HOURS_PER_DAY = 24
export const HOURS_PER_WEEK = 168
const MIN_ALPHA = 0.01

/**
 * Which model produced a forecast. The last two are fallbacks for short histories (< 2 days), where
 * fitting seasonal components would be fitting noise.
 */
export type ForecastMethod = 'double-seasonal' | 'daily-seasonal' | 'seasonal-naive' | 'ewma'

/** `auto` picks the richest model the history supports: double from 2 weeks, daily from 2 days. */
export type Seasonality = 'auto' | 'daily' | 'double'

/** Smoothing weights in [0, 1]: level, trend, daily season, weekly season (0 when there is none). */
export interface HoltWintersParams {
  alpha: number
  beta: number
  gamma: number
  delta: number
}

/**
 * A fitted model after consuming `t` observations. Seasonal arrays are indexed by absolute position modulo
 * the period, so hour 0 of the series owns daily[0]; callers align series to whatever clock they like.
 */
export interface HoltWintersState {
  method: 'double-seasonal' | 'daily-seasonal'
  params: HoltWintersParams
  level: number
  trend: number
  /** 24 additive daily effects. */
  daily: number[]
  /** 168 additive weekly effects on top of the daily ones; all zero for daily-seasonal. */
  weekly: number[]
  /** Observations consumed so far; the next value is position `t`. */
  t: number
  /** Standard deviation of the one-step-ahead residuals, the base of prediction intervals. */
  sigma: number
}

export interface ForecastOptions {
  seasonality?: Seasonality
  /** Normal quantile for the interval; 1.96 gives ~95 %. */
  z?: number
  /** Request counts cannot be negative; clamp point and bounds at 0 (default true). */
  nonNegative?: boolean
}

/** Point forecasts with a prediction interval, one entry per future hour. */
export interface Forecast {
  method: ForecastMethod
  point: number[]
  lower: number[]
  upper: number[]
  sigma: number
  /** Present for the Holt-Winters methods. */
  params?: HoltWintersParams
}

/** One recursion step; mutates `s` and returns the one-step-ahead error for observation `y`. */
function step(s: HoltWintersState, y: number): number {
  const { alpha, beta, gamma, delta } = s.params
  const di = s.t % HOURS_PER_DAY
  const wi = s.t % HOURS_PER_WEEK
  const d = s.daily[di]!
  const w = s.weekly[wi]!
  const error = y - (s.level + s.trend + d + w)
  const prevLevel = s.level
  s.level = alpha * (y - d - w) + (1 - alpha) * (s.level + s.trend)
  s.trend = beta * (s.level - prevLevel) + (1 - beta) * s.trend
  s.daily[di] = gamma * (y - s.level - w) + (1 - gamma) * d
  if (s.method === 'double-seasonal') s.weekly[wi] = delta * (y - s.level - d) + (1 - delta) * w
  s.t++
  return error
}

/**
 * Initial level, trend and combined seasonal profile from up to `maxPeriods` whole periods: the trend is the
 * slope between the first and last period means, the season is the mean detrended deviation per phase.
 */
function initialComponents(series: readonly number[], period: number, maxPeriods: number) {
  const periods = Math.min(Math.floor(series.length / period), maxPeriods)
  const means: number[] = []
  for (let j = 0; j < periods; j++) {
    let sum = 0
    for (let k = 0; k < period; k++) sum += series[j * period + k]!
    means.push(sum / period)
  }
  const trend = periods > 1 ? (means[periods - 1]! - means[0]!) / (period * (periods - 1)) : 0
  const mid = (period - 1) / 2
  const season = new Array<number>(period).fill(0)
  for (let j = 0; j < periods; j++) {
    for (let k = 0; k < period; k++) {
      season[k]! += (series[j * period + k]! - means[j]! - trend * (k - mid)) / periods
    }
  }
  // Level "one step before the first observation", so step() forecasts position 0 as level + trend.
  return { level: means[0]! - trend * (mid + 1), trend, season }
}

function initialState(
  series: readonly number[],
  method: HoltWintersState['method'],
  params: HoltWintersParams,
): HoltWintersState {
  if (method === 'daily-seasonal') {
    const init = initialComponents(series, HOURS_PER_DAY, 7)
    return {
      method,
      params,
      level: init.level,
      trend: init.trend,
      daily: init.season,
      weekly: new Array<number>(HOURS_PER_WEEK).fill(0),
      t: 0,
      sigma: 0,
    }
  }
  // Split the weekly profile into the part every day shares (daily) and what is left per weekday (weekly).
  const init = initialComponents(series, HOURS_PER_WEEK, 4)
  const daily = new Array<number>(HOURS_PER_DAY).fill(0)
  init.season.forEach((v, k) => {
    daily[k % HOURS_PER_DAY]! += v / 7
  })
  const weekly = init.season.map((v, k) => v - daily[k % HOURS_PER_DAY]!)
  return { method, params, level: init.level, trend: init.trend, daily, weekly, t: 0, sigma: 0 }
}

function cloneState(s: HoltWintersState): HoltWintersState {
  return { ...s, params: { ...s.params }, daily: [...s.daily], weekly: [...s.weekly] }
}

/** Residual std ignoring the first day, where errors mostly reflect the crude initialisation. */
function residualSigma(errors: readonly number[], parameters: number): number {
  const used = errors.length > 2 * HOURS_PER_DAY ? errors.slice(HOURS_PER_DAY) : errors
  let sse = 0
  for (const e of used) sse += e * e
  return Math.sqrt(sse / Math.max(1, used.length - parameters))
}

/**
 * Gaps must be filled by the caller (with 0 for "no requests", or an interpolation for lost telemetry):
 * a NaN would silently poison every later state, so it is rejected up front.
 */
function assertFinite(series: readonly number[]): void {
  const bad = series.findIndex((y) => !Number.isFinite(y))
  if (bad >= 0) throw new RangeError(`series[${bad}] is not a finite number`)
}

/** Chooses the model for a history length; null means "too short for Holt-Winters, use a fallback". */
export function chooseMethod(
  length: number,
  seasonality: Seasonality = 'auto',
): HoltWintersState['method'] | null {
  if (length < 2 * HOURS_PER_DAY) return null
  if (seasonality === 'daily' || length < 2 * HOURS_PER_WEEK) return 'daily-seasonal'
  return 'double-seasonal'
}

/**
 * Fits smoothing weights by minimising the in-sample sum of squared one-step-ahead errors (Nelder-Mead
 * from a conventional start, restarted once from its own optimum to escape early simplex collapse), then
 * runs the whole series through the model. Requires at least 48 hourly values.
 */
export function fitHoltWinters(
  series: readonly number[],
  seasonality: Seasonality = 'auto',
): HoltWintersState {
  assertFinite(series)
  const method = chooseMethod(series.length, seasonality)
  if (method === null) throw new RangeError(`Holt-Winters needs >= 48 hourly values, got ${series.length}`)
  const double = method === 'double-seasonal'
  const toParams = (x: readonly number[]): HoltWintersParams => ({
    alpha: x[0]!,
    beta: x[1]!,
    gamma: x[2]!,
    delta: double ? x[3]! : 0,
  })
  const sse = (x: readonly number[]): number => {
    const s = initialState(series, method, toParams(x))
    let total = 0
    for (const y of series) {
      const e = step(s, y)
      total += e * e
    }
    return total
  }
  const dim = double ? 4 : 3
  // alpha is floored at 0.01: a level that never adapts would ignore a real traffic shift forever, and the
  // floor is what makes intervals widen with the horizon even on a perfectly regular history.
  const lower = new Array<number>(dim).fill(0)
  lower[0] = MIN_ALPHA
  const bounds = { lower, upper: new Array<number>(dim).fill(1) }
  const start = double ? [0.2, 0.01, 0.1, 0.1] : [0.2, 0.01, 0.1]
  const first = nelderMead(sse, start, bounds, { maxIterations: 300 })
  const best = nelderMead(sse, first.x, bounds, { maxIterations: 300, step: 0.05 })

  const state = initialState(series, method, toParams(best.x))
  const errors = series.map((y) => step(state, y))
  state.sigma = residualSigma(errors, dim)
  return state
}

/**
 * Runs the whole series through the model with already fitted weights (no optimisation): how a planner
 * keeps using yesterday's parameters on today's history until the forecast error says to refit. Needs the
 * same history length rules as `fitHoltWinters`; a `daily-seasonal` fit reused on a longer history stays
 * daily (delta is 0 then) so the parameters keep their meaning.
 */
export function applyHoltWinters(
  series: readonly number[],
  params: HoltWintersParams,
  method: HoltWintersState['method'],
): HoltWintersState {
  assertFinite(series)
  const supported = chooseMethod(series.length)
  if (supported === null) throw new RangeError(`Holt-Winters needs >= 48 hourly values, got ${series.length}`)
  const used = supported === 'daily-seasonal' ? 'daily-seasonal' : method
  const state = initialState(series, used, {
    ...params,
    delta: used === 'double-seasonal' ? params.delta : 0,
  })
  const errors = series.map((y) => step(state, y))
  state.sigma = residualSigma(errors, used === 'double-seasonal' ? 4 : 3)
  return state
}

/** Feeds one new hourly observation into a fitted state without refitting; returns a new state. */
export function updateHoltWinters(state: HoltWintersState, y: number): HoltWintersState {
  const next = cloneState(state)
  step(next, y)
  return next
}

/**
 * Forecasts from a fitted state. Interval half-width is z * sigma * sqrt(1 + sum c_j^2), with
 * c_j = alpha(1 + j beta) plus gamma/delta when j completes a season: the usual additive Holt-Winters
 * variance approximation, so intervals widen with the horizon.
 */
export function forecastFromState(
  state: HoltWintersState,
  horizon: number,
  options: ForecastOptions = {},
): Forecast {
  const z = options.z ?? 1.96
  const nonNegative = options.nonNegative ?? true
  const { alpha, beta, gamma, delta } = state.params
  const point: number[] = []
  const lower: number[] = []
  const upper: number[] = []
  let spread = 1
  for (let h = 1; h <= horizon; h++) {
    if (h > 1) {
      const j = h - 1
      const c =
        alpha * (1 + j * beta) +
        (j % HOURS_PER_DAY === 0 ? gamma : 0) +
        (state.method === 'double-seasonal' && j % HOURS_PER_WEEK === 0 ? delta : 0)
      spread += c * c
    }
    const pos = state.t + h - 1
    const mean =
      state.level + h * state.trend + state.daily[pos % HOURS_PER_DAY]! + state.weekly[pos % HOURS_PER_WEEK]!
    const half = z * state.sigma * Math.sqrt(spread)
    point.push(mean)
    lower.push(mean - half)
    upper.push(mean + half)
  }
  const result: Forecast = {
    method: state.method,
    point,
    lower,
    upper,
    sigma: state.sigma,
    params: state.params,
  }
  return nonNegative ? clampForecast(result) : result
}

function clampForecast(f: Forecast): Forecast {
  const clamp = (xs: number[]) => xs.map((v) => Math.max(0, v))
  return { ...f, point: clamp(f.point), lower: clamp(f.lower), upper: clamp(f.upper) }
}

/**
 * Exponentially weighted mean for histories shorter than a day: the smoothing weight is picked on a
 * coarse grid by one-step error; the interval uses the simple-exponential-smoothing variance
 * sigma^2 (1 + (h-1) alpha^2).
 */
function ewmaForecast(series: readonly number[], horizon: number, z: number): Forecast {
  if (series.length === 0) {
    const zeros = new Array<number>(horizon).fill(0)
    return { method: 'ewma', point: zeros, lower: [...zeros], upper: [...zeros], sigma: 0 }
  }
  let best = { alpha: 0.3, sse: Number.POSITIVE_INFINITY, mean: series[0]!, errors: [] as number[] }
  for (let alpha = 0.05; alpha <= 1.0001; alpha += 0.05) {
    let mean = series[0]!
    let sse = 0
    const errors: number[] = []
    for (let i = 1; i < series.length; i++) {
      const e = series[i]! - mean
      errors.push(e)
      sse += e * e
      mean += alpha * e
    }
    if (sse < best.sse) best = { alpha, sse, mean, errors }
  }
  const sigma = best.errors.length > 1 ? Math.sqrt(best.sse / (best.errors.length - 1)) : 0
  const point = new Array<number>(horizon).fill(best.mean)
  const half = point.map((_, i) => z * sigma * Math.sqrt(1 + i * best.alpha * best.alpha))
  return {
    method: 'ewma',
    point,
    lower: point.map((p, i) => p - half[i]!),
    upper: point.map((p, i) => p + half[i]!),
    sigma,
  }
}

/**
 * Repeats the last observed day, for one to two days of history. Residuals are the day-over-day
 * differences; the k-th repeated day carries k times their variance.
 */
function seasonalNaiveForecast(series: readonly number[], horizon: number, z: number): Forecast {
  const n = series.length
  const diffs: number[] = []
  for (let i = HOURS_PER_DAY; i < n; i++) diffs.push(series[i]! - series[i - HOURS_PER_DAY]!)
  const sigma =
    diffs.length > 1
      ? Math.sqrt(diffs.reduce((s, d) => s + d * d, 0) / diffs.length)
      : ewmaForecast(series, 1, z).sigma
  const point: number[] = []
  const lower: number[] = []
  const upper: number[] = []
  for (let h = 1; h <= horizon; h++) {
    const value = series[n - HOURS_PER_DAY + ((h - 1) % HOURS_PER_DAY)]!
    const half = z * sigma * Math.sqrt(Math.floor((h - 1) / HOURS_PER_DAY) + 1)
    point.push(value)
    lower.push(value - half)
    upper.push(value + half)
  }
  return { method: 'seasonal-naive', point, lower, upper, sigma }
}

/**
 * Forecasts `horizon` hours after an hourly `series` (oldest first): double-seasonal Holt-Winters from two
 * weeks of history, daily from two days, seasonal-naive from one day, otherwise an exponentially weighted
 * mean.
 */
export function forecast(
  series: readonly number[],
  horizon: number,
  options: ForecastOptions = {},
): Forecast {
  assertFinite(series)
  const z = options.z ?? 1.96
  const method = chooseMethod(series.length, options.seasonality)
  if (method !== null) return forecastFromState(fitHoltWinters(series, options.seasonality), horizon, options)
  const fallback =
    series.length >= HOURS_PER_DAY
      ? seasonalNaiveForecast(series, horizon, z)
      : ewmaForecast(series, horizon, z)
  return (options.nonNegative ?? true) ? clampForecast(fallback) : fallback
}
