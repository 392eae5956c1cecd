import { setTimeout as sleep } from 'node:timers/promises'
import { AgentError } from '../errors.ts'
import { retryAfterMs } from './error-response.ts'

/** The first retry's back-off before jitter; it doubles with every failure in a row. */
const BACKOFF_BASE_MS = 250
/** The longest back-off between two tries of one transfer (before jitter). */
const BACKOFF_MAX_MS = 5_000

/**
 * How long to wait before the next try after `failures` failures in a row (1 for the first): 250 ms
 * doubling up to 5 s, jittered to 50–100 % of that so that devices a fault hit together (an edge that
 * restarted, a cache that dropped them all) do not come back together; never shorter than what the
 * edge asked for (`retryAfterMs`: its Retry-After). The agent's one back-off for transfers: full
 * downloads, the edge's JSON answers and chunk-sync ranges (the telemetry uploader jitters the same way).
 */
export function retryWaitMs(failures: number, retryAfter = 0, random: () => number = Math.random): number {
  const backoff = Math.min(BACKOFF_BASE_MS * 2 ** Math.min(failures, 30), BACKOFF_MAX_MS)
  return Math.max(retryAfter, Math.round(backoff * (0.5 + random() / 2)))
}

/**
 * Whether trying a transfer again may succeed: the network's faults (a dropped connection, a stall, a
 * trickle, no answer in time) and the edge's momentary ones (5xx, 429). A refusal, a file error or
 * bytes that do not verify are not.
 */
export function isTransient(error: unknown): boolean {
  if (!(error instanceof AgentError)) return true
  if (error.code === 'network') return true
  const status = error.details.status
  return error.code === 'edge-rejected' && typeof status === 'number' && (status >= 500 || status === 429)
}

/**
 * The longest Retry-After worth waiting for inside a command; a longer one fails the transfer (the
 * next run resumes it).
 */
export const MAX_RETRY_WAIT_MS = 30_000

/**
 * Runs `attempt` up to `tries` times while it fails transiently (isTransient), waiting retryWaitMs
 * between tries (honouring the edge's Retry-After up to 30 s). The last failure is thrown as it was;
 * so is any failure once `signal` aborted.
 */
export async function withRetries<T>(
  tries: number,
  signal: AbortSignal | undefined,
  attempt: () => Promise<T>,
): Promise<T> {
  for (let failures = 1; ; failures++) {
    try {
      return await attempt()
    } catch (error) {
      if (signal?.aborted || !(error instanceof AgentError) || !isTransient(error)) throw error
      const waitMs = retryWaitMs(failures, retryAfterMs(error))
      if (failures >= tries || waitMs > MAX_RETRY_WAIT_MS) throw error
      await sleep(waitMs, undefined, signal ? { signal } : {})
    }
  }
}
