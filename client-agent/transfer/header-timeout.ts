import { AgentError } from '../errors.ts'

/** How long the agent waits for an answer's headers, like readBody's stall timer once the body flows. */
export const HEADER_TIMEOUT_MS = 30_000

/**
 * `fetchImpl` that gives up when no response headers arrive within `ms`: an edge (or anything in
 * between) that accepts the connection and then says nothing would otherwise hold the agent until
 * undici's own 300 s, and the failure would read as "cannot reach the edge". Once headers arrive the
 * timer is cleared; the body has readBody's stall timer. The caller's own signal still aborts as before.
 */
export function withHeaderTimeout(fetchImpl: typeof fetch, ms = HEADER_TIMEOUT_MS): typeof fetch {
  return async (input, init = {}) => {
    const timer = new AbortController()
    const reason = new AgentError('network', `the edge sent no answer within ${ms} ms`, { stalled: true })
    const timeout = setTimeout(() => timer.abort(reason), ms)
    const signal = init.signal ? AbortSignal.any([init.signal, timer.signal]) : timer.signal
    try {
      return await fetchImpl(input, { ...init, signal })
    } catch (error) {
      if (timer.signal.aborted && !init.signal?.aborted) throw reason
      throw error
    } finally {
      clearTimeout(timeout)
    }
  }
}
