import { once } from 'node:events'
import { writeFile } from 'node:fs/promises'
import { request } from 'node:http'
import { connect } from 'node:net'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import type { Supervisor, SupervisorEvent } from '../supervisor.ts'
import { cleanup, supervise, tempDir, waitFor } from './harness.ts'

/**
 * Upgraded connections (tunnels) per client address: `maxTunnelsPerAddress`. Before, one address could
 * open as many as it liked (each a connection to the service and two sockets in the agent), and the
 * per-address request cap never saw them. Real service process, raw clients each on a loopback address
 * of its own (Linux routes all of 127/8 to lo).
 */
const supervisors: Supervisor[] = []
afterAll(async () => {
  for (const s of supervisors) await s.stop().catch(() => undefined)
  await cleanup()
})

/**
 * Speaks x-test after a 101 (echoes each chunk; `bye` makes it close the tunnel from its side); any
 * other Upgrade is refused with 400. Plain requests get `ok`.
 */
async function tunnelService(dir: string): Promise<string> {
  const file = join(dir, 'service.mjs')
  await writeFile(
    file,
    `import { createServer } from 'node:http'
const server = createServer((req, res) => {
  req.resume()
  // Stops listening (the process runs on): from then on the agent cannot reach it.
  if (req.url === '/unlisten') server.close()
  req.on('end', () => res.end('ok'))
})
server.on('upgrade', (req, socket) => {
  socket.on('error', () => undefined)
  if (req.headers.upgrade !== 'x-test') return socket.end('HTTP/1.1 400 Bad Request\\r\\ncontent-length: 0\\r\\n\\r\\n')
  socket.write('HTTP/1.1 101 Switching Protocols\\r\\nupgrade: x-test\\r\\nconnection: Upgrade\\r\\n\\r\\n')
  socket.on('data', (d) => (d.toString() === 'bye' ? socket.destroy() : socket.write('echo:' + d.toString())))
})
process.on('SIGTERM', () => process.exit(0))
server.listen(Number(process.env.PORT), '127.0.0.1')
`,
  )
  return file
}

/** A raw connection from `localAddress` that sends an upgrade handshake and collects what comes back. */
function tunnel(port: number, localAddress: string, protocol = 'x-test') {
  const socket = connect({ host: '127.0.0.1', port, localAddress })
  let text = ''
  let closed = false
  socket.on('data', (chunk: Buffer) => {
    text += chunk.toString('latin1')
  })
  socket.on('error', () => undefined)
  socket.on('close', () => {
    closed = true
  })
  socket.write(`GET /chat HTTP/1.1\r\nHost: service\r\nConnection: Upgrade\r\nUpgrade: ${protocol}\r\n\r\n`)
  return {
    socket,
    get text() {
      return text
    },
    get closed() {
      return closed
    },
    /** Waits until the text received matches `pattern`. */
    receive: (pattern: RegExp) =>
      waitFor(
        () => pattern.test(text),
        10_000,
        () => `no ${pattern} in ${text}`,
      ),
  }
}

/** A plain GET from `localAddress`: its status. */
function get(port: number, localAddress: string, path = '/'): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, localAddress, agent: false }, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
    })
    req.on('error', reject)
    req.end()
  })
}

