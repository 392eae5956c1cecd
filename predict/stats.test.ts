import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { mulberry32 } from './random.ts'
import {
  failureRateDecision,
  recordArmOutcome,
  sampleBeta,
  sampleGamma,
  smape,
  thompsonSelect,
  wilsonInterval,
} from './stats.ts'

describe('wilsonInterval', () => {
  it('matches reference values', () => {
    const a = wilsonInterval(0, 10)
    expect(a.lower).toBe(0)
    expect(a.upper).toBeCloseTo(0.2775, 3)
    const b = wilsonInterval(5, 10)
    expect(b.lower).toBeCloseTo(0.2366, 3)
    expect(b.upper).toBeCloseTo(0.7634, 3)
    expect(wilsonInterval(0, 0)).toEqual({ lower: 0, upper: 1, center: 0.5 })
  })

  it('always contains the observed rate and stays inside [0, 1]', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 5000 }),
        fc.double({ min: 0, max: 1, noNaN: true }),
        (n, share) => {
          const k = Math.round(share * n)
          const { lower, upper, center } = wilsonInterval(k, n)
          expect(lower).toBeGreaterThanOrEqual(0)
          expect(upper).toBeLessThanOrEqual(1)
          expect(lower).toBeLessThanOrEqual(k / n + 1e-12)
          expect(upper).toBeGreaterThanOrEqual(k / n - 1e-12)
          expect(center).toBeGreaterThanOrEqual(lower)
        },
      ),
      { numRuns: 200, seed: 2 },
    )
  })

  it('drives rollout halts with a minimum sample size', () => {
    const base = { maxFailureRate: 0.02, minSamples: 100 }
    expect(failureRateDecision({ ...base, failures: 5, total: 20 })).toBe('insufficient-data')
    expect(failureRateDecision({ ...base, failures: 3, total: 200 })).toBe('continue')
    expect(failureRateDecision({ ...base, failures: 15, total: 200 })).toBe('halt')
  })
})

describe('Gamma / Beta samplers', () => {
  it('have the right moments', () => {
    const rng = mulberry32(1)
    for (const shape of [0.5, 2, 9]) {
      const xs = Array.from({ length: 20_000 }, () => sampleGamma(shape, rng))
      const mean = xs.reduce((s, x) => s + x, 0) / xs.length
      const variance = xs.reduce((s, x) => s + (x - mean) ** 2, 0) / xs.length
      expect(Math.abs(mean - shape) / shape).toBeLessThan(0.03)
      expect(Math.abs(variance - shape) / shape).toBeLessThan(0.08)
    }
    const bs = Array.from({ length: 20_000 }, () => sampleBeta(2, 6, rng))
    expect(bs.reduce((s, x) => s + x, 0) / bs.length).toBeCloseTo(0.25, 2)
    expect(Math.min(...bs)).toBeGreaterThanOrEqual(0)
    expect(Math.max(...bs)).toBeLessThanOrEqual(1)
  })
})

describe('thompsonSelect', () => {
  it('converges on the best threshold and is reproducible from its seed', () => {
    const truth: Record<string, number> = { low: 0.3, mid: 0.5, high: 0.8 }
    const run = (seed: number) => {
      const rng = mulberry32(seed)
      let arms = Object.keys(truth).map((id) => ({ id, successes: 0, failures: 0 }))
      const picks: string[] = []
      for (let i = 0; i < 500; i++) {
        const arm = arms[thompsonSelect(arms, rng)]!
        picks.push(arm.id)
        arms = recordArmOutcome(arms, arm.id, rng() < truth[arm.id]!)
      }
      return picks
    }
    const picks = run(123)
    expect(picks).toEqual(run(123))
    expect(picks.slice(-200).filter((p) => p === 'high').length).toBeGreaterThan(160)
    expect(thompsonSelect([], mulberry32(1))).toBe(-1)
  })
})

describe('smape', () => {
  it('is symmetric, bounded and treats 0/0 as exact', () => {
    expect(smape([100], [110])).toBeCloseTo(smape([110], [100]), 12)
    expect(smape([0, 0], [0, 0])).toBe(0)
    expect(smape([1], [0])).toBe(200)
    expect(smape([100, 100], [100, 50])).toBeCloseTo(33.333, 2)
  })
})
