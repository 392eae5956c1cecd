/**
 * The shard planner's feedback loop, pure: hourly demand series, forecasts that reuse fitted parameters
 * until the error says to refit, and a Thompson-sampling bandit over prefetch thresholds.
 */
import type { HoltWintersParams, HoltWintersState } from './holt-winters.ts'
import {
  applyHoltWinters,
  chooseMethod,
  fitHoltWinters,
  forecast,
  forecastFromState,
  HOURS_PER_WEEK,
} from './holt-winters.ts'
import type { Rng } from './random.ts'
import type { BetaArm } from './stats.ts'
import { recordArmOutcome, thompsonSelect } from './stats.ts'

export const HOUR_MS = 3_600_000
/**
 * No forecast hour exceeds this multiple of the last week's peak. Weights reused from another series (a
 * zone lends its total's to a dependency) can turn a spike or a step down into a recursion that amplifies
 * it (~2000x was measured) until the next refit; a real doubling within the horizon is already rare for
 * a dependency's hourly demand, so the cap only cuts what the history gives no ground for.
 */
export const FORECAST_PEAK_MULTIPLE = 2
/** Monday 2024-01-01 00:00 UTC: series start on a week boundary so seasonal slots mean the same hour. */
const WEEK_ANCHOR_MS = Date.UTC(2024, 0, 1)

/** Start of the hour containing `t`. */
export const hourOf = (t: number): number => Math.floor(t / HOUR_MS) * HOUR_MS

/**
 * The first hour of a series ending before `endHour` with at most `maxHours` values, moved to a Monday
 * 00:00 UTC so Holt-Winters' seasonal index t mod 168 is the hour of the week in every refit.
 */
export function seriesStart(endHour: number, maxHours: number): number {
  const earliest = endHour - maxHours * HOUR_MS
  const sinceAnchor = earliest - WEEK_ANCHOR_MS
  const weeks = Math.ceil(sinceAnchor / (HOURS_PER_WEEK * HOUR_MS))
  return WEEK_ANCHOR_MS + weeks * HOURS_PER_WEEK * HOUR_MS
}

/** Gap-filled hourly series [fromHour, toHour) from sparse (hour, value) points; missing hours are 0. */
export function hourlySeries(
  points: readonly { hour: number; value: number }[],
  fromHour: number,
  toHour: number,
): number[] {
  const n = Math.max(0, Math.round((toHour - fromHour) / HOUR_MS))
  const out = new Array<number>(n).fill(0)
  for (const p of points) {
    const i = Math.round((p.hour - fromHour) / HOUR_MS)
    if (i >= 0 && i < n) out[i]! += p.value
  }
  return out
}

/** A reusable model: fitted weights for a series, refit when the planner decides so. */
export interface DemandModel {
  params: HoltWintersParams
  method: HoltWintersState['method']
}

export interface DemandForecast {
  /** Point forecast per future hour. */
  point: number[]
  upper: number[]
  method: string
  /** Present when Holt-Winters was used: what to keep for the next round. */
  model?: DemandModel
  refitted: boolean
}

/**
 * Forecasts `horizon` hours after `series`. With a stored model and `refit` false the weights are reused
 * (a recursion pass, no optimisation); otherwise they are fitted by minimising one-step error. Short
 * histories use the fallbacks of `forecast` (seasonal naive, EWMA). Every hour's point and upper bound
 * are capped at FORECAST_PEAK_MULTIPLE x the peak of the last week of `series`.
 */
export function forecastDemand(
  series: readonly number[],
  horizon: number,
  model: DemandModel | null,
  refit: boolean,
): DemandForecast {
  const f = unboundedForecast(series, horizon, model, refit)
  let peak = 0
  for (let i = Math.max(0, series.length - HOURS_PER_WEEK); i < series.length; i++)
    peak = Math.max(peak, series[i] ?? 0)
  const cap = (xs: number[]) => xs.map((v) => Math.min(v, FORECAST_PEAK_MULTIPLE * peak))
  return { ...f, point: cap(f.point), upper: cap(f.upper) }
}

function unboundedForecast(
  series: readonly number[],
  horizon: number,
  model: DemandModel | null,
  refit: boolean,
): DemandForecast {
  const method = chooseMethod(series.length)
  if (method === null) {
    const f = forecast(series, horizon)
    return { point: f.point, upper: f.upper, method: f.method, refitted: false }
  }
  // An all-zero history forecasts zero; fitting it would only spend CPU.
  if (series.every((v) => v === 0)) {
    const zeros = new Array<number>(horizon).fill(0)
    return { point: zeros, upper: [...zeros], method: 'ewma', refitted: false }
  }
  const reuse = model !== null && !refit
  const state = reuse ? applyHoltWinters(series, model.params, model.method) : fitHoltWinters(series)
  const f = forecastFromState(state, horizon)
  return {
    point: f.point,
    upper: f.upper,
    method: f.method,
    model: { params: state.params, method: state.method },
    refitted: !reuse,
  }
}

