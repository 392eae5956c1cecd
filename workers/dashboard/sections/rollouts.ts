import { rolloutCoordinator } from '../../../durable-objects/rollout-coordinator.ts'
import type { RolloutState } from '../../../schemas/rollout.ts'
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
  overall: { reported: number; failures: number; failureRate: number; decision: StageView['decision'] }
  stages: StageView[]
  errorClasses: Array<{ errorClass: string; count: number }>
}

export interface RolloutsView {
  rollouts: RolloutView[]
  /** Artifact/channel pairs whose coordinator was asked. */
  probed: number
}

/**
 * (artifact, channel) pairs that may have a rollout: every channel an artifact's index names (heads and
 * the channels versions were published to). Coordinators are one per pair and keep no global registry.
 */
export async function rolloutCandidates(bucket: R2Bucket): Promise<Array<{ name: string; channel: string }>> {
  const { names } = await listArtifactNames(bucket)
  const pairs = await Promise.all(
    names.map(async (name) => {
      const found = await readIndex(bucket, name).catch(() => null)
      if (found === null) return []
      const channels = new Set([
        ...Object.keys(found.index.channels),
        ...found.index.versions.flatMap((v) => v.channels),
      ])
      return [...channels].sort().map((channel) => ({ name, channel }))
    }),
  )
  return pairs.flat().slice(0, MAX_ROLLOUTS_PROBED)
}

/** Every rollout's stage, cohort progress and failure rate, from its RolloutCoordinator. */
export async function loadRollouts(env: Env): Promise<RolloutsView> {
  const candidates = await rolloutCandidates(env.ARTIFACTS)
  const found = await Promise.all(
    candidates.map(async ({ name, channel }): Promise<RolloutView | null> => {
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
  return { rollouts: found.filter((r): r is RolloutView => r !== null), probed: candidates.length }
}
