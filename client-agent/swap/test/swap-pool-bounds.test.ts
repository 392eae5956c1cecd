import { readFile } from 'node:fs/promises'
import { request } from 'node:http'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { sleep } from '../service-process.ts'
import type { Supervisor, SupervisorEvent } from '../supervisor.ts'
import { cleanup, serviceFile, silentClient, supervise, tempDir, waitFor, within } from './harness.ts'

/**
 * The agent opens at most 256 connections to a service process. Clients that never read their answers
 * (one address) and a service that never answers must not take them all: real service processes, real
 * clients on loopback, each address a loopback address of its own (Linux routes all of 127/8 to lo).
 */
const supervisors: Supervisor[] = []
afterAll(async () => {
  for (const s of supervisors) await s.stop().catch(() => undefined)
  await cleanup()
})

/**
 * A service that answers /big with 8 MiB, never answers /hang, answers /slow after 600 ms and reports
 * at /stats how many /big connections are open (and the most at once) and how many /hang ones closed.
 */
async function poolService(dir: string): Promise<string> {
  return serviceFile(join(dir, 'service.mjs'), {
    setup: `const big = Buffer.alloc(8 * 1024 * 1024, 120)
const stats = { open: 0, peak: 0, hung: 0, hungClosed: 0 }`,
    onEnd: `if (req.url === '/big') {
  stats.open += 1
  stats.peak = Math.max(stats.peak, stats.open)
  req.socket.once('close', () => { stats.open -= 1 })
  return res.end(big)
}
if (req.url === '/hang') {
  stats.hung += 1
  req.socket.once('close', () => { stats.hungClosed += 1 })
  return
}
if (req.url === '/slow') return setTimeout(() => res.end('slow ' + process.env.DELTAPORT_VERSION), 600)
if (req.url === '/stats') return res.end(JSON.stringify(stats))
res.end('ok ' + req.url)`,
  })
}

/** A request from `localAddress` (a client address of its own): its status, headers and body. */
function from(
  localAddress: string,
  port: number,
  path: string,
  method = 'GET',
): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method, localAddress, agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => {
        body += chunk
      })
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), body }),
      )
    })
    req.on('error', reject)
    req.end(method === 'POST' ? '{}' : undefined)
  })
}

const stats = async (port: number) =>
  JSON.parse((await from('127.0.0.1', port, '/stats')).body) as {
    open: number
    peak: number
    hung: number
    hungClosed: number
  }

/** The pool service behind a proxy that gives up on it after 1 s of silence, without the address cap. */
async function answerBoundSupervisor(dir: string): Promise<Supervisor> {
  const supervisor = await supervise(
    dir,
    await poolService(dir),
    { serviceAnswerTimeoutMs: 1000, maxInFlightPerAddress: 256 },
    [],
  )
  supervisors.push(supervisor)
  return supervisor
}