export interface ZoneSeries {
  entry: string
  /** Gap-filled hourly requests of this dependency in the zone, same span as the zone totals. */
  series: readonly number[]
  /** Its own fitted weights, if it has been refit before. */
  model: DemandModel | null
}

export interface ZoneForecast {
  /** The zone total's weights after this round (fitted when missing or when refitting). */
  zoneModel: DemandModel | null
  /**
   * The zone total's forecast for the next hour: what the zone's error is scored on. Not the sum of the
   * dependencies' forecasts, which leaves out every dependency past the planner's per-round cap.
   */
  totalNext: number
  entries: { entry: string; point: number[]; refitted: boolean; model?: DemandModel }[]
  refits: number
  refitBudgetLeft: number
}

/**
 * One zone's round of the planner (durable-objects/shard-forecast.ts and bench/shards share it): the zone
 * total is forecast first and lends its weights to dependencies without their own; when `refit` is set
 * (the zone's error passed the threshold) the zone model and then dependencies, in the given order
 * (hottest first), are refit by minimising one-step error until `refitBudget` runs out. Everything else
 * reuses stored weights, a cheap recursion pass.
 */
export function forecastZone(input: {
  totals: readonly number[]
  zoneModel: DemandModel | null
  entries: readonly ZoneSeries[]
  horizon: number
  refit: boolean
  refitBudget: number
}): ZoneForecast {
  const zoneFit = forecastDemand(
    input.totals,
    input.horizon,
    input.zoneModel,
    input.refit || input.zoneModel === null,
  )
  let budget = input.refitBudget
  let refits = zoneFit.refitted ? 1 : 0
  const entries = input.entries.map((e) => {
    const f = forecastDemand(
      e.series,
      input.horizon,
      e.model ?? zoneFit.model ?? null,
      input.refit && budget > 0,
    )
    if (f.refitted) {
      budget--
      refits++
    }
    return {
      entry: e.entry,
      point: f.point,
      refitted: f.refitted,
      ...(f.refitted && f.model !== undefined ? { model: f.model } : {}),
    }
  })
  return {
    zoneModel: zoneFit.model ?? input.zoneModel,
    totalNext: zoneFit.point[0] ?? 0,
    entries,
    refits,
    refitBudgetLeft: budget,
  }
}

export const mean = (xs: readonly number[]): number =>
  xs.length === 0 ? 0 : xs.reduce((s, v) => s + v, 0) / xs.length

/**
 * Bandit reward in [0, 1]: hit ratio minus lambda times the warm-fill bytes per byte served, clamped.
 * Warm fills (the edge reading a zone's hot set into its caches, where not already cached) are the price
 * of the prefetch threshold the arm chose; replica copies are not charged, since placement never reads
 * the threshold. With nothing served the interval says nothing, so it is null (not recorded).
 */
export function banditReward(o: {
  hits: number
  requests: number
  warmFillBytes: number
  bytesServed: number
  lambda: number
}): number | null {
  if (!(o.requests > 0)) return null
  const filled = o.bytesServed > 0 ? o.warmFillBytes / o.bytesServed : o.warmFillBytes > 0 ? 1 : 0
  return Math.min(1, Math.max(0, o.hits / o.requests - o.lambda * filled))
}

export interface ThresholdArm extends BetaArm {
  threshold: number
}

/**
 * One arm per distinct threshold. A threshold the config lists twice is one arm: two arms with one id
 * would both take every reward that id earns and give it two draws in each pick, skewing the choice.
 */
export function thresholdArms(thresholds: readonly number[]): ThresholdArm[] {
  return [...new Set(thresholds)].map((t) => ({ id: String(t), threshold: t, successes: 0, failures: 0 }))
}

/** Thompson sampling over the thresholds; the arm to play for the next interval. */
export function pickThreshold(arms: readonly ThresholdArm[], rng: Rng): ThresholdArm {
  const i = thompsonSelect(arms, rng)
  return arms[Math.max(0, i)] as ThresholdArm
}

/**
 * Records a reward in [0, 1] on a Beta-Bernoulli arm with the Bernoulli trick (success with probability
 * = reward), which keeps Thompson sampling's guarantees for bounded rewards.
 */
export function recordThresholdReward(
  arms: readonly ThresholdArm[],
  id: string,
  reward: number,
  rng: Rng,
): ThresholdArm[] {
  const success = rng() < reward
  const updated = recordArmOutcome(arms, id, success)
  return updated.map((a, i) => ({ ...a, threshold: arms[i]!.threshold }))
}
