import { describe, expect, it } from 'vitest'
import {
  applyHoltWinters,
  chooseMethod,
  fitHoltWinters,
  forecast,
  forecastFromState,
  updateHoltWinters,
} from './holt-winters.ts'
import { mulberry32, normal } from './random.ts'
import { smape } from './stats.ts'

/**
 * Hourly traffic with a known shape: base 200, +0.05/h trend, a daily sine (amplitude 60), weekends at
 * 60 % of weekday traffic in working hours, Gaussian noise (std `noise`). Deterministic per seed.
 */
function synthetic(hours: number, seed: number, noise = 8): number[] {
  const rng = mulberry32(seed)
  const out: number[] = []
  for (let t = 0; t < hours; t++) {
    const hour = t % 24
    const weekend = Math.floor(t / 24) % 7 >= 5
    const daily = 60 * Math.sin((2 * Math.PI * (hour - 6)) / 24)
    const weekly = weekend && hour >= 8 && hour < 20 ? -50 : 0
    out.push(200 + 0.05 * t + daily + weekly + normal(rng, 0, noise))
  }
  return out
}

describe('forecast (Holt-Winters)', () => {
  it('recovers daily + weekly seasonality: sMAPE < 10 % on the next 24 h and next week', () => {
    const full = synthetic(5 * 168, 42)
    const history = full.slice(0, 4 * 168)
    const future = full.slice(4 * 168)
    const f = forecast(history, 168)
    expect(f.method).toBe('double-seasonal')
    const day = smape(future.slice(0, 24), f.point.slice(0, 24))
    const week = smape(future, f.point)
    console.info(`double-seasonal sMAPE next 24h=${day.toFixed(2)}% next 168h=${week.toFixed(2)}%`)
    expect(day).toBeLessThan(10)
    expect(week).toBeLessThan(10)
  })

  it('the weekly component matters: daily-only does worse over the weekend', () => {
    const full = synthetic(5 * 168, 7)
    const history = full.slice(0, 4 * 168)
    const future = full.slice(4 * 168)
    const double = smape(future, forecast(history, 168).point)
    const daily = smape(future, forecast(history, 168, { seasonality: 'daily' }).point)
    console.info(`sMAPE over a week: double=${double.toFixed(2)}% daily-only=${daily.toFixed(2)}%`)
    expect(double).toBeLessThan(daily)
  })

  it('uses daily seasonality from 2 days of history, still within 10 % on a weekday', () => {
    const full = synthetic(4 * 24, 3)
    const f = forecast(full.slice(0, 3 * 24), 24)
    expect(f.method).toBe('daily-seasonal')
    expect(smape(full.slice(3 * 24), f.point)).toBeLessThan(10)
  })

  it('intervals widen with horizon and cover most of the truth', () => {
    const full = synthetic(5 * 168, 11)
    const f = forecast(full.slice(0, 4 * 168), 168)
    const width = (i: number) => f.upper[i]! - f.lower[i]!
    expect(width(167)).toBeGreaterThan(width(0))
    for (let i = 1; i < 168; i++) expect(width(i)).toBeGreaterThanOrEqual(width(i - 1) - 1e-9)
    const future = full.slice(4 * 168)
    const covered = future.filter((y, i) => y >= f.lower[i]! && y <= f.upper[i]!).length / future.length
    expect(covered).toBeGreaterThan(0.85)
    expect(f.sigma).toBeGreaterThan(4)
    expect(f.sigma).toBeLessThan(16)
  })

  it('falls back for short histories', () => {
    expect(chooseMethod(47)).toBeNull()
    expect(chooseMethod(48)).toBe('daily-seasonal')
    expect(chooseMethod(335)).toBe('daily-seasonal')
    expect(chooseMethod(336)).toBe('double-seasonal')

    const day = synthetic(30, 5)
    const naive = forecast(day, 30)
    expect(naive.method).toBe('seasonal-naive')
    expect(naive.point[0]).toBe(day[6])
    expect(naive.point[24]).toBe(day[6])
    expect(naive.upper[24]! - naive.lower[24]!).toBeGreaterThan(naive.upper[0]! - naive.lower[0]!)

    const flat = forecast([10, 12, 11, 9, 10, 11], 3)
    expect(flat.method).toBe('ewma')
    expect(flat.point[0]).toBeGreaterThan(9)
    expect(flat.point[0]).toBeLessThan(12)
    expect(forecast([], 2).point).toEqual([0, 0])
    expect(() => forecast([1, Number.NaN, 3], 2)).toThrow(RangeError)
  })

  it('clamps at zero by default, not when asked', () => {
    const falling = Array.from({ length: 96 }, (_, t) => 100 - t + 10 * Math.sin((2 * Math.PI * t) / 24))
    expect(Math.min(...forecast(falling, 48).point)).toBeGreaterThanOrEqual(0)
    expect(Math.min(...forecast(falling, 48, { nonNegative: false }).point)).toBeLessThan(0)
  })

  it('state is JSON and incremental updates match a forecast from the extended state', () => {
    const full = synthetic(3 * 168, 9)
    const state = fitHoltWinters(full.slice(0, 2 * 168))
    const roundTripped = JSON.parse(JSON.stringify(state)) as typeof state
    let updated = roundTripped
    for (const y of full.slice(2 * 168, 2 * 168 + 24)) updated = updateHoltWinters(updated, y)
    expect(updated.t).toBe(2 * 168 + 24)
    expect(state.t).toBe(2 * 168)
    const f = forecastFromState(updated, 24)
    expect(smape(full.slice(2 * 168 + 24, 2 * 168 + 48), f.point)).toBeLessThan(10)
  })

  it('applyHoltWinters reuses fitted weights on a longer history without refitting', () => {
    const full = synthetic(4 * 168, 21)
    const fitted = fitHoltWinters(full.slice(0, 3 * 168))
    const reused = applyHoltWinters(full.slice(0, 3 * 168 + 48), fitted.params, fitted.method)
    expect(reused.params).toEqual(fitted.params)
    expect(reused.t).toBe(3 * 168 + 48)
    const f = forecastFromState(reused, 24)
    expect(smape(full.slice(3 * 168 + 48, 3 * 168 + 72), f.point)).toBeLessThan(10)
    // Daily-only history: the weekly weight is ignored, not applied to missing weekly components.
    const short = applyHoltWinters(full.slice(0, 100), fitted.params, 'double-seasonal')
    expect(short.method).toBe('daily-seasonal')
    expect(short.params.delta).toBe(0)
    expect(() => applyHoltWinters(full.slice(0, 10), fitted.params, 'daily-seasonal')).toThrow(RangeError)
  })
})
