import {
  type ClientRequest,
  type IncomingHttpHeaders,
  type IncomingMessage,
  request,
  type ServerResponse,
} from 'node:http'
import { answerProblem, serviceDidNotAnswer } from './problem-answer.ts'
import type { ServiceProcess } from './service-process.ts'

/** Hop-by-hop headers (RFC 9110 §7.6.1) are the proxy's own business and are never passed on. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
])

/** Marks a replayed write (its journal id); only the agent sets it, so services can trust it. */
export const REPLAY_HEADER = 'x-deltaport-replay'

/**
 * True for a header that must not be passed on: hop-by-hop, named by the message's Connection header, or
 * a replay mark the sender made itself.
 */
function hopByHop(headers: IncomingHttpHeaders): (name: string) => boolean {
  const nominated = new Set(
    (headers.connection ?? '')
      .split(',')
      .map((token) => token.trim().toLowerCase())
      .filter(Boolean),
  )
  return (name) => HOP_BY_HOP.has(name) || nominated.has(name) || name === REPLAY_HEADER
}

export function endToEndHeaders(headers: IncomingHttpHeaders): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {}
  const skip = hopByHop(headers)
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || skip(name)) continue
    out[name] = value
  }
  return out
}

/**
 * X-Forwarded-For (the de-facto convention) with the address the proxy saw appended: without it every
 * request would reach the service from 127.0.0.1. What the client sent itself is kept in front, unverified.
 */
export function forwardedFor(headers: IncomingHttpHeaders, remoteAddress: string | undefined): string {
  const sent = headers['x-forwarded-for']
  const prior = Array.isArray(sent) ? sent.join(', ') : sent
  const peer = remoteAddress ?? 'unknown'
  return prior ? `${prior}, ${peer}` : peer
}

export function headerPairs(headers: IncomingHttpHeaders): Array<[string, string]> {
  const out: Array<[string, string]> = []
  const skip = hopByHop(headers)
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || skip(name)) continue
    for (const v of Array.isArray(value) ? value : [value]) out.push([name, v])
  }
  return out
}

/** Methods that are safe (RFC 9110 §9.2.1), so a request that got no answer may be sent once more. */
export const RETRYABLE_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'OPTIONS'])

/**
 * Live writes whose client hung up after the service had the whole request: the service may still apply
 * such a write, so it stays in flight (the swap's drain waits for it, bounded by `stopTimeoutMs`) until
 * the service answers (the answer is discarded) or fails. Cancelling it would not undo it: a drain that
 * ended at the hang-up let the old version apply it after its flush hook, unseen by the new version.
 * Only a stopping proxy cuts them (`cutAll`): the service processes are stopped right after.
 */
export class HungUpWrites {
  private readonly kept = new Set<() => void>()
  private cutting = false

  get size(): number {
    return this.kept.size
  }

  /** Keeps a write until `release`; false once the proxy cuts them (its caller then cuts it at once). */
  keep(cut: () => void): boolean {
    if (this.cutting) return false
    this.kept.add(cut)
    return true
  }

  release(cut: () => void): void {
    this.kept.delete(cut)
  }

  /** Cuts every write kept, and from now on every one whose client goes. */
  cutAll(): void {
    this.cutting = true
    for (const cut of [...this.kept]) cut()
    this.kept.clear()
  }
}

export interface LiveOptions {
  /** The request body when the proxy has already read it (a write it meant to hold). */
  body?: Uint8Array
  /**
   * For a bodiless request that may be repeated: the process to send it to once more when `target` fails
   * before a byte of its answer arrived (refused, or reset by a process that is dying).
   */
  retry?: () => ServiceProcess | null
  /** For a body still arriving: the longest the client may send nothing of it (see `pumpBody`). */
  bodyIdleMs?: number
  /** For a body still arriving: the slowest it may come, judged per window (see `pumpBody`). */
  bodyMinRate?: { bytesPerSecond: number; windowMs: number }
  /** Where a write whose client hangs up once the service has it whole waits for the service's answer. */
  hungUp?: HungUpWrites
  /**
   * The longest the service may send nothing before its answer begins, once the request is on a
   * connection to it (`serviceAnswerTimeoutMs`): past it the client gets 504 and the service's request
   * is cut, which frees its connection. A write kept for a client that hung up is cut the same way.
   */
  answerTimeoutMs?: number
  /** Called once when the request has left the service for good (answered, failed, cut; not on a retry). */
  done?: () => void
}

