import { describe, expect, it } from 'vitest'
import { admissionStage, cohortPosition, expectedStageStart, failureStats } from '../rollout-schedule.ts'

const STAGES = [
  { percent: 1, durationMs: 1000 },
  { percent: 10, durationMs: 2000 },
  { percent: 50, durationMs: 4000 },
  { percent: 100, durationMs: 8000 },
]

describe('cohort placement', () => {
  const ids = Array.from({ length: 10_000 }, (_, i) => `device-${i.toString(36).padStart(6, '0')}`)

  it('is deterministic, in [0, 1), and salted by release', () => {
    const a = ids.map((id) => cohortPosition('app', '2.0.0', id))
    expect(ids.map((id) => cohortPosition('app', '2.0.0', id))).toEqual(a)
    expect(a.every((p) => p >= 0 && p < 1)).toBe(true)
    // Another release (or artifact) orders devices differently: nobody is always the canary.
    const b = ids.map((id) => cohortPosition('app', '2.0.1', id))
    const bothInFirstTenth = a.filter((p, i) => p < 0.1 && (b[i] ?? 1) < 0.1).length
    // Independent orders share ~1 % of ids in both first tenths (100 of 10k); the same order would share 10 %.
    expect(bothInFirstTenth).toBeGreaterThan(50)
    expect(bothInFirstTenth).toBeLessThan(160)
    expect(cohortPosition('app', '2.0.0', 'x1234567')).not.toBe(cohortPosition('other', '2.0.0', 'x1234567'))
  })

  it('admits about the stage share of 10k ids, and every earlier cohort stays in', () => {
    const stages = ids.map((id) => admissionStage(STAGES, cohortPosition('app', '2.0.0', id)))
    for (const [index, stage] of STAGES.entries()) {
      const share = stages.filter((s) => s !== null && s <= index).length / ids.length
      // Binomial sd at 10k ids is at most 0.5 %; 3 sd.
      expect(Math.abs(share - stage.percent / 100)).toBeLessThan(0.015)
    }
    expect(stages.every((s) => s !== null)).toBe(true)
    expect(admissionStage(STAGES, 0.005)).toBe(0)
    expect(admissionStage(STAGES, 0.01)).toBe(1)
    expect(admissionStage(STAGES.slice(0, 3), 0.7)).toBeNull()
    expect(
      admissionStage(
        [
          { percent: 0, durationMs: 1000 },
          { percent: 100, durationMs: 1000 },
        ],
        0,
      ),
    ).toBe(1)
  })
})

describe('schedule and statistics', () => {
  it('expects a stage at the pending change plus the durations in between', () => {
    expect(expectedStageStart(STAGES, null, 100, 0)).toBe(100)
    expect(expectedStageStart(STAGES, null, 100, 2)).toBe(3100)
    expect(expectedStageStart(STAGES, 1, 5000, 2)).toBe(5000)
    expect(expectedStageStart(STAGES, 1, 5000, 3)).toBe(9000)
  })

  it('decides on the Wilson lower bound, with a minimum sample', () => {
    const few = failureStats({ installed: 1, failed: 1, 'rolled-back': 0 }, 0.05, 5)
    expect(few).toMatchObject({ total: 2, failures: 1, failureRate: 0.5, decision: 'insufficient-data' })
    expect(failureStats({ installed: 95, failed: 3, 'rolled-back': 2 }, 0.05, 20).decision).toBe('continue')
    const bad = failureStats({ installed: 30, failed: 10, 'rolled-back': 10 }, 0.05, 20)
    expect(bad.decision).toBe('halt')
    expect(bad.interval.lower).toBeGreaterThan(0.05)
    expect(bad.interval.upper).toBeLessThan(1)
    // One failure is one device (each counts once): never a halt on its own, however strict the limit.
    const lone = failureStats({ installed: 19, failed: 1, 'rolled-back': 0 }, 0.005, 20)
    expect(lone.interval.lower).toBeGreaterThan(0.005)
    expect(lone.decision).toBe('continue')
    expect(failureStats({ installed: 18, failed: 1, 'rolled-back': 1 }, 0.005, 20).decision).toBe('halt')
  })
})
