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
 * timer is cleared; the body has readBody's stall timer. The caller's own signal aborts the request
 * until its body has been read to the end, failed or been cancelled (heldUntilRead): an error answer
 * read without the caller's signal (errorFromResponse) still stops when the daemon is told to stop.
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
    // Linked to the caller's signal until the body is done with (linked-signal.ts: a long-lived
    // caller's signal, the daemon's, keeps nothing of each fetch once its body is read or cancelled).
    const linked = linkSignal(init.signal ?? undefined)
    let timedOut = false
    let handedOn = false
    const timeout = setTimeout(() => {
      timedOut = true
      linked.abort(reason)
    }, ms)
    const signal = linked.signal
    try {
      const response = await fetchImpl(input, { ...init, signal, redirect: 'manual' })
      clearTimeout(timeout)
      if (!REDIRECTS.has(response.status)) {
        handedOn = true
        return heldUntilRead(response, linked.release)
      }
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
      if (!handedOn) linked.release()
    }
  }
}

/** Statuses whose answer has no body (fetch refuses to make a Response of them with one). */
const NULL_BODY = new Set([101, 103, 204, 205, 304])

/**
 * `response` with its body passed through a stream that calls `release` once the body has ended, failed
 * or been cancelled: until then the request's signal stays linked to the caller's, so the caller's abort
 * still ends a body being read (undici errors the body of an aborted request). A response without a
 * body is released at once. Every caller reads, cancels or hands to errorFromResponse each answer it
 * gets (an answer left unread would keep its link, and its connection, until the caller's signal ends).
 */
function heldUntilRead(response: Response, release: () => void): Response {
  const body = response.body
  // Outside 200–599 (a test double's Response.error()) no Response can be made again: handed on as is.
  if (body === null || NULL_BODY.has(response.status) || response.status < 200 || response.status > 599) {
    release()
    return response
  }
  const reader = body.getReader()
  const held = new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        try {
          const { done, value } = await reader.read()
          if (done) {
            release()
            controller.close()
          } else controller.enqueue(value)
        } catch (error) {
          release()
          controller.error(error)
        }
      },
      cancel(why) {
        release()
        return reader.cancel(why)
      },
    },
    { highWaterMark: 0 },
  )
  const out = new Response(held, {
    status: response.status,
    statusText: response.statusText,
    headers: response.headers,
  })
  // What the request ended at, as the answer fetch made says (a new Response has none).
  Object.defineProperty(out, 'url', { value: response.url })
  return out
}
