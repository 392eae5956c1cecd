import { isTransientR2Error } from '../storage/guarded-bucket.ts'
import { Problem } from './problem.ts'

/** Seconds a client is told to wait after a transient platform fault. */
export const TRANSIENT_RETRY_AFTER_SECONDS = 2

/**
 * Durable Object calls fail with errors the platform marks `retryable` (a reset object, a lost
 * connection) or `overloaded`, or with an R2 fault the object met reading its own binding; none says
 * anything about the request, so the client gets a 503 with a retry hint instead of an opaque 500.
 * Anything else is not transient (null).
 */
export function transientProblem(error: unknown): Problem | null {
  if (!(error instanceof Error)) return null
  const flags = error as Error & { retryable?: unknown; overloaded?: unknown }
  if (flags.retryable !== true && flags.overloaded !== true && !isTransientR2Error(error)) return null
  console.log(JSON.stringify({ level: 'warn', msg: 'transient fault', error: String(error) }))
  return new Problem(503, 'unavailable', 'a backing service is temporarily unavailable; retry shortly', {
    headers: { 'retry-after': String(TRANSIENT_RETRY_AFTER_SECONDS) },
  })
}
