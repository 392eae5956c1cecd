import { ErrorClass, type RolloutOutcomeKind } from '../../schemas/rollout.ts'
import type { AgentConfig } from '../config.ts'
import { deviceFetch } from '../devices/device-fetch.ts'
import { EdgeClient } from '../edge-client.ts'
import { type ReportResult, reportOutcomeQuietly } from './client.ts'
import { agentClientId } from './client-id.ts'

/** What a supervisor knows after a swap (structurally the swap's `SwapOutcome`, client-agent/swap/). */
export interface OutcomeToReport {
  version: string
  outcome: RolloutOutcomeKind
  /** Free-form class ("health-check", "Replay"): normalised to the wire's slug, dropped if nothing is left. */
  errorClass?: string
}

/** Lowercase slug of at most 64 characters, or undefined: error classes never carry messages. */
export function toErrorClass(value: string | undefined): string | undefined {
  if (value === undefined) return undefined
  const slug = value
    .toLowerCase()
    .replace(/[^a-z0-9._-]+/g, '-')
    .replace(/^[^a-z0-9]+/, '')
    .slice(0, 64)
    .replace(/-+$/, '')
  return ErrorClass.safeParse(slug).success ? slug : undefined
}

/**
 * A reporter for long-running callers (the buffered swap's supervisor): each outcome goes to the
 * rollout of `name` on the channel (default: the configured one), best effort — a device without a
 * rollout, or an edge that refuses, never disturbs the service. `last` keeps the latest result for logs.
 */
export function rolloutReporter(
  config: AgentConfig,
  name: string,
  options: { channel?: string; fetchImpl?: typeof fetch } = {},
): { report(outcome: OutcomeToReport): Promise<void>; last: () => ReportResult | null } {
  const edge = new EdgeClient(config.edgeUrl, deviceFetch(config, options.fetchImpl))
  const channel = options.channel ?? config.channel
  let last: ReportResult | null = null
  return {
    async report(outcome) {
      const errorClass = outcome.outcome === 'installed' ? undefined : toErrorClass(outcome.errorClass)
      last = await reportOutcomeQuietly(edge, name, channel, {
        client: await agentClientId(config, options.fetchImpl),
        version: outcome.version,
        outcome: outcome.outcome,
        ...(errorClass === undefined ? {} : { errorClass }),
      })
    },
    last: () => last,
  }
}