describe('swap proxy: tunnels per client address', () => {
  it('refuses an upgrade past maxTunnelsPerAddress with 429, and counts a tunnel until either side closes it', async () => {
    const dir = await tempDir('deltaport-swap-tunnel-cap-')
    const events: SupervisorEvent[] = []
    const supervisor = await supervise(dir, await tunnelService(dir), { maxTunnelsPerAddress: 2 }, events)
    supervisors.push(supervisor)
    const port = supervisor.publicPort
    const open = () => supervisor.counters.openTunnels
    const openIs = (n: number) =>
      waitFor(
        () => open() === n,
        10_000,
        () => `${open()} tunnels open, not ${n}`,
      )

    const t1 = tunnel(port, '127.0.0.5')
    const t2 = tunnel(port, '127.0.0.5')
    await t1.receive(/^HTTP\/1\.1 101 /)
    await t2.receive(/^HTTP\/1\.1 101 /)
    await openIs(2)

    // The third from the same address is refused, and closed. Before, it was tunnelled like the others.
    const t3 = tunnel(port, '127.0.0.5')
    await waitFor(
      () => t3.closed,
      10_000,
      () => `the third tunnel still open: ${t3.text}`,
    )
    const [head, body] = t3.text.split('\r\n\r\n')
    expect(head).toMatch(/^HTTP\/1\.1 429 Too Many Requests\r\n/)
    expect(head).toMatch(/\r\ncontent-type: application\/problem\+json\r\n/)
    expect(head).toMatch(/\r\nretry-after: 5\r\n/)
    expect(JSON.parse(body!)).toEqual({
      title: 'too many upgraded connections from this address',
      status: 429,
      detail: 'this address already has 2 upgraded connections (tunnels) open; one must close first',
    })
    expect(supervisor.counters.refusedTunnels).toBe(1)
    expect(events.filter((e) => e.type === 'warning')).toEqual([
      {
        type: 'warning',
        message:
          'an upgrade from 127.0.0.5 was refused (429): it has maxTunnelsPerAddress (2) tunnels open; if another reverse proxy on this host forwards every client from this one address, raise maxTunnelsPerAddress in --swap-config (said once)',
      },
    ])
    // A cap of its own: the address's ordinary requests still go, and other addresses' tunnels too.
    expect(await get(port, '127.0.0.5')).toBe(200)
    const elsewhere = tunnel(port, '127.0.0.6')
    await elsewhere.receive(/^HTTP\/1\.1 101 /)
    await openIs(3)
    // The tunnels that were let in still work.
    t1.socket.write('one')
    await t1.receive(/echo:one/)

    // The client closes one: its slot is given back.
    t1.socket.destroy()
    await openIs(2)
    const t4 = tunnel(port, '127.0.0.5')
    await t4.receive(/^HTTP\/1\.1 101 /)
    await openIs(3)

    // The service closes one.
    t2.socket.write('bye')
    await waitFor(() => t2.closed, 10_000)
    await openIs(2)
    const t5 = tunnel(port, '127.0.0.5')
    await t5.receive(/^HTTP\/1\.1 101 /)
    await openIs(3)

    // The client resets one (an error on the proxy's side of it).
    t4.socket.resetAndDestroy()
    await openIs(2)
    // The service refuses upgrades: each ends its tunnel, three in a row from an address with one slot free.
    for (let i = 0; i < 3; i += 1) {
      const refused = tunnel(port, '127.0.0.5', 'nope')
      await refused.receive(/^HTTP\/1\.1 400 /)
      await waitFor(() => refused.closed, 10_000)
      await openIs(2)
    }
    const t6 = tunnel(port, '127.0.0.5')
    await t6.receive(/^HTTP\/1\.1 101 /)
    await openIs(3)
    expect(supervisor.counters.refusedTunnels).toBe(1)
    for (const t of [t5, t6, elsewhere]) t.socket.destroy()
    await openIs(0)
  }, 60_000)

  it('answers an upgrade the service cannot take with 502 problem+json, and closes it though the client keeps its side open', async () => {
    const dir = await tempDir('deltaport-swap-tunnel-502-')
    const events: SupervisorEvent[] = []
    const supervisor = await supervise(dir, await tunnelService(dir), { maxTunnelsPerAddress: 1 }, events)
    supervisors.push(supervisor)
    const port = supervisor.publicPort
    expect(await get(port, '127.0.0.7', '/unlisten')).toBe(200)

    // allowHalfOpen: this client never closes its side after the answer, as a careless one would.
    const client = connect({ host: '127.0.0.1', port, localAddress: '127.0.0.7', allowHalfOpen: true })
    let text = ''
    let closed = false
    client.on('data', (chunk: Buffer) => {
      text += chunk.toString('latin1')
    })
    client.on('error', () => undefined)
    client.on('close', () => {
      closed = true
    })
    client.write('GET /chat HTTP/1.1\r\nHost: service\r\nConnection: Upgrade\r\nUpgrade: x-test\r\n\r\n')
    await once(client, 'end')
    const [head = '', body = ''] = text.split('\r\n\r\n')
    expect(head).toMatch(/^HTTP\/1\.1 502 Bad Gateway\r\n/)
    expect(head).toContain('content-type: application/problem+json')
    expect(head).toContain('retry-after: 1')
    expect(JSON.parse(body)).toEqual({
      title: 'service unavailable',
      status: 502,
      detail: 'the service refused or dropped the upgraded connection',
    })
    // Its slot is given back with the unreachable upstream.
    await waitFor(
      () => supervisor.counters.openTunnels === 0,
      10_000,
      () => `${supervisor.counters.openTunnels} tunnels open`,
    )
    // The client keeps writing: once the agent's socket is closed a write meets a reset, which closes the
    // client's too. Before, the agent's end alone left its socket half-open for as long as the client
    // kept its side.
    await waitFor(
      () => {
        if (!closed) client.write('.')
        return closed
      },
      15_000,
      () => 'the agent kept the answered socket open',
    )
  }, 30_000)
})
