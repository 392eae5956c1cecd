import { type Command, Option } from 'commander'
import { ChannelName, Version } from '../../schemas/common.ts'
import {
  DEFAULT_MAX_FAILURE_RATE,
  DEFAULT_MIN_SAMPLE,
  type FailureStats,
  type RolloutHistoryEvent,
  type RolloutStatus,
} from '../../schemas/rollout.ts'
import { type AgentConfig, publishToken } from '../config.ts'
import { EdgeClient } from '../edge-client.ts'
import { AgentError } from '../errors.ts'
import type { Reporter } from '../output.ts'
import type { KeyFiles } from '../publish.ts'
import { controlRollout, type RolloutAction } from '../rollout/client.ts'
import {
  parseCount,
  parseDurations,
  parseRate,
  parseStages,
  parseStartAt,
  stagesFrom,
} from '../rollout/parse-options.ts'
import { parseArtifactName, parseWith, SIGNING_KEY_OPTION } from './arguments.ts'

/** How a control request is signed: `--key` (repeatable), else the config's signingKey, unless `--unsigned`. */
interface SigningOptions {
  key?: string[]
  unsigned?: boolean
}

interface StartOptions extends SigningOptions {
  channel: string
  version: string
  stages: number[]
  stageDuration: number[]
  startAt?: string
  maxFailureRate?: number
  minSample?: number
}

/**
 * `deltaport rollout start|pause|resume|abort|status <name>`: maintainer control of staged rollouts
 * (docs/decisions/0010-rollout-coordinator.md), with the DELTAPORT_TOKEN bearer token like `publish`.
 */
export function registerRolloutCommands(
  program: Command,
  reporter: () => Reporter,
  config: () => Promise<AgentConfig>,
): void {
  const rollout = program.command('rollout').description('stage a release to a growing share of devices')

  const act = async (
    action: RolloutAction,
    name: string,
    channel: string,
    signing: SigningOptions,
    body?: Parameters<typeof controlRollout>[5],
  ) => {
    const loaded = await config()
    const keyFile: KeyFiles | undefined = signing.unsigned ? undefined : (signing.key ?? loaded.signingKey)
    const status = await controlRollout(
      new EdgeClient(loaded.edgeUrl),
      publishToken(),
      name,
      channel,
      action,
      body,
      keyFile,
    )
    reporter().result(describeStatus(status), { rollout: status })
  }
  /** Control commands sign with the maintainer's key when there is one (ADR 0038). */
  const signable = (command: Command) =>
    command
      .option(...SIGNING_KEY_OPTION)
      .option('--unsigned', 'send with the token alone (an edge with rollout.requireStatement refuses it)')

  signable(rollout.command('start <name>'))
    .description('schedule a staged rollout of a published version')
    .requiredOption(
      '--version <version>',
      'the published version to roll out',
      parseWith(Version, 'a version'),
    )
    .option(
      '--channel <channel>',
      'channel the rollout governs',
      parseWith(ChannelName, 'a channel name'),
      'stable',
    )
    .addOption(
      new Option('--stages <percents>', 'cumulative share per stage, e.g. 1,10,50,100')
        .argParser(parseStages)
        .default([1, 10, 50, 100], '1,10,50,100'),
    )
    .addOption(
      new Option('--stage-duration <d>', 'per stage: one duration (1h) or one each (1h,1h,1d,1d)')
        .argParser(parseDurations)
        // Shown as written on the command line, not as the milliseconds it parses to.
        .default([3_600_000], '1h'),
    )
    .option('--start-at <time>', 'ISO time or +duration (default: now)', (v: string) => parseStartAt(v))
    .option(
      '--max-failure-rate <rate>',
      `halt above this failure rate (0.05 or 5%; default ${DEFAULT_MAX_FAILURE_RATE * 100}%)`,
      parseRate,
    )
    .option(
      '--min-sample <n>',
      `reports a cohort needs before any halt (at least 5; default ${DEFAULT_MIN_SAMPLE})`,
      parseCount,
    )
    .action(async (name: string, options: StartOptions) => {
      await act('start', parseArtifactName(name), options.channel, options, {
        version: options.version,
        stages: stagesFrom(options.stages, options.stageDuration),
        ...(options.startAt === undefined ? {} : { startAt: options.startAt }),
        ...(options.maxFailureRate === undefined ? {} : { maxFailureRate: options.maxFailureRate }),
        ...(options.minSample === undefined ? {} : { minSample: options.minSample }),
      })
    })

  for (const [action, description] of [
    ['pause', 'stop advancing stages (admitted devices stay in)'],
    ['abort', 'stop for good: nobody new is admitted'],
  ] as const) {
    signable(rollout.command(`${action} <name>`))
      .description(description)
      .option(
        '--channel <channel>',
        'channel of the rollout',
        parseWith(ChannelName, 'a channel name'),
        'stable',
      )
      .option('--reason <text>', 'why, for the history')
      .action(async (name: string, options: SigningOptions & { channel: string; reason?: string }) => {
        if (options.reason !== undefined && options.reason.length > 200)
          throw new AgentError('usage', '--reason is limited to 200 characters')
        await act(
          action,
          parseArtifactName(name),
          options.channel,
          options,
          options.reason ? { reason: options.reason } : {},
        )
      })
  }
  signable(rollout.command('resume <name>'))
    .description('continue a paused rollout')
    .option(
      '--channel <channel>',
      'channel of the rollout',
      parseWith(ChannelName, 'a channel name'),
      'stable',
    )
    .action(async (name: string, options: SigningOptions & { channel: string }) => {
      await act('resume', parseArtifactName(name), options.channel, options)
    })
  rollout
    .command('status <name>')
    .description('stage, cohort progress, failure rate and history')
    .option(
      '--channel <channel>',
      'channel of the rollout',
      parseWith(ChannelName, 'a channel name'),
      'stable',
    )
    .action(async (name: string, options: { channel: string }) => {
      await act('status', parseArtifactName(name), options.channel, { unsigned: true })
    })
}

