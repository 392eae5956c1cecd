import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'

export interface RangeServer {
  url: string
  /** Bytes of body sent so far, over all requests. */
  served: () => number
  requests: () => number
  close(): Promise<void>
}

export interface RangeServerOptions {
  /**
   * Answer `bytes=a-b` with everything from `a` to the end of the body (still a 206 naming the asked
   * range), as a broken cache or proxy in between might: the client must stop where it asked to.
   */
  ignoreRangeEnd?: boolean
}

/**
 * A loopback HTTP server that serves `body` with single-range semantics and lets a test damage what
 * goes over the wire: `fault(offset, bytes, requestNumber)` may flip bytes in place or return 'cut'
 * to drop the connection mid-response. It stands in for a lossy network, not for the edge.
 */
export async function startRangeServer(
  body: Uint8Array,
  fault: (offset: number, bytes: Uint8Array, request: number) => 'cut' | undefined = () => undefined,
  options: RangeServerOptions = {},
): Promise<RangeServer> {
  let served = 0
  let requests = 0
  const server: Server = createServer((req, res) => {
    const request = ++requests
    const match = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '')
    const start = match ? Number(match[1]) : 0
    const end = match ? Math.min(Number(match[2]), body.length - 1) : body.length - 1
    const slice = body.slice(start, options.ignoreRangeEnd ? body.length : end + 1)
    const verdict = fault(start, slice, request)
    res.writeHead(match ? 206 : 200, {
      'content-length': String(slice.length),
      ...(match ? { 'content-range': `bytes ${start}-${end}/${body.length}` } : {}),
    })
    if (verdict === 'cut') {
      const half = slice.subarray(0, Math.floor(slice.length / 2))
      served += half.length
      res.write(half, () => res.destroy())
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
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}
