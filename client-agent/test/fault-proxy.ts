import {
  createServer,
  type IncomingHttpHeaders,
  type IncomingMessage,
  request as proxyRequest,
  type Server,
  type ServerResponse,
} from 'node:http'
import type { AddressInfo } from 'node:net'

/**
 * What the proxy does to one exchange. Everything but the answers it makes up itself (`unavailable`,
 * `html-error`, `garbage-json`, `stall-headers`) goes to the real edge first, then is damaged on the
 * way back:
 * - `reset`: the edge's headers and half its body, then the TCP connection is destroyed (an RST);
 * - `truncate`: the same half, then a clean FIN, the Content-Length still promising the whole body;
 * - `stall-headers`: no answer at all, the connection left open;
 * - `cut-before-answer`: no answer at all, the connection reset (an RST) at once: fetch rejects bare
 *   (`TypeError: fetch failed`), before any response exists;
 * - `drop-answer`: the request goes to the edge whole and the edge's whole answer is read, then the
 *   client's connection is reset (an RST) without a byte of it: the edge did everything, the client
 *   only sees `fetch failed` (a Worker dying after its work, or a link cut on the way back);
 * - `fail-after-forward`: the request goes to the edge whole and the edge's whole answer is read, then
 *   the client gets `status` (a problem+json 5xx) instead: the edge did everything, a load balancer or
 *   a Worker failing after the work says it failed;
 * - `stall-body`: the headers and half the body, then silence on an open connection;
 * - `trickle`: the headers, then one byte (or `bytes`) every `trickleMs` (slowloris toward the client);
 * - `ignore-range`: the Range header dropped on the way in, so the edge answers 200 with everything;
 * - `other-range`: the edge is asked for `bytes=<from>-` instead, and its honest 206 (that range's
 *   bytes and Content-Range) goes back to a client that asked for something else;
 * - `lie-content-range`: the asked range's bytes, but a Content-Range naming another start;
 * - `flip-bytes`: the edge's answer, headers and length as they are, every byte of its body inverted
 *   (XOR 0xff): the right range of damaged bytes, as a faulty cache or link may deliver;
 * - `unsatisfiable`: a 416 for any request with a Range, as a cache holding a shorter copy may send;
 * - `unavailable`: a 503, with `Retry-After: <retryAfter>` when set;
 * - `html-error`: a 502 HTML page, as a load balancer in front of a dead origin sends;
 * - `garbage-json`: a 200 `application/json` body that is not JSON;
 * - `replace-body`: the edge's status and headers (but its length), the body replaced by `body`: an
 *   answer of the right status that is not JSON or not of the right shape;
 * - `endless-body`: the edge's status and headers (but its length), then JSON-looking bytes that never end;
 * - `other-path`: the request is sent to the edge under `path` instead, and the edge's own answer to that
 *   is relayed: what a device holding a stale URL (one the edge no longer serves as it was) is told;
 * - `redirect`: a 302 to `location` (a mirror or man in the middle aiming the agent at another host).
 */
export type Fault =
  | {
      kind:
        | 'reset'
        | 'truncate'
        | 'stall-body'
        | 'stall-headers'
        | 'ignore-range'
        | 'cut-before-answer'
        | 'drop-answer'
        | 'flip-bytes'
    }
  | { kind: 'trickle'; trickleMs: number; bytes?: number }
  | { kind: 'other-range'; from: number }
  | { kind: 'lie-content-range'; from: number }
  | { kind: 'unavailable'; retryAfter?: string }
  | { kind: 'html-error' | 'garbage-json' | 'unsatisfiable' | 'endless-body' }
  | { kind: 'replace-body'; body: string }
  | { kind: 'other-path'; path: string }
  | { kind: 'redirect'; location: string }
  | { kind: 'fail-after-forward'; status: number }

/** One request as the proxy saw it, before any fault. */
export interface SeenRequest {
  /** 1-based, over the proxy's life. */
  number: number
  method: string
  path: string
  range: string | undefined
}

/** How long a reset or truncation waits after the half body it lets through has been written. */
const CUT_GRACE_MS = 250

export interface FaultProxy {
  url: string
  /** Every request the proxy received, in order. */
  seen: () => SeenRequest[]
  /** Body bytes the proxy passed on to the client (damaged answers included), over all requests. */
  bodyBytes: () => number
  close(): Promise<void>
}

/**
 * A real HTTP proxy on a loopback port in front of `upstream` (the real edge): `decide` picks the
 * fault for each request (undefined passes it through untouched). It stands in for a faulty network,
 * cache or load balancer between the device and the edge; the edge's own answers are never forged
 * except where a fault says so.
 */
