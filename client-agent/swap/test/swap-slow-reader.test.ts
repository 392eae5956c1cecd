import { connect } from 'node:net'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { MAX_PIPELINED } from '../proxy.ts'
import { sleep } from '../service-process.ts'
import type { Supervisor, SupervisorEvent } from '../supervisor.ts'
import {
  bigAnswerService,
  cleanup,
  rawConnection,
  serviceFile,
  silentClient,
  supervise,
  tempDir,
  waitFor,
  within,
} from './harness.ts'

/**
 * A client that never reads the answer to its live write must not hold a swap's drain: the service has
 * answered, so the write is done; only the client's reading is left. Real service processes, real
 * HTTP on loopback, a client whose socket is paused.
 */
const supervisors: Supervisor[] = []
afterAll(async () => {
  for (const s of supervisors) await s.stop().catch(() => undefined)
  await cleanup()
})

describe('swap proxy: a client that does not read its answer', () => {
  it('does not defer the swap: a write the service answered is drained, whatever its client reads', async () => {
    const dir = await tempDir('deltaport-swap-slow-reader-')
    // Every POST is answered at once with 32 MiB: more than the loopback sockets' buffers take.
    const artifact = await serviceFile(join(dir, 'service.mjs'), {
      setup: 'const big = Buffer.alloc(32 * 1024 * 1024, 120)',
      onEnd: `if (req.method === 'POST' && req.url === '/export') return res.end(big)
res.end('ok ' + process.env.DELTAPORT_VERSION)`,
    })
    const events: SupervisorEvent[] = []
    const supervisor = await supervise(dir, artifact, { stopTimeoutMs: 1500 }, events, {
      source: { next: async () => null, restore: async () => undefined },
    })
    supervisors.push(supervisor)

    // The write is sent whole, the service answers, and the client reads nothing of it.
    const client = silentClient(
      '127.0.0.1',
      supervisor.publicPort,
      'POST /export HTTP/1.1\r\nhost: service\r\ncontent-length: 2\r\n\r\n{}',
    )
    await sleep(1000)

    const swap = supervisor.swapTo({ version: '2.0.0', artifactPath: artifact })
    // Before, the write counted as in flight until its client had read the whole answer: the drain
    // waited stopTimeoutMs for it and deferred, and so would every later swap while the client idled.
    expect(await within(swap, 20_000, 'the swap')).toMatchObject({ outcome: 'installed', serving: '2.0.0' })
    const res = await fetch(`http://127.0.0.1:${supervisor.publicPort}/`)
    expect(await res.text()).toBe('ok 2.0.0')
    client.destroy()
  }, 60_000)

  it('on one connection, pipelined, holds one connection to the service, not one per request', async () => {
    const dir = await tempDir('deltaport-swap-pipelined-')
    const artifact = await serviceFile(join(dir, 'service.mjs'), {
      setup: 'const big = Buffer.alloc(8 * 1024 * 1024, 120)',
      onEnd: `if (req.url === '/big') return res.end(big)
res.end('ok ' + req.url)`,
    })
    const events: SupervisorEvent[] = []
    const supervisor = await supervise(dir, artifact, {}, events, {})
    supervisors.push(supervisor)

    // 300 reads of 8 MiB each, pipelined on one connection that never reads a byte.
    const hog = connect(supervisor.publicPort, '127.0.0.1')
    hog.pause()
    let closed = false
    hog.on('error', () => undefined)
    hog.on('close', () => {
      closed = true
    })
    hog.write('GET /big HTTP/1.1\r\nhost: service\r\n\r\n'.repeat(300))
    await sleep(1000)
    // Before, the proxy sent all 300 at once; the answers it could not pass on held every one of its 256
    // connections to the service, and nobody's request was answered any more.
    const res = await within(fetch(`http://127.0.0.1:${supervisor.publicPort}/`), 5000, 'a read')
    expect(await res.text()).toBe('ok /')
    // More than MAX_PIPELINED waiting closed the connection: read now, it ends within the first answer.
    let received = 0
    hog.on('data', (chunk: Buffer) => {
      received += chunk.length
    })
    hog.resume()
    await waitFor(
      () => closed,
      10_000,
      () => `the pipelining connection is still open (${received} bytes)`,
    )
    expect(received).toBeLessThan(2 * 8 * 1024 * 1024)
    hog.destroy()

    // A few pipelined requests are answered, in order.
    const client = rawConnection(supervisor.publicPort)
    client.send(
      Array.from({ length: MAX_PIPELINED }, (_, i) => `GET /${i} HTTP/1.1\r\nhost: service\r\n\r\n`).join(''),
    )
    const text = await client.receive(new RegExp(`ok /${MAX_PIPELINED - 1}$`))
    expect([...text.matchAll(/ok \/(\d+)/g)].map((m) => Number(m[1]))).toEqual(
      Array.from({ length: MAX_PIPELINED }, (_, i) => i),
    )
    client.close()
  }, 60_000)

  it('is cut once it takes nothing of its answer for answerIdleTimeoutMs; a slow reader is not', async () => {
    const dir = await tempDir('deltaport-swap-answer-idle-')
    const artifact = await bigAnswerService(dir)
    const events: SupervisorEvent[] = []
    const supervisor = await supervise(dir, artifact, { answerIdleTimeoutMs: 1500 }, events, {})
    supervisors.push(supervisor)
    const url = `http://127.0.0.1:${supervisor.publicPort}`

    /** A client of /big that reads for `readMs`, then takes nothing for `pauseMs`, over and over. */
    const reader = (readMs: number, pauseMs: number) => {
      const socket = connect(supervisor.publicPort, '127.0.0.1')
      const state = { bytes: 0, closed: false }
      socket.on('error', () => undefined)
      socket.on('close', () => {
        state.closed = true
      })
      socket.on('data', (chunk: Buffer) => {
        state.bytes += chunk.length
      })
      const cycle = () => {
        if (state.closed) return
        socket.pause()
        setTimeout(() => {
          socket.resume()
          setTimeout(cycle, readMs)
        }, pauseMs)
      }
      socket.pause()
      socket.write('GET /big HTTP/1.1\r\nhost: service\r\n\r\n')
      setTimeout(cycle, 0)
      return { socket, state }
    }

    // Reads nothing for a minute; the other reads 200 ms at a time with a second between.
    const hog = reader(0, 60_000)
    const slow = reader(200, 1000)
    await sleep(3500)
    // The stalled answer was cut, and its connection to the service with it. Before, both stayed until
    // the client left: 256 such clients took every connection to the service, for as long as they liked.
    const closed = await (await fetch(`${url}/closed`)).text()
    expect(Number(closed)).toBeGreaterThanOrEqual(1)
    hog.socket.resume()
    await waitFor(
      () => hog.state.closed,
      10_000,
      () => 'the stalled client is still connected',
    )
    expect(hog.state.bytes).toBeLessThan(32 * 1024 * 1024)

    await waitFor(() => slow.state.bytes > 32 * 1024 * 1024 || slow.state.closed, 60_000)
    expect(slow.state.closed).toBe(false)
    slow.socket.destroy()
  }, 90_000)
})
