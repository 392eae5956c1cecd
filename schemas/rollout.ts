import { z } from 'zod'
import { ClientId } from './client.ts'
import { ArtifactName, ChannelName, IsoDateTime, Version } from './common.ts'

/**
 * Staged rollouts (RolloutCoordinator, one per artifact + channel): what maintainers schedule, what agents
 * ask and report, and what status shows. See docs/decisions/0010-rollout-coordinator.md.
 */

const DAY_MS = 86_400_000
/** A stage lasts at least a second (tests and demos) and at most 90 days. */
export const MIN_STAGE_MS = 1000
export const MAX_STAGE_MS = 90 * DAY_MS
export const MAX_STAGES = 16

export const RolloutStage = z.object({
  /** Share of clients admitted once this stage begins (cumulative: earlier cohorts stay in). */
  percent: z.number().min(0).max(100),
  /** How long the stage runs before the next one begins (or, for the last, before the rollout completes). */
  durationMs: z
    .number()
    .int()
    .min(MIN_STAGE_MS, 'a stage lasts at least 1 s')
    .max(MAX_STAGE_MS, 'a stage lasts at most 90 days'),
})
export type RolloutStage = z.infer<typeof RolloutStage>

/** The edge's defaults when a rollout start names no limit (the CLI's help shows them). */
export const DEFAULT_MAX_FAILURE_RATE = 0.05
export const DEFAULT_MIN_SAMPLE = 20

/** The body of `POST /v1/rollouts/:name/:channel/start`. */
export const RolloutSpec = z.object({
  /** Must already be published (the edge checks). */
  version: Version,
  /** When the first stage begins; default now. At most a year ahead. */
  startAt: IsoDateTime.optional(),
  stages: z
    .array(RolloutStage)
    .min(1)
    .max(MAX_STAGES)
    .refine((stages) => stages.every((s, i) => i === 0 || s.percent > (stages[i - 1]?.percent ?? 0)), {
      message: 'stage percentages must strictly increase',
    })
    // A completed rollout hands the channel back to its head, so the last stage must admit everyone.
    .refine((stages) => stages.at(-1)?.percent === 100, { message: 'the last stage must be 100 %' }),
  /** Halt once a stage's failure rate is above this with ~97.5 % one-sided confidence (Wilson lower bound). */
  maxFailureRate: z.number().gt(0).lt(1).default(DEFAULT_MAX_FAILURE_RATE),
  /**
   * Reporting clients a cohort needs before any halt decision. At least 5, so a couple of early failures
   * (or one hostile client: each counts once) never halt a rollout alone.
   */
  minSample: z
    .number()
    .int()
    .min(5, 'the minimum sample is at least 5 reports')
    .max(1_000_000)
    .default(DEFAULT_MIN_SAMPLE),
})
export type RolloutSpec = z.infer<typeof RolloutSpec>
export type RolloutSpecInput = z.input<typeof RolloutSpec>

/** Optional body of pause / abort: why, for the history. */
export const RolloutControl = z.object({ reason: z.string().max(200).optional() })
export type RolloutControl = z.infer<typeof RolloutControl>

export const RolloutState = z.enum(['scheduled', 'running', 'paused', 'halted', 'aborted', 'completed'])
export type RolloutState = z.infer<typeof RolloutState>

export const RolloutOutcomeKind = z.enum(['installed', 'failed', 'rolled-back'])
export type RolloutOutcomeKind = z.infer<typeof RolloutOutcomeKind>

/** A coarse, non-identifying failure class ("health-check", "verify", "replay", …), never a message. */
export const ErrorClass = z
  .string()
  .min(1)
  .max(64)
  .regex(/^[a-z0-9][a-z0-9._-]*$/, 'lowercase letters, digits, . _ -')

/** The body of `POST /v1/rollouts/:name/:channel/outcomes`, sent by agents. */
export const RolloutOutcome = z.object({
  client: ClientId,
  version: Version,
  outcome: RolloutOutcomeKind,
  errorClass: ErrorClass.optional(),
})
export type RolloutOutcome = z.infer<typeof RolloutOutcome>

export const OutcomeReceipt = z.object({
  /** False when this client's outcome was already the same (one client counts once per rollout). */
  counted: z.boolean(),
  /** The stage whose cohort this client belongs to. */
  stage: z.number().int().nonnegative(),
  state: RolloutState,
})
export type OutcomeReceipt = z.infer<typeof OutcomeReceipt>

/** The public answer of `GET /v1/rollouts/:name/:channel?client=`. */
export const RolloutCheck = z.object({
  name: ArtifactName,
  channel: ChannelName,
  state: RolloutState,
  targetVersion: Version,
  /** Whether this client may run the target version now. */
  in: z.boolean(),
  /** The version to run: the target when in, null for "keep what you have". */
  version: Version.nullable(),
  /** The stage that admits this client (null: no stage of this rollout reaches it). */
  stage: z.number().int().nonnegative().nullable(),
  /** When that stage is expected to begin (null when in already, or when paused, halted or aborted). */
  stageExpectedAt: IsoDateTime.nullable(),
})
export type RolloutCheck = z.infer<typeof RolloutCheck>

