import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { mulberry32, normal } from './random.ts'
import {
  banditReward,
  FORECAST_PEAK_MULTIPLE,
  forecastDemand,
  forecastZone,
  HOUR_MS,
  hourlySeries,
  hourOf,
  pickThreshold,
  recordThresholdReward,
  thresholdArms,
} from './shard-feedback.ts'
import { smape } from './stats.ts'

/** Hourly requests of one dependency in one zone: daily cycle, weekday/weekend, noise. */
function demand(hours: number, seed: number, offsetHours = 0): number[] {
  const rng = mulberry32(seed)
  return Array.from({ length: hours }, (_, t) => {
    const local = (t + offsetHours) % 24
    const weekend = Math.floor((t + offsetHours) / 24) % 7 >= 5
    const base = 40 + 30 * Math.sin((2 * Math.PI * (local - 8)) / 24) - (weekend ? 20 : 0)
    return Math.max(0, base + normal(rng, 0, 3))
  })
}

describe('shard feedback', () => {
  it('gap-fills hourly series and aligns hours', () => {
    const t0 = Date.UTC(2026, 0, 5)
    expect(hourOf(t0 + 59 * 60_000)).toBe(t0)
    const s = hourlySeries(
      [
        { hour: t0 + HOUR_MS, value: 3 },
        { hour: t0 + HOUR_MS, value: 2 },
        { hour: t0 + 5 * HOUR_MS, value: 9 },
        { hour: t0 - HOUR_MS, value: 100 },
      ],
      t0,
      t0 + 4 * HOUR_MS,
    )
    expect(s).toEqual([0, 5, 0, 0])
  })

  it('reuses fitted weights until told to refit, and both forecast the seasonal demand', () => {
    const full = demand(3 * 168 + 24, 4)
    const history = full.slice(0, 3 * 168)
    const fitted = forecastDemand(history, 24, null, true)
    expect(fitted.refitted).toBe(true)
    expect(fitted.model?.method).toBe('double-seasonal')
    const truth = full.slice(3 * 168)
    expect(smape(truth, fitted.point)).toBeLessThan(12)

    const reused = forecastDemand(full.slice(0, 3 * 168 + 12), 12, fitted.model ?? null, false)
    expect(reused.refitted).toBe(false)
    expect(reused.model?.params).toEqual(fitted.model?.params)
    expect(smape(truth.slice(12), reused.point)).toBeLessThan(12)

    // Short histories fall back, all-zero histories forecast zero without fitting.
    expect(forecastDemand([1, 2, 3], 2, null, true).method).toBe('ewma')
    expect(forecastDemand(new Array<number>(100).fill(0), 3, null, true).point).toEqual([0, 0, 0])
  })

  it('a zone round lends the zone weights, refits hottest first within the budget', () => {
    const entries = [0, 1, 2].map((k) => ({ entry: `e${k}`, series: demand(2 * 168, 30 + k), model: null }))
    const totals = entries[0]!.series.map((_, t) => entries.reduce((s, e) => s + (e.series[t] ?? 0), 0))
    const first = forecastZone({ totals, zoneModel: null, entries, horizon: 6, refit: false, refitBudget: 5 })
    // No refit asked: only the missing zone model is fitted; dependencies borrow it.
    expect(first.refits).toBe(1)
    expect(first.entries.every((e) => !e.refitted && e.model === undefined)).toBe(true)
    expect(first.zoneModel).not.toBeNull()
    const refit = forecastZone({
      totals,
      zoneModel: first.zoneModel,
      entries,
      horizon: 6,
      refit: true,
      refitBudget: 2,
    })
    expect(refit.entries.map((e) => e.refitted)).toEqual([true, true, false])
    expect(refit.refitBudgetLeft).toBe(0)
    expect(refit.refits).toBe(3)
    expect(refit.entries[0]?.model?.method).toBe('double-seasonal')
  })

  it('bandit reward is hit ratio minus the price of warm fills, in [0, 1]', () => {
    expect(banditReward({ hits: 8, requests: 10, warmFillBytes: 0, bytesServed: 100, lambda: 1 })).toBe(0.8)
    expect(
      banditReward({ hits: 8, requests: 10, warmFillBytes: 50, bytesServed: 100, lambda: 1 }),
    ).toBeCloseTo(0.3)
    expect(
      banditReward({ hits: 8, requests: 10, warmFillBytes: 50, bytesServed: 100, lambda: 0.5 }),
    ).toBeCloseTo(0.55)
    expect(banditReward({ hits: 1, requests: 10, warmFillBytes: 500, bytesServed: 100, lambda: 1 })).toBe(0)
    // Warming with nothing served to weigh it against costs the whole λ.
    expect(banditReward({ hits: 10, requests: 10, warmFillBytes: 5, bytesServed: 0, lambda: 0.25 })).toBe(
      0.75,
    )
    expect(banditReward({ hits: 0, requests: 0, warmFillBytes: 5, bytesServed: 0, lambda: 1 })).toBeNull()
  })

  it('Thompson sampling settles on the threshold with the best reward', () => {
    // Simulated environment: low thresholds prefetch too much, high ones miss; 2 is best.
    const meanReward: Record<string, number> = { '0.5': 0.45, '1': 0.55, '2': 0.7, '5': 0.5, '10': 0.3 }
    const rng = mulberry32(12)
    let arms = thresholdArms([0.5, 1, 2, 5, 10])
    const plays: Record<string, number> = {}
    for (let round = 0; round < 600; round++) {
      const arm = pickThreshold(arms, rng)
      plays[arm.id] = (plays[arm.id] ?? 0) + 1
      const reward = Math.min(1, Math.max(0, (meanReward[arm.id] ?? 0) + normal(rng, 0, 0.1)))
      arms = recordThresholdReward(arms, arm.id, reward, rng)
    }
    console.info(`bandit plays ${JSON.stringify(plays)}`)
    expect(plays['2'] ?? 0).toBeGreaterThan(300)
    expect(arms.map((a) => a.threshold)).toEqual([0.5, 1, 2, 5, 10])
  })

  it('makes one arm of a threshold listed twice', () => {
    expect(thresholdArms([1, 2, 1, 2, 5]).map((a) => a.id)).toEqual(['1', '2', '5'])
  })
})

