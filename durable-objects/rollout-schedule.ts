/**
 * The pure parts of a staged rollout: where a client sits in the cohort order, which stage admits it,
 * when that stage is expected, and the failure statistics that decide a halt. No storage, no clock:
 * the RolloutCoordinator passes `now`, so the same code answers in tests, the object and the prefetcher.
 */
import { failureRateDecision, hash64, wilsonInterval } from '../predict/index.ts'
import type { FailureStats, OutcomeCounts, RolloutStage } from '../schemas/rollout.ts'

const TWO_POW_21 = 2 ** 21
const TWO_POW_53 = 2 ** 53

/**
 * A client's place in the rollout order, uniform in [0, 1): the top 53 bits of a 64-bit Murmur3 hash
 * (predict/hashing.ts) of `name`, `version` and the client id. Stable for the whole rollout, so a client
 * admitted at 1 % is still in at 10 %; salted with the version so each release picks a different canary
 * set (no device is the guinea pig of every release).
 */
export function cohortPosition(name: string, version: string, clientId: string): number {
  const { hi, lo } = hash64(`rollout\u0000${name}\u0000${version}\u0000${clientId}`)
  return (hi * TWO_POW_21 + (lo >>> 11)) / TWO_POW_53
}

/** True when `position` falls inside a `percent` cohort (position < percent / 100). */
export function inCohort(position: number, percent: number): boolean {
  return position < percent / 100
}

/** The first stage whose cohort contains `position`, or null when no stage reaches it. */
export function admissionStage(stages: readonly RolloutStage[], position: number): number | null {
  const index = stages.findIndex((s) => inCohort(position, s.percent))
  return index === -1 ? null : index
}

/**
 * When stage `target` is expected to begin: the pending change (`nextChangeAt`: the start, or the end of
 * the current stage) plus the planned durations of the stages in between. Stages already entered are
 * not asked about; pauses are accounted for by the caller moving `nextChangeAt`.
 */
export function expectedStageStart(
  stages: readonly RolloutStage[],
  current: number | null,
  nextChangeAt: number,
  target: number,
): number {
  let at = nextChangeAt
  for (let i = current === null ? 0 : current + 1; i < target; i++) at += stages[i]?.durationMs ?? 0
  return at
}

/**
 * Failing devices a halt needs, whatever the limit: each device counts once, and one failure in a small
 * sample already puts the Wilson lower bound above a strict limit (1 of 5 is 3.6 %, 1 of 20 is 0.9 %),
 * so one flaky or hostile device would otherwise stop a rollout for the whole fleet on its own.
 */
export const MIN_HALT_FAILURES = 2

export function emptyCounts(): OutcomeCounts {
  return { installed: 0, failed: 0, 'rolled-back': 0 }
}

/**
 * Failure statistics of one cohort. Each reporting client is one sample, counted by its latest outcome;
 * failed and rolled-back are failures. The decision is predict's Wilson lower bound test, not the ratio,
 * and never a halt on fewer than MIN_HALT_FAILURES failing devices.
 */
export function failureStats(counts: OutcomeCounts, maxFailureRate: number, minSample: number): FailureStats {
  const failures = counts.failed + counts['rolled-back']
  const total = counts.installed + failures
  const decision = failureRateDecision({ failures, total, maxFailureRate, minSamples: minSample })
  return {
    counts,
    total,
    failures,
    failureRate: total === 0 ? 0 : failures / total,
    interval: wilsonInterval(failures, total),
    decision: decision === 'halt' && failures < MIN_HALT_FAILURES ? 'continue' : decision,
  }
}
