import { AgentError } from '../errors.ts'
import { linkSignal } from './linked-signal.ts'

/** How long the agent waits for an answer's headers, like readBody's stall timer once the body flows. */
export const HEADER_TIMEOUT_MS = 30_000

/** The statuses fetch would follow to the answer's Location. */
const REDIRECTS = new Set([301, 302, 303, 307, 308])

/**
 * `fetchImpl` that gives up when no response headers arrive within `ms`: an edge (or anything in
 * between) that accepts the connection and then says nothing would otherwise hold the agent until
 * undici's own 300 s, and the failure would read as "cannot reach the edge". Once headers arrive the
 * timer is cleared; the body has readBody's stall timer. The caller's own signal still aborts as before.
 *
 * It also never follows a redirect: the edge answers no agent route with one, and fetch would follow
 * any, to any host (`http://169.254.169.254/…`, a service on the device's network), so whoever answers
 * for the edge (a mirror, a man in the middle of an http edge) could aim the agent's requests anywhere
 * its plan checks (EDGE_PATH, plan-update.ts) keep them from. A redirect is an `edge-rejected` error
 * naming where it pointed (no `status`: to the update, an edge fault, as a malformed answer is).
 */
export function withHeaderTimeout(fetchImpl: typeof fetch, ms = HEADER_TIMEOUT_MS): typeof fetch {
  return async (input, init = {}) => {
    const reason = new AgentError('network', `the edge sent no answer within ${ms} ms`, { stalled: true })
    // Linked to the caller's signal until the headers are in (linked-signal.ts: a long-lived caller's
    // signal, the daemon's, keeps nothing of each fetch). The body is read by readBody, which races
    // every read against the caller's signal and cancels the body when it aborts.
    const linked = linkSignal(init.signal ?? undefined)
    let timedOut = false
    const timeout = setTimeout(() => {
      timedOut = true
      linked.abort(reason)
    }, ms)
    const signal = linked.signal
    try {
      const response = await fetchImpl(input, { ...init, signal, redirect: 'manual' })
      if (!REDIRECTS.has(response.status)) return response
      await response.body?.cancel().catch(() => undefined)
      const location = (response.headers.get('location') ?? '').slice(0, 256)
      throw new AgentError(
        'edge-rejected',
        `the edge answered with a redirect (${response.status}) to ${location || 'nowhere'}; deltaport follows none: set edgeUrl to the address that answers`,
        { redirectStatus: response.status, location },
      )
    } catch (error) {
      if (timedOut && !init.signal?.aborted) throw reason
      throw error
    } finally {
      clearTimeout(timeout)
      linked.release()
    }
  }
}
