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
 * A request body sent as a stream (an upload) restarts the timer with each chunk the connection takes:
 * the edge answers an upload only after its last byte, so the timer measures the time without progress,
 * never the upload's own length. An upload slower than `ms` over a slow link is progress; one the other
 * side stopped reading is a stall. Socket buffers take up to a few MiB before the other side has them,
 * so once the last chunk is handed over the wait for the answer is `ms` plus the time those bytes (up to
 * UPLOAD_IN_FLIGHT_BYTES) take at UPLOAD_FLOOR_RATE.
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
    let timeout: ReturnType<typeof setTimeout> | undefined
    // Once the answer is in (or the request failed), a late chunk of the body re-arms nothing: the
    // signal also governs the answer's body, which readBody times itself.
    let finished = false
    const arm = (extraMs = 0) => {
      if (finished) return
      clearTimeout(timeout)
      timeout = setTimeout(() => {
        timedOut = true
        linked.abort(reason)
      }, ms + extraMs)
    }
    arm()
    const signal = linked.signal
    const upload = uploadOf(init)
    const body = upload
      ? progressing(upload, arm, (sent) =>
          arm((Math.min(sent, UPLOAD_IN_FLIGHT_BYTES) / UPLOAD_FLOOR_RATE) * 1000),
        )
      : init.body
    // A byte body sent as a stream needs its length said (undici sets it only for the bytes themselves).
    const headers =
      init.body instanceof Uint8Array && upload
        ? withLength(init.headers, init.body.byteLength)
        : init.headers
    try {
      const response = await fetchImpl(input, {
        ...init,
        body,
        ...(headers === undefined ? {} : { headers }),
        ...(upload ? { duplex: 'half' } : {}),
        signal,
        redirect: 'manual',
      } as RequestInit)
      if (!REDIRECTS.has(response.status)) {
        // The answer is in: a late chunk of the upload re-arms nothing (finished), the body has readBody's timer.
        finished = true
        clearTimeout(timeout)
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
      finished = true
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

/**
 * What the connection takes of an upload at a time: small enough that even a slow link (8 KiB/s) sends
 * one well within the stall timer, each one restarting it.
 */
export const PROGRESS_SLICE_BYTES = 64 * 1024

/**
 * The body of an upload to follow: a stream as given, or bytes over one slice (a delta, a multipart
 * part) as a stream of slices; null for anything else (JSON, small bodies), sent as it is.
 */
function uploadOf(init: RequestInit): ReadableStream<Uint8Array> | null {
  const body = init.body
  if (body instanceof ReadableStream) return body
  if (!(body instanceof Uint8Array) || body.byteLength <= PROGRESS_SLICE_BYTES) return null
  let offset = 0
  return new ReadableStream<Uint8Array>(
    {
      pull(controller) {
        if (offset >= body.byteLength) {
          controller.close()
          return
        }
        const end = Math.min(offset + PROGRESS_SLICE_BYTES, body.byteLength)
        controller.enqueue(body.subarray(offset, end))
        offset = end
      },
    },
    { highWaterMark: 0 },
  )
}

function withLength(headers: RequestInit['headers'], length: number): Headers {
  const withIt = new Headers(headers)
  withIt.set('content-length', String(length))
  return withIt
}

/** Bytes of an upload that socket buffers may still hold once the connection took the last of it. */
const UPLOAD_IN_FLIGHT_BYTES = 8 * 1024 * 1024
/** The slowest uplink an upload's last buffered bytes are given time for (bytes per second). */
const UPLOAD_FLOOR_RATE = 64 * 1024

/**
 * `body` as sent, calling `progress` each time the connection takes a chunk of it and `ended` with the
 * bytes sent once it took the last.
 */
function progressing(
  body: ReadableStream<Uint8Array>,
  progress: () => void,
  ended: (sent: number) => void,
): ReadableStream<Uint8Array> {
  const reader = body.getReader()
  let settled = false
  let sent = 0
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        const { done, value } = await reader.read()
        if (done) {
          if (!settled) ended(sent)
          settled = true
          controller.close()
          return
        }
        sent += value.length
        if (!settled) progress()
        controller.enqueue(value)
      },
      cancel(why) {
        settled = true
        return reader.cancel(why)
      },
    },
    // Nothing is read ahead of the connection taking it, so a chunk pulled is a chunk on its way.
    { highWaterMark: 0 },
  )
}
