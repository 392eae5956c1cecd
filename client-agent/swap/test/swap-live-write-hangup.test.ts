import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import type { SwapSettingsInput } from '../../../schemas/swap.ts'
import { sleep } from '../service-process.ts'
import type { Supervisor, SupervisorEvent } from '../supervisor.ts'
import type { ReadyUpdate } from '../update-source.ts'
import { cleanup, rawConnection, supervise, tempDir, waitFor, within } from './harness.ts'

/**
 * A live write (forwarded to the running version before a swap held writes) whose client hangs up is
 * not finished when its client goes: once the service has its whole body it may still apply it, and
 * the swap's drain must wait for that before the flush hook hands the data over to the new version.
 * Services of the test's own, real processes, real HTTP on loopback, a client that really hangs up.
 */
const supervisors: Supervisor[] = []
afterAll(async () => {
  for (const s of supervisors) await s.stop().catch(() => undefined)
  await cleanup()
})

/**
 * One service file for every version. Its write log (data/events.log) records, in order, each start,
 * each write it applies (`applyMs` after its whole body arrived) and each flush. received.log records
 * each write's arrival, whole. On SIGTERM it exits once it has applied what it received (`graceful`),
 * or at once.
 */
async function service(dir: string, applyMs: number, graceful: boolean): Promise<string> {
  const file = join(dir, 'service.mjs')
  await writeFile(
    file,
    `import { createServer } from 'node:http'
import { appendFileSync } from 'node:fs'
const version = process.env.DELTAPORT_VERSION
const log = (name, line) => appendFileSync(process.env.DELTAPORT_DATA_DIR + '/' + name, line + '\\n')
log('events.log', 'start ' + version)
const server = createServer((req, res) => {
  req.resume()
  req.on('end', () => {
    if (req.url === '/flush') {
      log('events.log', 'flush ' + version)
      return res.end('flushed')
    }
    if (req.method !== 'POST' || req.url === '/prepare') return res.end('ok ' + version)
    log('received.log', version + ' ' + req.url)
    pending += 1
    // Applied after the request is whole, whether or not anyone still waits for the answer.
    setTimeout(() => {
      log('events.log', 'write ' + version + ' ' + req.url)
      res.end('applied by ' + version)
      if (--pending === 0 && terminating) process.exit(0)
    }, ${applyMs})
  })
})
let pending = 0
let terminating = false
process.on('SIGTERM', () => {
  terminating = true
  if (pending === 0 || !${graceful}) process.exit(0)
})
server.listen(Number(process.env.PORT), '127.0.0.1')
`,
  )
  return file
}

async function lines(dir: string, name: string): Promise<string[]> {
  return (await readFile(join(dir, 'data', name), 'utf8').catch(() => '')).split('\n').filter(Boolean)
}

async function serving(dir: string, applyMs: number, input: SwapSettingsInput, graceful = true) {
  const artifact = await service(dir, applyMs, graceful)
  const events: SupervisorEvent[] = []
  const supervisor = await supervise(dir, artifact, input, events, {
    source: { next: async () => null, restore: async () => undefined },
  })
  supervisors.push(supervisor)
  const v2: ReadyUpdate = { version: '2.0.0', artifactPath: artifact }
  const until = (match: (e: SupervisorEvent) => boolean) =>
    waitFor(
      () => events.some(match),
      30_000,
      () => `no such event in ${JSON.stringify(events)}`,
    )
  /** A write on a raw connection; `body` bytes of the `declared` ones are sent. */
  const write = (path: string, body: string, declared = body.length) => {
    const client = rawConnection(supervisor.publicPort)
    client.send(
      `POST ${path} HTTP/1.1\r\nhost: service\r\nx-client-id: hangs-up\r\ncontent-length: ${declared}\r\n\r\n${body}`,
    )
    return client
  }
  /** Waits until the service has the whole of the write to `path`. */
  const received = async (path: string) => {
    const deadline = Date.now() + 10_000
    while (!(await lines(dir, 'received.log')).includes(`1.0.0 ${path}`)) {
      if (Date.now() > deadline) throw new Error(`1.0.0 never had the whole of ${path}`)
      await sleep(10)
    }
  }
  return { supervisor, v2, until, write, received }
}