/**
 * Streams a live request to a service process and its answer back; 502 if the process cannot be reached.
 * A client that hangs up cancels its request at the service unless it is a write the service has whole
 * (see `HungUpWrites`): a request cut before its body was complete is one the service never completes.
 */
export function forwardLive(
  target: ServiceProcess,
  req: IncomingMessage,
  res: ServerResponse,
  isWrite: boolean,
  options: LiveOptions = {},
): void {
  const { body, retry, bodyIdleMs, bodyMinRate, hungUp, answerTimeoutMs, done } = options
  // Counted as in flight from the start; a request that cannot even be built never was.
  let left = false
  /** A write counts for the drain until the service answers it (or it ends unanswered). */
  let drainCounted = isWrite
  /** `retrying`: another process takes the request (and calls `done` itself). */
  const leave = (retrying = false) => {
    if (left) return
    left = true
    hungUp?.release(cut)
    target.leave(drainCounted)
    drainCounted = false
    if (!retrying) done?.()
  }
  const cut = () => {
    upstream.destroy()
    leave()
  }
  target.enter(isWrite)
  /** Set once the client's body stalled: the proxy has answered 408 itself and cut the service's request. */
  let stalled = false
  /** Set once the service's answer began: it has done the request, whatever it was. */
  let answered = false
  /** Set once the service sent nothing for `answerTimeoutMs`: the proxy answered 504 itself. */
  let timedOut = false
  /** Body bytes passed on as they arrived; the request is whole at the service once the declared size went. */
  let bodyBytesSent = 0
  const declared = req.headers['content-length'] === undefined ? null : Number(req.headers['content-length'])
  let upstream: ReturnType<typeof request>
  try {
    upstream = buildUpstream()
  } catch (error) {
    leave()
    throw error
  }
  function buildUpstream() {
    return request(
      {
        host: '127.0.0.1',
        port: target.port,
        method: req.method,
        path: req.url,
        headers: {
          ...endToEndHeaders(req.headers),
          'x-forwarded-for': forwardedFor(req.headers, req.socket.remoteAddress),
          ...(body ? { 'content-length': String(body.length) } : {}),
        },
        agent: target.agent,
      },
      (answer) => {
        answered = true
        // From here a silent service is a client that does not read (cutStalledReaders), not a hang.
        upstream.setTimeout(0)
        // The service has done the write (its answer says how it went): the drain need not wait for
        // its client to read the answer. One that never reads held every swap's drain until deferral.
        if (drainCounted && !left) {
          drainCounted = false
          target.answeredWrite()
        }
        if (res.destroyed) {
          // Its client hung up while the service worked on it (a write kept in flight): the answer only
          // ends that time.
          answer.once('close', leave)
          answer.resume()
          return
        }
        res.writeHead(answer.statusCode ?? 502, endToEndHeaders(answer.headers))
        answer.pipe(res)
        answer.on('end', leave)
        answer.on('error', () => {
          leave()
          res.destroy()
        })
      },
    )
  }
  /**
   * The service may have the whole request: everything of it was handed over (the body read already,
   * or all of a declared or chunked one) on a connection to the service. Conservative: bytes handed over
   * may still sit in a buffer. A request still waiting for a connection (every one of the process's
   * `maxSockets` busy, or the first still connecting) has reached nobody: the service cannot apply it.
   */
  const wholeSent = () =>
    !stalled &&
    reachedService(upstream) &&
    (upstream.writableEnded || (declared !== null && bodyBytesSent >= declared))
  // Node arms it once the request has a connected socket: time queued for a connection is not the
  // service's. Any byte either way restarts it (a body the service reads slowly is not a hang).
  if (answerTimeoutMs !== undefined)
    upstream.setTimeout(answerTimeoutMs, () => {
      if (answered || left) return
      timedOut = true
      answerTimedOut(req, res, answerTimeoutMs)
      upstream.destroy()
      leave()
    })
  upstream.on('error', () => {
    if (stalled || timedOut || res.destroyed) return leave()
    // Once: the second try gets no retry of its own.
    const other = res.headersSent ? null : retry?.()
    leave(Boolean(other))
    if (other) return forwardLive(other, req, res, isWrite, { body, hungUp, answerTimeoutMs, done })
    if (!res.headersSent) {
      answerProblem(
        res,
        { title: 'service unavailable', status: 502, detail: 'the service closed or refused the connection' },
        { retryAfter: 1 },
      )
    } else res.destroy()
  })
  res.on('close', () => {
    if (res.writableFinished) return leave()
    // The client hung up. A write the service has whole may be applied whether or not it is cut here:
    // it stays in flight until the service answers. Anything else is cut, as is a request answered.
    if (isWrite && !answered && wholeSent() && hungUp?.keep(cut)) return
    cut()
  })
  if (body) upstream.end(body)
  // The retry of a bodiless request: `req` has ended already, there is nothing left to pipe.
  else if (req.readableEnded) upstream.end()
  else {
    req.on('data', (chunk: Buffer) => {
      bodyBytesSent += chunk.length
    })
    if (bodyIdleMs === undefined) req.pipe(upstream)
    else
      pumpBody(req, upstream, bodyIdleMs, bodyMinRate, (detail) => {
        stalled = true
        answerStalled(res, detail)
        // The service never gets the rest: an incomplete request it must not apply.
        upstream.destroy()
      })
  }
}

