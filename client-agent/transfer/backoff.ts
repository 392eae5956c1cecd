import { setTimeout as sleep } from 'node:timers/promises'
import { AgentError } from '../errors.ts'
import { retryAfterMs } from './error-response.ts'

/** Doubled with every failure in a row (500 ms after the first), before jitter. */
const BACKOFF_BASE_MS = 250
/** The longest back-off between two tries of one transfer (before jitter). */
const BACKOFF_MAX_MS = 5_000

/** What retryWaitMs scales, before jitter: `baseMs` doubles with every failure (2 × baseMs after the first), up to `maxMs`. */
export interface BackoffScale {
  baseMs: number
  maxMs: number
  /** In [0, 1): where in 50–100 % the jitter lands. */
  random?: () => number
}

/**
 * How long to wait before the next try after `failures` failures in a row (1 for the first): 500 ms
 * doubling up to 5 s, jittered to 50–100 % of that so that devices a fault hit together (an edge that
 * restarted, a cache that dropped them all) do not come back together; never shorter than what the
 * edge asked for (`retryAfter`: its Retry-After in ms). The agent's one back-off: full downloads, the
 * edge's JSON answers, chunk-sync and delta-stream ranges, and (on its own `scale`: the flush interval
 * doubling up to 30 min) the daemon's telemetry uploader.
 */
export function retryWaitMs(
  failures: number,
  retryAfter = 0,
  scale: BackoffScale = { baseMs: BACKOFF_BASE_MS, maxMs: BACKOFF_MAX_MS },
): number {
  const backoff = Math.min(scale.baseMs * 2 ** Math.min(failures, 30), scale.maxMs)
  return Math.max(retryAfter, Math.round(backoff * (0.5 + (scale.random ?? Math.random)() / 2)))
}

/**
 * Whether trying a transfer again may succeed: the network's faults (a dropped connection, a stall, a
 * trickle, no answer in time), whether the agent named them (AgentError `network`) or fetch/undici
 * threw them raw (isNetworkFault), and the edge's momentary ones (5xx, 429). A refusal, a file error,
 * bytes that do not verify (a DeltaFormatError) or a bug are not. The one answer for every retry loop
 * of the agent: withRetries, full downloads and delta-stream ranges.
 */
export function isTransient(error: unknown): boolean {
  if (!(error instanceof AgentError)) return isNetworkFault(error)
  if (error.code === 'network') return true
  const status = error.details.status
  return error.code === 'edge-rejected' && typeof status === 'number' && (status >= 500 || status === 429)
}

/** What undici and Node's sockets call a connection that failed, broke or timed out (error.code). */
const NETWORK_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'EHOSTDOWN',
  'ENETUNREACH',
  'ENETDOWN',
  'ENETRESET',
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'UND_ERR_RES_CONTENT_LENGTH_MISMATCH',
])

/**
 * A network fault as fetch/undici throws it, before the agent names it: `TypeError: fetch failed`
 * (no answer: the connection refused, reset or cut before the headers) or `TypeError: terminated` (the
 * body broke), or any error whose code, or whose cause's code, is a socket's (ECONNRESET,
 * UND_ERR_SOCKET, …). Other errors of no AgentError (a file error, a DeltaFormatError, a bug) are not.
 */
export function isNetworkFault(error: unknown): boolean {
  if (error instanceof AgentError) return false
  if (error instanceof TypeError && (error.message === 'fetch failed' || error.message === 'terminated'))
    return true
  let at: unknown = error
  for (let depth = 0; depth < 4 && at instanceof Error; depth++, at = at.cause) {
    const code: unknown = (at as Error & { code?: unknown }).code
    if (typeof code === 'string' && NETWORK_CODES.has(code)) return true
  }
  return false
}

/**
 * The longest Retry-After worth waiting for inside a command; a longer one fails the transfer (the
 * next run resumes it).
 */
export const MAX_RETRY_WAIT_MS = 30_000

/**
 * Runs `attempt` up to `tries` times while it fails transiently (isTransient: a raw fetch/undici network
 * error as much as the agent's own `network` errors, 5xx and 429), waiting retryWaitMs
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
      if (signal?.aborted || !isTransient(error)) throw error
      const waitMs = retryWaitMs(failures, retryAfterMs(error))
      if (failures >= tries || waitMs > MAX_RETRY_WAIT_MS) throw error
      await sleep(waitMs, undefined, signal ? { signal } : {})
    }
  }
}