describe('swap proxy: a live write whose client hangs up', () => {
  it('is waited for by the drain once the service has its whole body: applied before the flush', async () => {
    const dir = await tempDir('deltaport-swap-hangup-applied-')
    // The service applies a write 1.5 s after its body arrived whole.
    const s = await serving(dir, 1500, { stopTimeoutMs: 10_000 })
    const client = s.write('/w/1', 'hello')
    await s.received('/w/1')

    // A swap begins; its drain waits for the write in flight. Then the client hangs up.
    const swap = s.supervisor.swapTo(s.v2)
    await s.until((e) => e.type === 'buffering')
    client.close()

    expect(await within(swap, 20_000, 'the swap')).toMatchObject({ outcome: 'installed', serving: '2.0.0' })
    // The write is in the old version's log before its flush, so the new version starts from it. Before,
    // the hang-up ended the drain at once: the flush came first and the write landed after it, seen by
    // no version that owns the data from then on.
    const deadline2 = Date.now() + 10_000
    while (!(await lines(dir, 'events.log')).some((l) => l.startsWith('write')) && Date.now() < deadline2)
      await sleep(10)
    expect(await lines(dir, 'events.log')).toEqual([
      'start 1.0.0',
      'write 1.0.0 /w/1',
      'flush 1.0.0',
      'start 2.0.0',
    ])
    // The proxy discarded the answer nobody waited for, and serves on.
    const res = await fetch(`http://127.0.0.1:${s.supervisor.publicPort}/`)
    expect(await res.text()).toBe('ok 2.0.0')
  }, 60_000)

  it('holds the drain no longer than stopTimeoutMs: the swap is then deferred, no flush', async () => {
    const dir = await tempDir('deltaport-swap-hangup-deferred-')
    // This service exits at once on SIGTERM, so a stop takes as long as its wait for the write.
    const s = await serving(dir, 60_000, { stopTimeoutMs: 1500 }, false)
    const client = s.write('/w/1', 'hello')
    await s.received('/w/1')
    const swap = s.supervisor.swapTo(s.v2)
    await s.until((e) => e.type === 'buffering')
    client.close()

    const started = Date.now()
    expect(await within(swap, 20_000, 'the swap')).toMatchObject({
      outcome: 'deferred',
      errorClass: 'drain',
      serving: '1.0.0',
    })
    expect(Date.now() - started).toBeLessThan(1500 + 1500)
    // The running version still owns the data: it was never asked to flush, no new version started.
    expect(await lines(dir, 'events.log')).toEqual(['start 1.0.0'])
    // The write the service still works on (for a minute) gets the stop's grace once, then is cut: the
    // stop does not give it the service processes' own wait for requests in flight as well.
    const stopStart = Date.now()
    await within(s.supervisor.stop(), 20_000, 'the stop')
    // About 1.5 s; 3 s when the processes' stop waited for it again.
    expect(Date.now() - stopStart).toBeLessThan(1500 + 900)
  }, 60_000)

  it('is still cancelled when the service does not have its whole body: the swap does not wait', async () => {
    const dir = await tempDir('deltaport-swap-hangup-partial-')
    const s = await serving(dir, 0, { stopTimeoutMs: 5000 })
    // 5 of 10 bytes: the service never has the whole request, so it cannot apply it.
    const client = s.write('/w/1', 'hello', 10)
    await waitFor(() => s.supervisor.counters.forwarded >= 1, 10_000)
    await sleep(200)
    const swap = s.supervisor.swapTo(s.v2)
    await s.until((e) => e.type === 'buffering')
    const started = Date.now()
    client.close()

    expect(await within(swap, 20_000, 'the swap')).toMatchObject({ outcome: 'installed', serving: '2.0.0' })
    // Not the drain's 5 s: the cancelled request was finished at once.
    expect(Date.now() - started).toBeLessThan(3000)
    expect(await lines(dir, 'received.log')).toEqual([])
    expect(await lines(dir, 'events.log')).toEqual(['start 1.0.0', 'flush 1.0.0', 'start 2.0.0'])
  }, 60_000)

  it('is cut when it never reached the service: hang-ups queued behind busy connections do not pile up', async () => {
    const dir = await tempDir('deltaport-swap-hangup-queued-')
    // Each write takes the service 2 s, so 256 of them (the connections the proxy opens to a process)
    // keep every connection busy and the rest wait in the proxy for one. All 300 come from one address,
    // which may send them all on here (maxInFlightPerAddress: the agent's own queue is under test).
    const s = await serving(dir, 2000, { stopTimeoutMs: 5000, maxInFlightPerAddress: 1000 })
    const clients = Array.from({ length: 300 }, (_, i) => s.write(`/w/${i}`, 'hello'))
    await waitFor(() => s.supervisor.counters.forwarded >= 300, 10_000)
    await sleep(300)
    for (const client of clients) client.close()

    // Those the service has whole are applied; the 44 still waiting in the proxy were never sent, so
    // they are cut with their clients. Before, they were kept and sent one by one as connections freed,
    // each a write nobody waited for, and every other request queued behind them.
    await sleep(5000)
    const received = await lines(dir, 'received.log')
    expect(received.length).toBe(256)
    const res = await within(fetch(`http://127.0.0.1:${s.supervisor.publicPort}/`), 2000, 'a read')
    expect(await res.text()).toBe('ok 1.0.0')
  }, 60_000)

  it('gets a stop’s grace like a request in flight: the service applies it before its SIGTERM', async () => {
    const dir = await tempDir('deltaport-swap-hangup-stop-')
    // This service exits at once on SIGTERM: what it has not applied by then is never applied.
    const s = await serving(dir, 1000, { stopTimeoutMs: 5000 }, false)
    const client = s.write('/w/1', 'hello')
    await s.received('/w/1')
    client.close()
    await sleep(100)

    const started = Date.now()
    await within(s.supervisor.stop(), 20_000, 'the stop')
    // It waited for the service's answer (not for the whole grace) before the SIGTERM.
    expect(Date.now() - started).toBeLessThan(5000)
    expect(await lines(dir, 'events.log')).toEqual(['start 1.0.0', 'write 1.0.0 /w/1'])
  }, 60_000)
})
