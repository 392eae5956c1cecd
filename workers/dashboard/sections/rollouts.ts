import { rolloutCoordinator } from '../../../durable-objects/rollout-coordinator.ts'
import type { RolloutHistoryEvent, RolloutState } from '../../../schemas/rollout.ts'
import { readIndex } from '../../storage/artifact-store.ts'
import { listArtifactNames } from './artifacts.ts'

/** Coordinators asked at most (one per artifact and channel). */
export const MAX_ROLLOUTS_PROBED = 100

export interface StageView {
  stage: number
  percent: number
  startedAt: string | null
  /** Clients of this cohort that reported an outcome. */
  reported: number
  installed: number
  failures: number
  failureRate: number
  decision: 'insufficient-data' | 'halt' | 'continue'
}

export interface RolloutView {
  name: string
  channel: string
  version: string
  state: RolloutState
  currentStage: number | null
  stageCount: number
  currentPercent: number
  nextChangeAt: string | null
  maxFailureRate: number
  haltedReason: string | null
  /** Why a paused or aborted rollout is so: the maintainer's reason from its history (pause / abort body). */
  stateReason: string | null
  overall: { reported: number; failures: number; failureRate: number; decision: StageView['decision'] }
  stages: StageView[]
  errorClasses: Array<{ errorClass: string; count: number }>
}

export interface RolloutsView {
  rollouts: RolloutView[]
  /** Artifact/channel pairs whose coordinator was asked. */
  probed: number
  /**
   * Pairs left unasked (over MAX_ROLLOUTS_PROBED), and whether artifacts beyond the artifacts
   * section's bound went unlisted: a rollout may exist that the page does not show.
   */
  unchecked: number
  moreArtifacts: boolean
}

/**
 * (artifact, channel) pairs that may have a rollout: every channel an artifact's index names (heads and
 * the channels versions were published to). Coordinators are one per pair and keep no global registry.
 * Taken round-robin, channel heads first, so that under the bound every artifact gets its channels
 * checked before any artifact gets more: an artifact with many channels (or artifacts early in the
 * alphabet) cannot crowd a halted rollout further down off the page.
 */
export async function rolloutCandidates(
  bucket: R2Bucket,
  limit = MAX_ROLLOUTS_PROBED,
): Promise<{ pairs: Array<{ name: string; channel: string }>; unchecked: number; moreArtifacts: boolean }> {
  const { names, truncated } = await listArtifactNames(bucket)
  const perArtifact = await Promise.all(
    names.map(async (name) => {
      const found = await readIndex(bucket, name).catch(() => null)
      if (found === null) return []
      const heads = Object.keys(found.index.channels).sort()
      const published = found.index.versions.flatMap((v) => v.channels).sort()
      return [...new Set([...heads, ...published])].map((channel) => ({ name, channel }))
    }),
  )
  const total = perArtifact.reduce((n, pairs) => n + pairs.length, 0)
  const pairs: Array<{ name: string; channel: string }> = []
  for (let rank = 0; pairs.length < Math.min(limit, total); rank++) {
    for (const channels of perArtifact) {
      const pair = channels[rank]
      if (pair !== undefined && pairs.length < limit) pairs.push(pair)
    }
  }
  return { pairs, unchecked: total - pairs.length, moreArtifacts: truncated }
}

/** Every rollout's stage, cohort progress and failure rate, from its RolloutCoordinator. */
export async function loadRollouts(env: Env): Promise<RolloutsView> {
  const { pairs, unchecked, moreArtifacts } = await rolloutCandidates(env.ARTIFACTS)
  const found = await Promise.all(
    pairs.map(async ({ name, channel }): Promise<RolloutView | null> => {
      const result = await rolloutCoordinator(env, name, channel).status()
      if (!result.ok) return null
      const s = result.value
      return {
        name: s.name,
        channel: s.channel,
        version: s.version,
        state: s.state,
        currentStage: s.currentStage,
        stageCount: s.stages.length,
        currentPercent: s.currentPercent,
        nextChangeAt: s.nextChangeAt,
        maxFailureRate: s.maxFailureRate,
        haltedReason: s.haltedReason,
        stateReason: stateReasonOf(s.state, s.history),
        overall: {
          reported: s.overall.total,
          failures: s.overall.failures,
          failureRate: s.overall.failureRate,
          decision: s.overall.decision,
        },
        stages: s.progress.map((p) => ({
          stage: p.stage,
          percent: p.percent,
          startedAt: p.startedAt,
          reported: p.stats.total,
          installed: p.stats.counts.installed,
          failures: p.stats.failures,
          failureRate: p.stats.failureRate,
          decision: p.stats.decision,
        })),
        errorClasses: s.errorClasses.slice(0, 5),
      }
    }),
  )
  return {
    // Asked round-robin, shown by artifact and channel.
    rollouts: found
      .filter((r): r is RolloutView => r !== null)
      .sort((a, b) => a.name.localeCompare(b.name) || a.channel.localeCompare(b.channel)),
    probed: pairs.length,
    unchecked,
    moreArtifacts,
  }
}

/**
 * The reason given with the pause or abort that put a rollout in its state (the latest such event of
 * its history), or null: a halt has `haltedReason`, and a pause or abort without a body has none.
 */
function stateReasonOf(state: RolloutState, history: readonly RolloutHistoryEvent[]): string | null {
  if (state !== 'paused' && state !== 'aborted') return null
  const event = history.findLast((e) => e.event === state)
  return event?.detail ?? null
}
