import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import type { AccessEvent } from './access-model.ts'
import {
  artifactCount,
  compactSummary,
  emptySummary,
  hourOfWeek,
  mergeSummaries,
  nextUses,
  profileConfidence,
  recordAccesses,
  seasonalFactor,
} from './access-model.ts'
import { bumpCounter, decayedCount, rateFromDecayedCount } from './decay.ts'

const HOUR = 3_600_000
const DAY = 24 * HOUR
const MONDAY = Date.UTC(2026, 10, 23)

describe('decayed counters', () => {
  it('halve every half-life and ignore clock skew', () => {
    expect(decayedCount(8, 0, 2 * DAY, DAY)).toBeCloseTo(2, 12)
    expect(decayedCount(8, 10, 5, DAY)).toBe(8)
    const c = bumpCounter(bumpCounter(undefined, 0, DAY), DAY, DAY)
    expect(c).toEqual({ count: 1.5, updatedAt: DAY })
    // A late event is weighed as of its own time.
    expect(bumpCounter(undefined, DAY, DAY, 1, 0).count).toBeCloseTo(0.5, 12)
  })

  it('steady-state count converts back to the event rate', () => {
    let c = bumpCounter(undefined, 0, DAY, 0)
    for (let t = HOUR; t <= 30 * DAY; t += HOUR) c = bumpCounter(c, t, DAY, 2)
    expect(rateFromDecayedCount(c.count, DAY) * HOUR).toBeCloseTo(2, 1)
  })
})

describe('hour-of-week profile', () => {
  it('maps Monday 00:00 UTC to 0 and Sunday 23:00 to 167', () => {
    expect(hourOfWeek(MONDAY)).toBe(0)
    expect(hourOfWeek(MONDAY + 13 * HOUR + 59 * 60_000)).toBe(13)
    expect(hourOfWeek(MONDAY - HOUR)).toBe(167)
    expect(hourOfWeek(0)).toBe(72)
  })

  it('gives busy hours a factor above 1, shrunk when data is thin', () => {
    const events: AccessEvent[] = []
    for (let week = 0; week < 2; week++)
      for (let h = 0; h < 168; h++)
        for (let i = 0; i < (h % 24 === 9 ? 30 : 5); i++)
          events.push({ artifact: 'a', at: MONDAY + week * 168 * HOUR + h * HOUR, session: `s${i}` })
    const now = MONDAY + 2 * 168 * HOUR
    const s = recordAccesses(emptySummary('eu', MONDAY), events, now)
    expect(seasonalFactor(s.profile, 9)).toBeGreaterThan(3)
    expect(seasonalFactor(s.profile, 3)).toBeLessThan(1)
    expect(profileConfidence(s.profile)).toBeGreaterThan(0.6)
    const thin = recordAccesses(emptySummary('eu', MONDAY), events.slice(0, 3), MONDAY)
    // Raw ratio would be 168 (all 3 requests in one bucket); the prior keeps it near 1.
    expect(seasonalFactor(thin.profile, 0)).toBeLessThan(2)
  })
})