export async function startFaultProxy(
  upstream: string,
  decide: (request: SeenRequest) => Fault | undefined,
): Promise<FaultProxy> {
  const target = new URL(upstream)
  const seen: SeenRequest[] = []
  let bodyBytes = 0
  const timers = new Set<ReturnType<typeof setInterval>>()

  const server: Server = createServer((req, res) => {
    const request: SeenRequest = {
      number: seen.length + 1,
      method: req.method ?? 'GET',
      path: req.url ?? '/',
      range: req.headers.range,
    }
    seen.push(request)
    const fault = decide(request)
    if (fault?.kind === 'stall-headers') return
    if (fault?.kind === 'cut-before-answer') {
      req.socket.resetAndDestroy()
      return
    }
    if (fault?.kind === 'unavailable') {
      res.writeHead(503, {
        'content-type': 'application/problem+json',
        ...(fault.retryAfter !== undefined ? { 'retry-after': fault.retryAfter } : {}),
      })
      res.end(JSON.stringify({ type: 'about:blank', title: 'Service Unavailable', status: 503 }))
      return
    }
    if (fault?.kind === 'unsatisfiable' && request.range !== undefined) {
      res.writeHead(416, { 'content-range': 'bytes */1000' }).end()
      return
    }
    if (fault?.kind === 'html-error') {
      res.writeHead(502, { 'content-type': 'text/html' })
      res.end('<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>')
      return
    }
    if (fault?.kind === 'redirect') {
      res.writeHead(302, { location: fault.location, 'content-type': 'text/plain' })
      res.end('moved')
      return
    }
    if (fault?.kind === 'garbage-json') {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end('{"signed": {"name": "app", <html>')
      return
    }
    const headers: IncomingHttpHeaders = { ...req.headers, host: target.host }
    if (fault?.kind === 'ignore-range') {
      delete headers.range
      delete headers['if-range']
    }
    if (fault?.kind === 'other-range') headers.range = `bytes=${fault.from}-`
    const out = proxyRequest(
      {
        host: target.hostname,
        port: target.port,
        method: req.method,
        path: fault?.kind === 'other-path' ? fault.path : req.url,
        headers,
      },
      (answer) => relay(answer, res, fault),
    )
    out.on('error', () => res.destroy())
    req.pipe(out)
  })

  /** Sends the edge's answer on, damaged as `fault` says. */
  function relay(answer: IncomingMessage, res: ServerResponse, fault: Fault | undefined): void {
    if (fault?.kind === 'drop-answer') {
      answer.resume()
      answer.on('end', () => res.socket?.resetAndDestroy())
      return
    }
    if (fault?.kind === 'fail-after-forward') {
      answer.resume()
      answer.on('end', () => {
        res.writeHead(fault.status, { 'content-type': 'application/problem+json' })
        res.end(JSON.stringify({ type: 'about:blank', title: 'Internal Server Error', status: fault.status }))
      })
      return
    }
    const headers = { ...answer.headers }
    if (fault?.kind === 'lie-content-range') {
      const match = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(String(headers['content-range'] ?? ''))
      if (match) {
        const length = Number(match[2]) - Number(match[1])
        headers['content-range'] = `bytes ${fault.from}-${fault.from + length}/${match[3]}`
      }
    }
    if (fault?.kind === 'replace-body' || fault?.kind === 'endless-body') {
      delete headers['content-length']
      delete headers['content-encoding']
      res.writeHead(answer.statusCode ?? 502, headers)
      answer.resume()
      if (fault.kind === 'replace-body') {
        bodyBytes += Buffer.byteLength(fault.body)
        res.end(fault.body)
      } else endless(res)
      return
    }
    res.writeHead(answer.statusCode ?? 502, headers)
    const cuts = fault?.kind === 'reset' || fault?.kind === 'truncate' || fault?.kind === 'stall-body'
    // Half the body; without a Content-Length (a chunked answer), half of its first chunk.
    const length = Number(headers['content-length'] ?? Number.NaN)
    let cutting = cuts && Number.isFinite(length) ? length / 2 : Number.POSITIVE_INFINITY
    let sent = 0
    if (fault?.kind === 'trickle') {
      answer.pause()
      const timer = setInterval(() => {
        const byte = answer.read(fault.bytes ?? 1) as Buffer | null
        if (byte === null) {
          if (answer.readableEnded) {
            clearInterval(timer)
            res.end()
          }
          return
        }
        bodyBytes += byte.length
        res.write(byte)
      }, fault.trickleMs)
      timers.add(timer)
      res.on('close', () => {
        clearInterval(timer)
        answer.destroy()
      })
      return
    }
    answer.on('data', (raw: Buffer) => {
      const chunk = fault?.kind === 'flip-bytes' ? raw.map((byte) => byte ^ 0xff) : raw
      if (cuts && cutting === Number.POSITIVE_INFINITY) cutting = Math.max(1, Math.floor(chunk.length / 2))
      if (sent >= cutting) return
      const part = chunk.subarray(0, Math.max(0, Math.floor(cutting - sent)))
      sent += chunk.length
      bodyBytes += part.length
      if (sent < cutting) {
        res.write(part)
        return
      }
      answer.destroy()
      // The cut waits until the half has left this process, then a while for the client to read it: an
      // RST that arrives before the client's read throws away what its kernel had received (on a busy
      // machine 20 ms was too short, and the client saw no byte of the half: CI flake).
      res.write(part, () => {
        if (fault?.kind === 'reset') setTimeout(() => res.socket?.resetAndDestroy(), CUT_GRACE_MS)
        if (fault?.kind === 'truncate') setTimeout(() => res.socket?.end(), CUT_GRACE_MS)
      })
    })
    answer.on('end', () => {
      if (sent < cutting) res.end()
    })
  }

  /** `{"a":"xxx…` in 64 KiB chunks, as fast as the client takes them, until it goes away. */
  function endless(res: ServerResponse): void {
    const chunk = Buffer.alloc(64 * 1024, 'x')
    const more = () => {
      while (!res.destroyed) {
        bodyBytes += chunk.length
        if (!res.write(chunk)) return void res.once('drain', more)
      }
    }
    res.write('{"a":"')
    more()
  }

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    seen: () => [...seen],
    bodyBytes: () => bodyBytes,
    close: () =>
      new Promise((resolve) => {
        for (const timer of timers) clearInterval(timer)
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}
