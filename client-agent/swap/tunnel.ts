import type { IncomingMessage } from 'node:http'
import { connect, type Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { endToEndHeaders, forwardedFor } from './forward.ts'
import { refuseUpgrade } from './problem-answer.ts'
import type { ServiceProcess } from './service-process.ts'

/**
 * Proxies an HTTP upgrade (WebSocket or another `Upgrade:` protocol) as a raw byte tunnel to `target`: the
 * request goes on with its `Connection: Upgrade` and `Upgrade` (hop-by-hop, so rebuilt here on purpose),
 * and from then on both directions are piped untouched, the service's own 101 (or refusal) included.
 * The tunnel is registered on the process, which closes it after a grace when it is stopped.
 * `ended` is called (at least once; the caller counts it once) when the tunnel is over: when either side
 * closes, errors included (an erring socket is destroyed, so it closes too), the service's refusal and an
 * unreachable service as well. The tunnel's slot of its client address (proxy.ts) is given back there.
 */
export function openTunnel(
  target: ServiceProcess,
  req: IncomingMessage,
  client: Duplex,
  head: Buffer,
  ended: () => void,
): void {
  const upstream: Socket = connect(target.port, '127.0.0.1')
  upstream.once('close', ended)
  client.once('close', ended)
  const close = () => {
    client.destroy()
    upstream.destroy()
  }
  target.addTunnel(upstream)
  upstream.once('connect', () => {
    const headers: Record<string, string | string[]> = {
      ...endToEndHeaders(req.headers),
      'x-forwarded-for': forwardedFor(req.headers, req.socket.remoteAddress),
      connection: 'Upgrade',
      upgrade: req.headers.upgrade ?? '',
    }
    const lines = [`${req.method ?? 'GET'} ${req.url ?? '/'} HTTP/1.1`]
    for (const [name, value] of Object.entries(headers))
      for (const v of Array.isArray(value) ? value : [value]) lines.push(`${name}: ${v}`)
    upstream.write(`${lines.join('\r\n')}\r\n\r\n`)
    if (head.length > 0) upstream.write(head)
    upstream.pipe(client)
    client.pipe(upstream)
  })
  let answered = false
  upstream.once('error', () => {
    // Nothing reached the client yet when the service could not be reached: say so in HTTP, as the
    // proxy's other answers (problem+json), and close the client's socket after the linger even if it
    // keeps its side open (its end alone left it half-open for good).
    if (upstream.bytesRead === 0 && client.writable) {
      answered = true
      refuseUpgrade(client, '502 Bad Gateway', 1, {
        title: 'service unavailable',
        status: 502,
        detail: 'the service refused or dropped the upgraded connection',
      })
    } else close()
  })
  upstream.once('close', () => (answered ? undefined : close()))
  client.once('error', close)
  client.once('close', close)
  // Either side's end ends the tunnel once what it sent has gone on, as nginx does with upgraded
  // connections. Left half-open, a tunnel whose client had gone (its FIN passed on) lasted as long as
  // the service kept its side open, and with it the service's connection and the address's slot.
  client.once('end', () => upstream.end(() => close()))
  upstream.once('end', () => client.end(() => close()))
}