export const OutcomeCounts = z.object({
  installed: z.number().int().nonnegative(),
  failed: z.number().int().nonnegative(),
  'rolled-back': z.number().int().nonnegative(),
})
export type OutcomeCounts = z.infer<typeof OutcomeCounts>

/** Failure statistics of one cohort: failures are failed + rolled back, one sample per client. */
export const FailureStats = z.object({
  counts: OutcomeCounts,
  total: z.number().int().nonnegative(),
  failures: z.number().int().nonnegative(),
  /** The raw ratio, for display; decisions use the interval. */
  failureRate: z.number().min(0).max(1),
  interval: z.object({ lower: z.number(), upper: z.number(), center: z.number() }),
  decision: z.enum(['insufficient-data', 'halt', 'continue']),
})
export type FailureStats = z.infer<typeof FailureStats>

export const RolloutHistoryEvent = z.object({
  at: IsoDateTime,
  event: z.enum(['scheduled', 'stage', 'paused', 'resumed', 'halted', 'aborted', 'completed']),
  stage: z.number().int().nonnegative().optional(),
  detail: z.string().max(300).optional(),
  /** Done on a maintainer-signed statement (ADR 0038) signed at this time, not on the token alone. */
  signedAt: IsoDateTime.optional(),
})
export type RolloutHistoryEvent = z.infer<typeof RolloutHistoryEvent>

/** `GET /v1/rollouts/:name/:channel/status` (maintainers). */
export const RolloutStatus = z.object({
  name: ArtifactName,
  channel: ChannelName,
  version: Version,
  state: RolloutState,
  createdAt: IsoDateTime,
  startAt: IsoDateTime,
  stages: z.array(RolloutStage),
  maxFailureRate: z.number(),
  minSample: z.number().int(),
  /** Index of the stage in force (null before the start). */
  currentStage: z.number().int().nonnegative().nullable(),
  currentPercent: z.number().min(0).max(100),
  /** When the next stage (or completion) is due; null unless running or scheduled. */
  nextChangeAt: IsoDateTime.nullable(),
  /**
   * Paused: how long the stage in force (or the wait for the start) has left, which resume gives it
   * back; null otherwise. Absent from edges older than 2026-11-26.
   */
  pausedRemainingMs: z.number().int().nonnegative().nullable().optional(),
  haltedReason: z.string().nullable(),
  /** One entry per stage: the outcomes reported by the clients that stage admitted. */
  progress: z.array(
    z.object({
      stage: z.number().int().nonnegative(),
      percent: z.number(),
      startedAt: IsoDateTime.nullable(),
      stats: FailureStats,
    }),
  ),
  overall: FailureStats,
  /** Error classes reported with failed / rolled-back outcomes, most frequent first (at most 20). */
  errorClasses: z.array(z.object({ errorClass: ErrorClass, count: z.number().int().nonnegative() })),
  history: z.array(RolloutHistoryEvent),
})
export type RolloutStatus = z.infer<typeof RolloutStatus>

/** Query of the public check. */
export const RolloutCheckQuery = z.object({ client: ClientId })

export const RolloutParams = z.object({ name: ArtifactName, channel: ChannelName })

const Epoch = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER)
export const MAX_HISTORY = 100

/** What a RolloutCoordinator stores (one JSON row): the plan and where it stands. */
export const RolloutRecord = z.object({
  name: ArtifactName,
  channel: ChannelName,
  spec: RolloutSpec,
  state: RolloutState,
  createdAt: Epoch,
  startAt: Epoch,
  currentStage: z.number().int().nonnegative().nullable(),
  /** Real start of each stage entered so far (null: not yet). */
  stageStartedAt: z.array(Epoch.nullable()),
  /** The pending alarm: next stage, completion, or the start; null when nothing is due. */
  nextChangeAt: Epoch.nullable(),
  /** Time left on the pending change when paused, so resume keeps the stage's planned length. */
  pausedRemainingMs: Epoch.nullable(),
  haltedReason: z.string().max(300).nullable(),
  history: z.array(RolloutHistoryEvent).max(MAX_HISTORY),
})
export type RolloutRecord = z.infer<typeof RolloutRecord>

/** RolloutCoordinator.prefetchHint: stage the target for this client soon, hold it back, or no rollout. */
export const RolloutPrefetchHint = z.discriminatedUnion('action', [
  /** In now, or admitted by the next stage / within the look-ahead: stage `version`, usable from `at`. */
  z.object({ action: z.literal('stage'), version: Version, at: Epoch }),
  /** A rollout holds this client back (not in, not soon, or halted/aborted): stage nothing new. */
  z.object({ action: z.literal('hold'), version: Version }),
])
export type RolloutPrefetchHint = z.infer<typeof RolloutPrefetchHint>