/** History lines `rollout status` prints; the whole history (up to 100 events) is in `--json`. */
const HISTORY_LINES = 10

/** One history event: when, what, and whether the maintainers signed it (ADR 0038) or the token alone did. */
function describeEvent(event: RolloutHistoryEvent): string {
  const what =
    event.event === 'stage'
      ? `stage ${event.stage ?? 0} began`
      : `${event.event}${event.stage === undefined ? '' : ` in stage ${event.stage}`}`
  const detail = event.detail === undefined ? '' : `: ${event.detail}`
  const signed = event.signedAt === undefined ? '' : ` (signed ${event.signedAt})`
  return `    ${event.at} ${what}${detail}${signed}`
}

/** A duration as an operator reads it: its two largest units ("1 d 6 h", "42 min", "30 s"). */
export function describeDuration(ms: number): string {
  const units: [string, number][] = [
    ['d', 86_400_000],
    ['h', 3_600_000],
    ['min', 60_000],
    ['s', 1000],
  ]
  const parts: string[] = []
  let rest = Math.round(ms / 1000) * 1000
  for (const [unit, size] of units) {
    if (rest < size || parts.length === 2) continue
    parts.push(`${Math.floor(rest / size)} ${unit}`)
    rest %= size
  }
  return parts.length === 0 ? '0 s' : parts.join(' ')
}

/** What a paused rollout resumes with: the time its stage (or the wait for its start) had left. */
function pausedLeft(status: RolloutStatus): string {
  if (status.state !== 'paused' || status.pausedRemainingMs == null) return ''
  const what =
    status.currentStage === null
      ? 'before the start'
      : status.currentStage + 1 < status.stages.length
        ? `before stage ${status.currentStage + 1}`
        : 'before completion'
  return `, ${describeDuration(status.pausedRemainingMs)} left ${what} once resumed`
}

/** A few readable lines: where the rollout stands, how each cohort is doing, and what happened when. */
export function describeStatus(status: RolloutStatus): string {
  const pct = (x: number) => `${(x * 100).toFixed(1)} %`
  const stats = (s: FailureStats) =>
    `${s.counts.installed} installed, ${s.counts.failed} failed, ${s.counts['rolled-back']} rolled back; failure ${pct(s.failureRate)} [${pct(s.interval.lower)}, ${pct(s.interval.upper)}] ${s.decision}`
  const lines = [
    `${status.name}@${status.version} on ${status.channel}: ${status.state}, ${status.currentStage === null ? 'not started' : `stage ${status.currentStage} (${status.currentPercent} %)`}${status.nextChangeAt ? `, next change ${status.nextChangeAt}` : ''}${pausedLeft(status)}`,
    ...(status.haltedReason ? [`  halted: ${status.haltedReason}`] : []),
    ...status.progress.map(
      (p) =>
        `  stage ${p.stage} ${p.percent} %${p.startedAt ? ` since ${p.startedAt}` : ''}: ${stats(p.stats)}`,
    ),
    `  overall: ${stats(status.overall)} (limit ${pct(status.maxFailureRate)}, min sample ${status.minSample})`,
    `  history${status.history.length > HISTORY_LINES ? ` (last ${HISTORY_LINES} of ${status.history.length}; all with --json)` : ''}:`,
    ...status.history.slice(-HISTORY_LINES).map(describeEvent),
  ]
  return lines.join('\n')
}