describe('access summary', () => {
  const session = (id: string, start: number, ...artifacts: string[]): AccessEvent[] =>
    artifacts.map((artifact, i) => ({ artifact, at: start + i * 10 * 60_000, session: id }))

  it('learns transitions with counts and mean lag, per session and in time order', () => {
    const events = [
      ...session('s1', MONDAY, 'app', 'plugin'),
      ...session('s2', MONDAY, 'app', 'plugin'),
      ...session('s3', MONDAY, 'app', 'theme'),
      // Out-of-order delivery within a batch must not reverse the edge.
      ...session('s4', MONDAY, 'app', 'plugin').reverse(),
    ]
    const s = recordAccesses(emptySummary('eu', MONDAY), events, MONDAY + HOUR)
    const next = nextUses(s, 'app', MONDAY + HOUR)
    expect(next.map((n) => n.to)).toEqual(['plugin', 'theme'])
    expect(next[0]!.probability).toBeCloseTo(0.75, 2)
    expect(next[0]!.meanLagMs).toBe(10 * 60_000)
    expect(nextUses(s, 'plugin', MONDAY + HOUR)).toEqual([])
  })

  it('does not link uses further apart than maxLagMs', () => {
    const events: AccessEvent[] = [
      { artifact: 'a', at: MONDAY, session: 's' },
      { artifact: 'b', at: MONDAY + DAY, session: 's' },
    ]
    const s = recordAccesses(emptySummary('eu', MONDAY, { limits: { maxLagMs: HOUR } }), events, MONDAY + DAY)
    expect(s.transitions).toEqual([])
  })

  it('stays bounded, evicting the coldest artifacts and their transitions', () => {
    const events: AccessEvent[] = []
    for (let i = 0; i < 20; i++)
      for (let k = 0; k <= i; k++)
        events.push(...session(`s${i}-${k}`, MONDAY, `hot-${i}`, `hot-${(i + 1) % 20}`))
    const s = recordAccesses(
      emptySummary('eu', MONDAY, { limits: { maxArtifacts: 5, maxTransitionsPerArtifact: 1 } }),
      events,
      MONDAY + HOUR,
    )
    expect(s.artifacts).toHaveLength(5)
    // hot-i is used in i + 1 sessions as a source and i as a target: hot-19 is hottest.
    expect(s.artifacts.map((a) => a.artifact)).toEqual(['hot-19', 'hot-18', 'hot-17', 'hot-16', 'hot-15'])
    const kept = new Set(s.artifacts.map((a) => a.artifact))
    for (const t of s.transitions) expect(kept.has(t.from) && kept.has(t.to)).toBe(true)
  })

  it('merge is order-independent', () => {
    const event = fc.record({
      artifact: fc.constantFrom('a', 'b', 'c', 'd'),
      at: fc.integer({ min: MONDAY, max: MONDAY + 2 * DAY }),
      session: fc.constantFrom('s1', 's2', 's3'),
    })
    fc.assert(
      fc.property(fc.array(event, { maxLength: 20 }), fc.array(event, { maxLength: 20 }), (xs, ys) => {
        const now = MONDAY + 3 * DAY
        const x = recordAccesses(emptySummary('x', MONDAY), xs, now)
        const y = recordAccesses(emptySummary('y', MONDAY), ys, now)
        const xy = mergeSummaries('g', [x, y], now)
        const yx = mergeSummaries('g', [y, x], now)
        expect(yx.artifacts.map((a) => a.artifact)).toEqual(xy.artifacts.map((a) => a.artifact))
        xy.artifacts.forEach((a, i) => {
          expect(yx.artifacts[i]!.count).toBeCloseTo(a.count, 9)
        })
        expect(yx.transitions.length).toBe(xy.transitions.length)
      }),
      { numRuns: 50, seed: 3 },
    )
  })

  it('merging regions equals recording everything in one place, and survives JSON', () => {
    const eu = [...session('a', MONDAY, 'app', 'plugin'), ...session('b', MONDAY + HOUR, 'app', 'theme')]
    const us = [...session('c', MONDAY + 2 * HOUR, 'app', 'plugin', '__proto__')]
    const now = MONDAY + 5 * HOUR
    const euSummary = recordAccesses(emptySummary('eu', MONDAY), eu, now)
    const usSummary = JSON.parse(
      JSON.stringify(recordAccesses(emptySummary('us', MONDAY), us, now - HOUR)),
    ) as typeof euSummary
    const merged = mergeSummaries('global', [euSummary, usSummary], now)
    const direct = recordAccesses(emptySummary('global', MONDAY), [...eu, ...us], now)
    expect(artifactCount(merged, 'app', now)).toBeCloseTo(artifactCount(direct, 'app', now), 9)
    expect(artifactCount(merged, '__proto__', now)).toBeCloseTo(artifactCount(direct, '__proto__', now), 9)
    expect(Object.getPrototypeOf(merged.artifacts)).toBe(Array.prototype)
    expect(nextUses(merged, 'app', now)).toEqual(
      nextUses(direct, 'app', now).map((n) => ({ ...n, probability: expect.closeTo(n.probability, 9) })),
    )
    merged.profile.buckets.forEach((b, i) => {
      expect(b).toBeCloseTo(direct.profile.buckets[i]!, 9)
    })
    expect(compactSummary(merged, now).artifacts).toEqual(merged.artifacts)
  })
})