describe('forecastDemand on fleet-shaped series (robustness)', () => {
  /**
   * What the planner's demand table can hold over four weeks: hourly sums of rows bounded at 10^12 (many
   * reports per hour), gaps (zeros), single spikes, steps, all-zero, at every history length where the
   * model changes (0, 1, 23/24/25, 47/48/49, 335/336/337, 672). Reused weights anywhere in [0, 1]^4, as a
   * zone lends them to a dependency of another shape. The forecast must stay finite, non-negative and
   * within a bounded multiple of the history (no divergent recursion reaching the plan as Infinity/NaN).
   */
  it('stays finite, non-negative and bounded for any history and any stored weights', () => {
    const lengths = [0, 1, 23, 24, 25, 47, 48, 49, 335, 336, 337, 672]
    const value = fc.oneof(
      fc.constant(0),
      fc.integer({ min: 0, max: 1000 }),
      fc.double({ min: 0, max: 1e17, noNaN: true, noDefaultInfinity: true }),
    )
    // The box's edges and corners are where the recursion is least damped; doubles fill the inside.
    const unit = fc.oneof(
      fc.constantFrom(0, 0.01, 0.5, 0.9, 0.99, 1),
      fc.double({ min: 0, max: 1, noNaN: true }),
    )
    fc.assert(
      fc.property(
        fc.constantFrom(...lengths),
        fc.oneof(fc.array(value, { minLength: 1, maxLength: 8 }), fc.constant([0]), fc.constant([1e17])),
        fc.record({ alpha: unit.map((a) => Math.max(0.01, a)), beta: unit, gamma: unit, delta: unit }),
        fc.constantFrom('daily-seasonal' as const, 'double-seasonal' as const),
        fc.boolean(),
        (n, pattern, params, method, refit) => {
          // A pattern repeated with gaps: runs of the pattern, then as many zero hours.
          const series = Array.from({ length: n }, (_, i) =>
            Math.floor(i / pattern.length) % 3 === 2 ? 0 : pattern[i % pattern.length]!,
          )
          const f = forecastDemand(series, 168, { params, method }, refit)
          const peak = Math.max(0, ...series)
          for (const v of [...f.point, ...f.upper]) {
            expect(Number.isFinite(v)).toBe(true)
            expect(v).toBeGreaterThanOrEqual(0)
          }
          for (const v of f.point) expect(v).toBeLessThanOrEqual(1e6 * peak + 1e-9)
        },
      ),
      { numRuns: 250, seed: 20261126 },
    )
  })
})