/** Whether `upstream` is on an open connection to the service (not queued in the agent, not connecting). */
function reachedService(upstream: ClientRequest): boolean {
  const socket = upstream.socket
  return socket !== null && !socket.connecting
}

/**
 * Pipes `req`'s body into `upstream`, or calls `onStall` when the client sends nothing of it for
 * `idleMs`, or (`minRate`) fewer bytes in a window than the rate asks, while the proxy waits for it.
 * The clocks stop while the service holds the body back (`upstream` full): a service that reads slowly
 * is not a client that stalled, and a window in which it did so is not judged.
 */
function pumpBody(
  req: IncomingMessage,
  upstream: ClientRequest,
  idleMs: number,
  minRate: { bytesPerSecond: number; windowMs: number } | undefined,
  onStall: (detail: string) => void,
): void {
  let timer: NodeJS.Timeout | null = null
  let rate: NodeJS.Timeout | null = null
  let windowBytes = 0
  /** The service held the body back during this window (or does now). */
  let heldBack = false
  const clear = () => {
    if (timer) clearTimeout(timer)
    timer = null
  }
  const stop = () => {
    clear()
    if (rate) clearInterval(rate)
    rate = null
  }
  const stall = (detail: string) => {
    stop()
    req.off('data', onData)
    onStall(detail)
  }
  const wait = () => {
    clear()
    timer = setTimeout(() => {
      timer = null
      stall(stalledBodyDetail(idleMs))
    }, idleMs)
  }
  const onData = (chunk: Buffer) => {
    clear()
    windowBytes += chunk.length
    if (upstream.write(chunk)) return wait()
    heldBack = true
    req.pause()
    upstream.once('drain', () => {
      req.resume()
      wait()
    })
  }
  if (minRate && minRate.bytesPerSecond > 0) {
    const { bytesPerSecond, windowMs } = minRate
    rate = setInterval(() => {
      const judged = !heldBack && timer !== null
      if (judged && windowBytes < (bytesPerSecond * windowMs) / 1000)
        return stall(slowBodyDetail(bytesPerSecond, windowMs))
      windowBytes = 0
      // Still held back (waiting for a drain: no idle timer runs then) counts for the next window too.
      heldBack = timer === null
    }, windowMs)
  }
  req.on('data', onData)
  req.once('end', () => {
    stop()
    upstream.end()
  })
  // The client or the service went away: nothing is waited for any more.
  req.once('close', stop)
  upstream.once('close', stop)
  wait()
}

/** Why a body was given up on after `idleMs` without a byte: held (proxy.ts) or forwarded live. */
export function stalledBodyDetail(idleMs: number): string {
  return `no byte of the body arrived for ${idleMs} ms`
}

/** Why a body was given up on below `bodyMinRate`: held (proxy.ts) or forwarded live. */
export function slowBodyDetail(bytesPerSecond: number, windowMs: number): string {
  return `the body arrived slower than ${bytesPerSecond} bytes/s over ${windowMs} ms`
}

/**
 * 504 for a request the service sent nothing of an answer to for `ms` (its connection is closed when
 * the client's body was not all read), or a cut answer.
 */
function answerTimedOut(req: IncomingMessage, res: ServerResponse, ms: number): void {
  if (res.destroyed) return
  if (res.headersSent) return void res.destroy()
  answerProblem(res, serviceDidNotAnswer(ms), { close: !req.readableEnded })
}

/** 408 for a body that stalled (its connection closed: the rest of it is never read), or a cut answer. */
function answerStalled(res: ServerResponse, detail: string): void {
  if (res.headersSent) {
    res.destroy()
    return
  }
  answerProblem(res, { title: 'request body stalled', status: 408, detail }, { close: true })
}

