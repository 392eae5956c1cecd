/**
 * Small statistics used by rollouts and forecasting: Wilson intervals for failure-rate halts, Thompson
 * sampling over Beta posteriors for picking thresholds, and sMAPE for scoring forecasts.
 */
import type { Rng } from './random.ts'
import { normal } from './random.ts'

/** A two-sided binomial confidence interval for a proportion. */
export interface Interval {
  lower: number
  upper: number
  /** The Wilson centre, pulled towards 1/2 for small samples (not the raw ratio). */
  center: number
}

/**
 * Wilson score interval for `successes` out of `trials`. Preferred over the normal approximation because it
 * stays inside [0, 1] and behaves at 0 or n successes, which is exactly the rollout case (0 failures so far).
 * `z` defaults to 1.96 (95 %). With 0 trials the interval is the whole [0, 1].
 */
export function wilsonInterval(successes: number, trials: number, z = 1.96): Interval {
  if (!(trials > 0)) return { lower: 0, upper: 1, center: 0.5 }
  const p = Math.min(1, Math.max(0, successes / trials))
  const z2 = z * z
  const denom = 1 + z2 / trials
  const center = (p + z2 / (2 * trials)) / denom
  const half = (z * Math.sqrt((p * (1 - p)) / trials + z2 / (4 * trials * trials))) / denom
  return { lower: Math.max(0, center - half), upper: Math.min(1, center + half), center }
}

/** Outcome of a failure-rate check: keep going, stop the rollout, or not enough data to say. */
export type HaltDecision = 'insufficient-data' | 'halt' | 'continue'

export interface HaltCheck {
  failures: number
  total: number
  /** The failure rate the rollout must stay below, e.g. 0.02. */
  maxFailureRate: number
  /** Below this many observations no decision is made: a couple of early failures must not halt. */
  minSamples: number
  z?: number
}

/**
 * Halts only when even the optimistic (lower) Wilson bound exceeds the allowed rate, so a halt means "the
 * failure rate is above the limit with ~97.5 % one-sided confidence", not "we saw a bad streak".
 */
export function failureRateDecision(check: HaltCheck): HaltDecision {
  if (check.total < check.minSamples) return 'insufficient-data'
  const { lower } = wilsonInterval(check.failures, check.total, check.z ?? 1.96)
  return lower > check.maxFailureRate ? 'halt' : 'continue'
}

/**
 * Gamma(shape, 1) by Marsaglia-Tsang: a rejection sampler with ~98 % acceptance for shape >= 1. For
 * shape < 1 we draw Gamma(shape + 1) and scale by U^(1/shape), the standard boost.
 */
export function sampleGamma(shape: number, rng: Rng): number {
  if (!(shape > 0)) throw new RangeError(`gamma shape must be > 0, got ${shape}`)
  if (shape < 1) {
    const u = 1 - rng()
    return sampleGamma(shape + 1, rng) * u ** (1 / shape)
  }
  const d = shape - 1 / 3
  const c = 1 / Math.sqrt(9 * d)
  for (;;) {
    let x: number
    let v: number
    do {
      x = normal(rng)
      v = 1 + c * x
    } while (v <= 0)
    v = v * v * v
    const u = 1 - rng()
    if (u < 1 - 0.0331 * x * x * x * x) return d * v
    if (Math.log(u) < 0.5 * x * x + d * (1 - v + Math.log(v))) return d * v
  }
}

/** Beta(a, b) as X / (X + Y) with X ~ Gamma(a), Y ~ Gamma(b). */
export function sampleBeta(a: number, b: number, rng: Rng): number {
  const x = sampleGamma(a, rng)
  const y = sampleGamma(b, rng)
  return x / (x + y)
}

/**
 * One arm of a Bernoulli bandit, e.g. one candidate threshold. JSON-friendly so a Durable Object can store
 * the whole bandit as an array.
 */
export interface BetaArm {
  id: string
  successes: number
  failures: number
}

export interface BetaPrior {
  alpha: number
  beta: number
}

/**
 * Thompson sampling: draw one plausible success rate per arm from its Beta posterior and play the best
 * draw. Exploration falls out of posterior width, so no epsilon to tune. Returns the chosen arm's index
 * (-1 for no arms). Ties go to the lower index so runs replay exactly.
 */
export function thompsonSelect(
  arms: readonly BetaArm[],
  rng: Rng,
  prior: BetaPrior = { alpha: 1, beta: 1 },
): number {
  let best = -1
  let bestDraw = Number.NEGATIVE_INFINITY
  arms.forEach((arm, i) => {
    const draw = sampleBeta(prior.alpha + arm.successes, prior.beta + arm.failures, rng)
    if (draw > bestDraw) {
      bestDraw = draw
      best = i
    }
  })
  return best
}

/** Returns a copy of `arms` with one outcome recorded on the arm `id` (unknown ids are ignored). */
export function recordArmOutcome(arms: readonly BetaArm[], id: string, success: boolean): BetaArm[] {
  return arms.map((arm) =>
    arm.id !== id
      ? arm
      : {
          ...arm,
          successes: arm.successes + (success ? 1 : 0),
          failures: arm.failures + (success ? 0 : 1),
        },
  )
}

/**
 * Symmetric mean absolute percentage error in percent (0..200). Symmetric so over- and under-forecasting
 * hourly request counts weigh alike; a pair where both values are 0 counts as a perfect hit rather than NaN.
 */
export function smape(actual: readonly number[], forecast: readonly number[]): number {
  const n = Math.min(actual.length, forecast.length)
  if (n === 0) return 0
  let sum = 0
  for (let i = 0; i < n; i++) {
    const a = actual[i]!
    const f = forecast[i]!
    const denom = Math.abs(a) + Math.abs(f)
    if (denom > 0) sum += (2 * Math.abs(a - f)) / denom
  }
  return (100 * sum) / n
}