describe('forecastDemand stays within the recent demand', () => {
  /**
   * Weights reused from another series (a zone lends its total's weights to a dependency of another
   * shape) can make the recursion amplify a spike or a step: a reviewer measured ~2000x the history
   * until the next refit. Whatever the history, the weights and refit or not, no point or upper bound
   * may exceed FORECAST_PEAK_MULTIPLE x the peak of the last week of the history.
   */
  it('caps reused weights that amplify a month-old spike (was 3 million requests/hour from a peak of 2)', () => {
    // Four weeks of 1–2 requests/hour with one spike of 1000 in the first week; weights with a strong trend
    // and seasonal gain, reused without a refit.
    const series = Array.from({ length: 672 }, (_, i) => (i === 63 ? 1000 : i % 24 < 8 ? 2 : 1))
    const params = { alpha: 0.2, beta: 0.8, gamma: 1, delta: 0 }
    const f = forecastDemand(series, 6, { params, method: 'double-seasonal' }, false)
    expect(f.refitted).toBe(false)
    expect(Math.max(...f.point)).toBeLessThanOrEqual(FORECAST_PEAK_MULTIPLE * 2)
    expect(Math.max(...f.upper)).toBeLessThanOrEqual(FORECAST_PEAK_MULTIPLE * 2)
  })

  it("bounds every forecast by a multiple of the last week's peak, for any history and weights", () => {
    const value = fc.oneof(
      fc.constant(0),
      fc.integer({ min: 0, max: 1000 }),
      fc.double({ min: 0, max: 1e12, noNaN: true, noDefaultInfinity: true }),
    )
    const unit = fc.oneof(
      fc.constantFrom(0, 0.01, 0.5, 0.9, 0.99, 1),
      fc.double({ min: 0, max: 1, noNaN: true }),
    )
    fc.assert(
      fc.property(
        fc.constantFrom(1, 24, 47, 48, 49, 200, 335, 336, 337, 500, 672),
        fc.array(value, { minLength: 1, maxLength: 12 }),
        fc.nat({ max: 671 }),
        fc.record({ alpha: unit.map((a) => Math.max(0.01, a)), beta: unit, gamma: unit, delta: unit }),
        fc.constantFrom('daily-seasonal' as const, 'double-seasonal' as const),
        fc.boolean(),
        fc.integer({ min: 1, max: 168 }),
        (n, pattern, stepAt, params, method, refit, horizon) => {
          // The pattern repeated, and from `stepAt` on scaled down a thousandfold (a step down after a busy
          // period: what amplified the reused recursion), so the last week can be far below the history.
          const series = Array.from({ length: n }, (_, i) => {
            const v = pattern[i % pattern.length] ?? 0
            return i >= stepAt ? v / 1000 : v
          })
          const f = forecastDemand(series, horizon, { params, method }, refit)
          const recentPeak = Math.max(0, ...series.slice(-168))
          const bound = FORECAST_PEAK_MULTIPLE * recentPeak
          expect(f.point.length).toBe(horizon)
          for (const v of [...f.point, ...f.upper]) {
            expect(Number.isFinite(v)).toBe(true)
            expect(v).toBeGreaterThanOrEqual(0)
            expect(v).toBeLessThanOrEqual(bound)
          }
        },
      ),
      { numRuns: 400, seed: 20261126 },
    )
  })
})