describe('swap proxy: the connections to the service', () => {
  it('one address that reads none of its answers holds maxInFlightPerAddress of them, not all', async () => {
    const dir = await tempDir('deltaport-swap-address-cap-')
    const events: SupervisorEvent[] = []
    const supervisor = await supervise(dir, await poolService(dir), {}, events)
    supervisors.push(supervisor)
    const port = supervisor.publicPort

    // 300 connections from 127.0.0.3 each ask for 8 MiB and read nothing (answerIdleTimeoutMs, 60 s,
    // would cut them only in a minute, and they could ask again).
    const hogs = Array.from({ length: 300 }, () =>
      silentClient('127.0.0.3', port, 'GET /big HTTP/1.1\r\nhost: service\r\n\r\n'),
    )
    await waitFor(() => supervisor.counters.forwarded >= 32, 10_000)
    await sleep(1000)
    // Another client is answered at once. Before, the 300 took all 256 connections to the service and
    // nobody else was answered while they stayed.
    const other = await within(from('127.0.0.2', port, '/'), 3000, 'a read from another address')
    expect(other).toMatchObject({ status: 200, body: 'ok /' })
    const seen = await stats(port)
    expect(seen.peak).toBe(32)
    expect(seen.open).toBe(32)
    // 32 at the service, 256 waiting in the proxy (holding nothing there), the other 12 refused.
    await waitFor(
      () => supervisor.counters.refused429 === 12,
      5000,
      () => `${supervisor.counters.refused429} refused with 429`,
    )

    // Once they go, the address has its slots back: nothing of theirs is left counted.
    for (const hog of hogs) hog.destroy()
    await waitFor(() => hogs.every((hog) => hog.destroyed), 5000)
    const again = await within(from('127.0.0.3', port, '/'), 3000, 'a read from the same address')
    expect(again).toMatchObject({ status: 200, body: 'ok /' })
    await waitFor(() => supervisor.counters.forwarded >= 34, 5000)
    // The owner is told once (behind another reverse proxy on this host the cap would bound everyone).
    const warnings = events.flatMap((event) => (event.type === 'warning' ? [event.message] : []))
    expect(warnings).toEqual([
      'requests from 127.0.0.3 now wait for one of its maxInFlightPerAddress (32) at the service; if another reverse proxy on this host forwards every client from this one address, raise maxInFlightPerAddress in --swap-config (said once)',
    ])
  }, 60_000)

  it('answers 504 for a service that sends nothing for serviceAnswerTimeoutMs, and frees its connection', async () => {
    const dir = await tempDir('deltaport-swap-answer-timeout-')
    const supervisor = await answerBoundSupervisor(dir)
    const port = supervisor.publicPort

    const started = Date.now()
    const hung = await within(from('127.0.0.2', port, '/hang', 'POST'), 10_000, 'the hung write')
    expect(Date.now() - started).toBeGreaterThanOrEqual(900)
    expect(hung.status).toBe(504)
    expect(hung.type).toBe('application/problem+json')
    expect(JSON.parse(hung.body)).toEqual({
      title: 'the service did not answer',
      status: 504,
      detail: 'no answer from the service within 1000 ms',
    })
    await waitFor(() => supervisor.counters.forwarded >= 1, 1000)
    expect((await stats(port)).hungClosed).toBe(1)
    // A service slower than a health check but within the bound is not cut.
    expect(await from('127.0.0.2', port, '/slow')).toMatchObject({ status: 200, body: 'slow 1.0.0' })
  }, 60_000)

  it('cuts a write kept for a client that hung up once the service sent nothing for serviceAnswerTimeoutMs', async () => {
    const dir = await tempDir('deltaport-swap-kept-timeout-')
    const supervisor = await answerBoundSupervisor(dir)
    const port = supervisor.publicPort

    // 300 writes sent whole, their clients gone: the 256 on a connection to the service are kept for its
    // answer (it may apply them), the 44 still queued for a connection are cut. The service never
    // answers: before, the 256 were kept for as long as it ran, and no other request was answered again.
    const writers = Array.from({ length: 300 }, (_, i) =>
      silentClient(
        `127.0.1.${1 + (i % 200)}`,
        port,
        'POST /hang HTTP/1.1\r\nhost: service\r\ncontent-length: 2\r\n\r\n{}',
      ),
    )
    await waitFor(() => supervisor.counters.forwarded >= 300, 10_000)
    await sleep(300)
    for (const writer of writers) writer.destroy()
    await sleep(2000)
    const read = await within(from('127.0.0.2', port, '/'), 3000, 'a read after the hung writes')
    expect(read).toMatchObject({ status: 200, body: 'ok /' })
    const seen = await stats(port)
    // At least the 256 a full pool holds (more when some of the first timed out before the last clients
    // left, each answered 504, and its connection took a queued one); every one of them closed.
    expect(seen.hung).toBeGreaterThanOrEqual(256)
    expect(seen.hungClosed).toBe(seen.hung)
  }, 60_000)
  it('holds a write that waited for its address’s turn once a swap began: it never reaches the old version after its flush', async () => {
    const dir = await tempDir('deltaport-swap-address-turn-')
    // events.log: each start, flush and applied write, in order. /slow answers after 1.5 s; 2.0.0 takes
    // 2.5 s to listen, so the swap still holds writes when the queued write's turn comes.
    const artifact = await serviceFile(join(dir, 'service.mjs'), {
      imports: "import { appendFileSync } from 'node:fs'",
      setup: `const version = process.env.DELTAPORT_VERSION
const log = (line) => appendFileSync(process.env.DELTAPORT_DATA_DIR + '/events.log', line + '\\n')
log('start ' + version)
if (version === '2.0.0') await new Promise((resolve) => setTimeout(resolve, 2500))`,
      onEnd: `if (req.url === '/flush') { log('flush ' + version); return res.end('flushed') }
if (req.url === '/slow') return setTimeout(() => res.end('slow ' + version), 1500)
if (req.method === 'POST' && req.url === '/w') { log('write ' + version); return res.end('applied by ' + version) }
res.end('ok ' + version)`,
    })
    const events: SupervisorEvent[] = []
    const supervisor = await supervise(dir, artifact, { maxInFlightPerAddress: 1 }, events)
    supervisors.push(supervisor)
    const port = supervisor.publicPort

    // The address's one slot is taken by a slow read; its write waits for it, in the proxy.
    const slow = from('127.0.0.4', port, '/slow')
    await waitFor(() => supervisor.counters.forwarded >= 1, 5000)
    const write = from('127.0.0.4', port, '/w', 'POST')
    // Waiting in the proxy before the swap begins (a fixed sleep let a slow machine start the swap
    // first: the write was then held on arrival and the turn's own check went untested).
    await waitFor(() => supervisor.counters.waitedForAddress >= 1, 5000)
    expect(supervisor.counters.forwarded).toBe(1)
    const swap = supervisor.swapTo({ version: '2.0.0', artifactPath: artifact })

    expect(await within(slow, 10_000, 'the slow read')).toMatchObject({ status: 200, body: 'slow 1.0.0' })
    expect(await within(write, 20_000, 'the write')).toMatchObject({ status: 200, body: 'applied by 2.0.0' })
    expect(await within(swap, 20_000, 'the swap')).toMatchObject({ outcome: 'installed', serving: '2.0.0' })
    // Sent live at its turn, it reached 1.0.0 after 1.0.0's flush: lost for 2.0.0, which starts from
    // the flushed data.
    const log = (await readFile(join(dir, 'data', 'events.log'), 'utf8')).split('\n').filter(Boolean)
    expect(log).toEqual(['start 1.0.0', 'flush 1.0.0', 'start 2.0.0', 'write 2.0.0'])
  }, 60_000)
})
