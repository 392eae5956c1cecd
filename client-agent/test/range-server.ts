import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'

export interface RangeServer {
  url: string
  /** Bytes of body sent so far, over all requests. */
  served: () => number
  requests: () => number
  /** Resolves once the answer to request `n` (1-based) is over: sent whole, or its connection closed. */
  ended: (request: number) => Promise<void>
  close(): Promise<void>
}

export interface RangeServerOptions {
  /**
   * Answer `bytes=a-b` with everything from `a` to the end of the body (still a 206 naming the asked
   * range), as a broken cache or proxy in between might: the client must stop where it asked to.
   */
  ignoreRangeEnd?: boolean
  /** Answer these requests 200 with the whole body whatever range they ask, as a cache on a miss may. */
  ignoreRange?: (request: number) => boolean
}

/**
 * What a fault does to one answer: `cut` drops the connection halfway through the body, `stall` sends
 * that half and then nothing while keeping the connection open, `unavailable` answers 503 with
 * Retry-After: 0 (an overloaded server or cache in between), `hold` sends nothing at all (not even the
 * headers) while keeping the connection open, `gone` answers 404 (what the range named is not there).
 */
export type RangeFault = 'cut' | 'stall' | 'unavailable' | 'hold' | 'gone' | undefined

/**
 * A loopback HTTP server that serves `body` with single-range semantics (`bytes=a-b` and `bytes=a-`)
 * and lets a test damage what goes over the wire: `fault(offset, bytes, requestNumber)` may flip bytes
 * in place or return a RangeFault. It stands in for a lossy network, not for the edge.
 */
export async function startRangeServer(
  body: Uint8Array,
  fault: (offset: number, bytes: Uint8Array, request: number) => RangeFault = () => undefined,
  options: RangeServerOptions = {},
): Promise<RangeServer> {
  let served = 0
  let requests = 0
  const ends = new Map<number, Promise<void>>()
  const server: Server = createServer((req, res) => {
    const request = ++requests
    ends.set(request, new Promise((resolve) => res.once('close', () => resolve())))
    const match = options.ignoreRange?.(request) ? null : /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '')
    const start = match ? Number(match[1]) : 0
    const end = match?.[2] ? Math.min(Number(match[2]), body.length - 1) : body.length - 1
    const slice = body.slice(start, options.ignoreRangeEnd ? body.length : end + 1)
    const verdict = fault(start, slice, request)
    if (verdict === 'hold') return
    if (verdict === 'gone') {
      res.writeHead(404, { 'content-type': 'application/problem+json' })
      res.end(JSON.stringify({ title: 'not found', status: 404 }))
      return
    }
    if (verdict === 'unavailable') {
      res.writeHead(503, { 'retry-after': '0', 'content-type': 'application/problem+json' })
      res.end(JSON.stringify({ title: 'unavailable', status: 503 }))
      return
    }
    res.writeHead(match ? 206 : 200, {
      'content-length': String(slice.length),
      ...(match ? { 'content-range': `bytes ${start}-${end}/${body.length}` } : {}),
    })
    if (verdict === 'cut' || verdict === 'stall') {
      const half = slice.subarray(0, Math.floor(slice.length / 2))
      served += half.length
      // The drop waits a moment after the half is written, so the client has read it: a reset that
      // overtakes data still in flight would make the client see nothing at all, and tests that count
      // what a cut connection delivered would depend on scheduling.
      res.write(half, () => {
        if (verdict === 'cut') setTimeout(() => res.destroy(), 20)
      })
      return
    }
    served += slice.length
    res.end(slice)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}/stream`,
    served: () => served,
    requests: () => requests,
    ended: (request) => ends.get(request) ?? Promise.reject(new Error(`no request ${request} yet`)),
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}
