import { once } from 'node:events'
import { type AddressInfo, connect, createServer, type Socket } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { refuseUpgrade } from '../problem-answer.ts'

/**
 * A refused upgrade (503 while no version runs or the agent stops, 429 past the tunnel cap) is answered on
 * the raw socket. node:http leaves such a socket half-open after `end`: a client that never closes its
 * side must not keep the agent's socket. Real sockets over loopback.
 */
const cleanups: (() => void)[] = []
afterEach(() => {
  for (const cleanup of cleanups.splice(0)) cleanup()
})

/** A server that refuses the first request on each connection; resolves with its side of the socket. */
async function refusingServer(lingerMs: number) {
  let accepted: (socket: Socket) => void = () => undefined
  const serverSide = new Promise<Socket>((resolve) => {
    accepted = resolve
  })
  // allowHalfOpen: like node:http's upgrade sockets, this side does not end itself when the client ends.
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    accepted(socket)
    socket.once('data', () =>
      refuseUpgrade(
        socket,
        '503 Service Unavailable',
        1,
        { title: 'service unavailable', status: 503, detail: 'the agent is stopping' },
        lingerMs,
      ),
    )
  })
  cleanups.push(() => server.close())
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return { port: (server.address() as AddressInfo).port, serverSide }
}

describe('refuseUpgrade', () => {
  it('answers problem+json with Retry-After and closes its socket though the client never closes its side', async () => {
    const { port, serverSide } = await refusingServer(50)
    // allowHalfOpen: this client keeps its side open after the agent's end, as a careless one would.
    const client = connect({ host: '127.0.0.1', port, allowHalfOpen: true })
    cleanups.push(() => client.destroy())
    client.on('error', () => undefined)
    let text = ''
    client.on('data', (chunk: Buffer) => {
      text += chunk.toString('latin1')
    })
    client.write('GET /chat HTTP/1.1\r\nHost: s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n')
    const agentSocket = await serverSide
    await once(client, 'end')
    await Promise.race([
      once(agentSocket, 'close'),
      new Promise((_, reject) => setTimeout(() => reject(new Error('the refused socket stayed open')), 5000)),
    ])
    expect(client.destroyed).toBe(false)
    const [head = '', body = ''] = text.split('\r\n\r\n')
    expect(head).toMatch(/^HTTP\/1\.1 503 Service Unavailable\r\n/)
    expect(head).toContain('content-type: application/problem+json')
    expect(head).toContain('retry-after: 1')
    expect(head).toContain(`content-length: ${Buffer.byteLength(body)}`)
    expect(JSON.parse(body)).toEqual({
      title: 'service unavailable',
      status: 503,
      detail: 'the agent is stopping',
    })
  })
})