/**
 * A replayed write the service sent nothing for `ms` (socket idle, any byte either way restarts it). It
 * was sent whole, so the service may have applied it.
 */
export class ReplayTimedOut extends Error {
  readonly writeId: number
  readonly ms: number
  constructor(writeId: number, ms: number) {
    super(`replay of write ${writeId} timed out (no byte from the service for ${ms} ms)`)
    this.name = 'ReplayTimedOut'
    this.writeId = writeId
    this.ms = ms
  }
}

export interface ServiceAnswer {
  status: number
  headers: Array<[string, string]>
  body: Buffer
  /**
   * Set when the service's answer went past MAX_REPLAY_ANSWER_BYTES: its status (it did the write; how
   * it went is that status). `status`, `headers` and `body` are then the agent's own 502.
   */
  tooLarge?: number
}

/**
 * The most of a replayed write's answer the agent keeps to pass on (its client gets it once its `done`
 * record is durable, so it is collected whole): per replay lane, so memory stays at replayConcurrency
 * times this. A service that answered with a stream or a huge body held a lane, and the swap, for as
 * long as bytes came, and the agent kept every one.
 */
export const MAX_REPLAY_ANSWER_BYTES = 8 * 1024 * 1024

/** The client's answer when the service's went past MAX_REPLAY_ANSWER_BYTES. */
function answerTooLarge(status: number): ServiceAnswer {
  return {
    status: 502,
    headers: [['content-type', 'application/problem+json']],
    body: Buffer.from(
      JSON.stringify({
        title: 'the service answered too much',
        status: 502,
        detail: `the service answered ${status} to this write, held during an update and replayed, with a body over ${MAX_REPLAY_ANSWER_BYTES} bytes, more than the agent passes on for a held write: the service did the write, its answer's body is dropped`,
      }),
    ),
    tooLarge: status,
  }
}

/**
 * Sends a buffered write to a process and collects its whole answer (rejects on connection errors, with
 * `ReplayTimedOut` when `timeoutMs` passes without a byte either way (null: no limit), and when `cutoff`
 * aborts). A timeout destroys the request, which closes its connection to the service.
 */
export function sendBuffered(
  target: ServiceProcess,
  write: { id: number; method: string; path: string; headers: ReadonlyArray<readonly [string, string]> },
  body: Uint8Array,
  timeoutMs: number | null,
  cutoff?: AbortSignal,
): Promise<ServiceAnswer> {
  const headers: Record<string, string | string[]> = {}
  for (const [name, value] of write.headers) {
    if (name === 'content-length' || HOP_BY_HOP.has(name)) continue
    const prev = headers[name]
    headers[name] = prev === undefined ? value : Array.isArray(prev) ? [...prev, value] : [prev, value]
  }
  headers['content-length'] = String(body.length)
  headers[REPLAY_HEADER] = String(write.id)
  target.enter(true)
  return new Promise<ServiceAnswer>((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port: target.port,
        method: write.method,
        path: write.path,
        headers,
        agent: target.agent,
        ...(timeoutMs === null ? {} : { timeout: timeoutMs }),
        ...(cutoff ? { signal: cutoff } : {}),
      },
      (res) => {
        const chunks: Buffer[] = []
        let size = 0
        res.on('data', (c: Buffer) => {
          size += c.length
          if (size <= MAX_REPLAY_ANSWER_BYTES) return void chunks.push(c)
          // Answered: settled as such. The rest is not read; its connection to the service is closed.
          resolve(answerTooLarge(res.statusCode ?? 502))
          chunks.length = 0
          req.destroy()
        })
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 502,
            headers: headerPairs(res.headers),
            body: Buffer.concat(chunks),
          }),
        )
        res.on('error', fail)
        // An answer cut before its end (the timeout below once it had begun, a reset) is no answer.
        res.on('close', () => (res.complete ? undefined : fail(new Error(`answer to write ${write.id} cut`))))
      },
    )
    /** Set once the service sent nothing for `timeoutMs`: whichever error follows, that is the reason. */
    let timedOut = false
    function fail(error: unknown) {
      reject(timedOut && timeoutMs !== null ? new ReplayTimedOut(write.id, timeoutMs) : error)
    }
    req.on('timeout', () => {
      timedOut = true
      req.destroy(new ReplayTimedOut(write.id, timeoutMs ?? 0))
    })
    req.on('error', fail)
    req.end(body)
  }).finally(() => target.leave(true))
}
