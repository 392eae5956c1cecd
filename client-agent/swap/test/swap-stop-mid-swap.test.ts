import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import type { SwapSettingsInput } from '../../../schemas/swap.ts'
import { SwapJournal } from '../journal.ts'
import { RunFiles } from '../run-files.ts'
import { sleep } from '../service-process.ts'
import type { Supervisor, SupervisorEvent } from '../supervisor.ts'
import type { ReadyUpdate } from '../update-source.ts'
import { cleanup, rawConnection, runningArtifacts, supervise, tempDir, waitFor, within } from './harness.ts'

/**
 * A stop (SIGTERM to `deltaport run`) in the middle of a swap: it must not wait out the swap's own
 * bounds (`replayTimeoutMs` for a replayed write, `healthTimeoutMs` for the new version's start), must
 * relaunch nothing while the agent goes, must answer or keep every held write (never lose one silently,
 * never apply one twice), and must leave the store and journal so that the next start runs the
 * version that served before the update.
 */
const supervisors: Supervisor[] = []
afterAll(async () => {
  for (const s of supervisors) await s.stop().catch(() => undefined)
  await cleanup()
})

/** How each test service starts: its version, a log helper writing into its data folder, the launch logged. */
const SERVICE_PRELUDE = `import { createServer } from 'node:http'
import { appendFileSync } from 'node:fs'
const version = process.env.DELTAPORT_VERSION
const log = (name, line) => appendFileSync(process.env.DELTAPORT_DATA_DIR + '/' + name, line + '\\n')
log('launches.log', version)
`

/**
 * One service file for both versions (told apart by DELTAPORT_VERSION). Each start is logged in
 * launches.log, each write in received.log when it arrives and in applied.log when it is applied.
 * 2.0.0 takes `writeMs` per write and starts listening after `startMs`.
 */
async function service(dir: string, v2: { writeMs: number; startMs: number }): Promise<string> {
  const file = join(dir, 'service.mjs')
  await writeFile(
    file,
    `${SERVICE_PRELUDE}const slow = version === '2.0.0'
const server = createServer((req, res) => {
  req.resume()
  req.on('end', () => {
    if (req.method !== 'POST' || !req.url.startsWith('/w/')) return res.end('ok')
    const line = JSON.stringify({ version, path: req.url, replay: req.headers['x-deltaport-replay'] !== undefined })
    log('received.log', line)
    setTimeout(() => {
      log('applied.log', line)
      res.end('applied by ' + version)
    }, slow ? ${v2.writeMs} : 0)
  })
})
process.on('SIGTERM', () => process.exit(0))
setTimeout(() => server.listen(Number(process.env.PORT), '127.0.0.1'), slow ? ${v2.startMs} : 0)
`,
  )
  return file
}

async function lines(dir: string, name: string): Promise<string[]> {
  return (await readFile(join(dir, 'data', name), 'utf8').catch(() => '')).split('\n').filter(Boolean)
}

/** Waits until a line of the service's log `name` matches. */
async function logged(dir: string, name: string, match: (line: string) => boolean): Promise<void> {
  const deadline = Date.now() + 20_000
  while (!(await lines(dir, name)).some(match)) {
    if (Date.now() > deadline) throw new Error(`nothing such in ${name}: ${await lines(dir, name)}`)
    await sleep(10)
  }
}

/** A supervisor serving 1.0.0 of `artifact`, whose update source records each `restore`. */
async function serving(dir: string, artifact: string, input: SwapSettingsInput) {
  const events: SupervisorEvent[] = []
  const restored: Array<[string, string]> = []
  const start = () =>
    supervise(dir, artifact, input, events, {
      source: { next: async () => null, restore: async (failed, back) => void restored.push([failed, back]) },
    })
  const supervisor = await start()
  supervisors.push(supervisor)
  const until = (match: (e: SupervisorEvent) => boolean) =>
    waitFor(
      () => events.some(match),
      30_000,
      () => `no such event in ${JSON.stringify(events)}`,
    )
  /** A write of client `a` to /w/<n>: its status and Retry-After, or null when the connection closed unanswered. */
  const write = (n: number) =>
    fetch(`http://127.0.0.1:${supervisor.publicPort}/w/${n}`, {
      method: 'POST',
      headers: { 'x-client-id': 'a' },
      body: String(n),
    }).then(
      async (res) => ({
        status: res.status,
        retryAfter: res.headers.get('retry-after'),
        body: await res.text(),
      }),
      () => null,
    )
  const v2: ReadyUpdate = { version: '2.0.0', artifactPath: artifact }
  return { supervisor, events, restored, until, write, v2, start }
}

describe('stopping run in the middle of a swap', () => {
  it('ends a probation whose replayed write takes 30 s within the stop timeouts, relaunching nothing', async () => {
    const dir = await tempDir('deltaport-swap-stop-probation-')
    const artifact = await service(dir, { writeMs: 30_000, startMs: 0 })
    // replayTimeoutMs (60 s) would let 2.0.0 finish its 30 s write: only the stop can end this sooner.
    const s = await serving(dir, artifact, { stopTimeoutMs: 1000 })
    const swap = s.supervisor.swapTo(s.v2)
    await s.until((e) => e.type === 'buffering')
    // Two writes of one client, held in order: the first is replayed into 2.0.0, the second waits behind it.
    const first = s.write(1)
    await waitFor(() => s.supervisor.counters.held === 1, 10_000)
    const second = s.write(2)
    await waitFor(() => s.supervisor.counters.held === 2, 10_000)
    await s.until((e) => e.type === 'switched')
    await logged(dir, 'received.log', (l) => l.includes('"2.0.0"'))
    // Another client's upload, admitted (100 Continue), its body not yet sent when the stop comes.
    const upload = rawConnection(s.supervisor.publicPort)
    upload.send(
      'POST /w/9 HTTP/1.1\r\nHost: 127.0.0.1\r\nx-client-id: b\r\ncontent-length: 1\r\nexpect: 100-continue\r\n\r\n',
    )
    await upload.receive(/^HTTP\/1\.1 100 Continue\r\n\r\n$/)

    const stopping = Date.now()
    const stop = s.supervisor.stop()
    // The rest of the body arrives after the stop turned away what was held: nothing would take it.
    await s.until((e) => e.type === 'error' && e.message === '1 held writes got 503: the agent is stopping')
    upload.send('9')
    await within(stop, 15_000, 'the stop')
    // The probation's cut-off (stopTimeoutMs), then the proxy's close (as long again): not 30 s.
    expect(Date.now() - stopping).toBeLessThan(4000)

    const report = await within(swap, 5000, 'the swap')
    expect(report).toMatchObject({ outcome: 'stopped', errorClass: 'probation', serving: '1.0.0' })
    expect(s.events.map((e) => e.type)).not.toContain('rolling-back')
    // The store goes back to 1.0.0 for the next start; 2.0.0 is not blamed (offered again later).
    expect(s.restored).toEqual([['2.0.0', '1.0.0']])
    expect([...(await new RunFiles(join(dir, 'run')).failedVersions())]).toEqual([])
    // Nothing was relaunched, and neither process still runs.
    expect(await lines(dir, 'launches.log')).toEqual(['1.0.0', '2.0.0'])
    expect(await runningArtifacts(new Map([['service', artifact]]))).toEqual([])

    // The write 2.0.0 was working on may have been applied: no answer, it stays journaled. The one
    // behind it was never sent: its client is told to retry, and it is settled (never replayed).
    expect(await first).toBeNull()
    const refused = await second
    expect(refused).toMatchObject({ status: 503 })
    expect(Number(refused?.retryAfter)).toBeGreaterThanOrEqual(1)
    expect(await upload.receive(/\r\n\r\n.*HTTP\/1\.1 503 /s, 5000)).toMatch(/\r\nretry-after: 1\r\n/)
    const journal = new SwapJournal(join(dir, 'run', 'swap.journal'))
    const pending = (await journal.open()).pending
    await journal.close()
    expect(pending.map((w) => w.path)).toEqual(['/w/1'])

    // The next start runs 1.0.0 and replays the journaled write into it, once; /w/2 reaches nobody.
    const next = await s.start()
    supervisors.push(next)
    await next.stop()
    expect(s.events).toContainEqual(expect.objectContaining({ type: 'started', recovered: 1 }))
    expect(await lines(dir, 'applied.log')).toEqual([
      JSON.stringify({ version: '1.0.0', path: '/w/1', replay: true }),
    ])
    expect((await lines(dir, 'received.log')).filter((l) => l.includes('/w/2'))).toEqual([])
  }, 60_000)

  it('ends the health check of the new version at once; the old version takes the held write', async () => {
    const dir = await tempDir('deltaport-swap-stop-health-')
    // 2.0.0 would take a minute to listen, and healthTimeoutMs gives it 30 s.
    const artifact = await service(dir, { writeMs: 0, startMs: 60_000 })
    const s = await serving(dir, artifact, { stopTimeoutMs: 1000, healthTimeoutMs: 30_000 })
    const swap = s.supervisor.swapTo(s.v2)
    await s.until((e) => e.type === 'buffering')
    const held = s.write(1)
    await waitFor(() => s.supervisor.counters.held === 1, 10_000)
    await logged(dir, 'launches.log', (l) => l === '2.0.0')

    const stopping = Date.now()
    await within(s.supervisor.stop(), 15_000, 'the stop')
    expect(Date.now() - stopping).toBeLessThan(4000)
    expect(await within(swap, 5000, 'the swap')).toMatchObject({
      outcome: 'stopped',
      errorClass: 'health-check',
      serving: '1.0.0',
    })
    // 1.0.0 never stopped serving and owns the data: it applied the write, once.
    expect(await held).toMatchObject({ status: 200, body: 'applied by 1.0.0' })
    expect(await lines(dir, 'applied.log')).toEqual([
      JSON.stringify({ version: '1.0.0', path: '/w/1', replay: true }),
    ])
    // The store goes back to 1.0.0, which the next start runs; 2.0.0 is not recorded as failed.
    expect(s.restored).toEqual([['2.0.0', '1.0.0']])
    expect([...(await new RunFiles(join(dir, 'run')).failedVersions())]).toEqual([])
    expect(await lines(dir, 'launches.log')).toEqual(['1.0.0', '2.0.0'])
    expect(await runningArtifacts(new Map([['service', artifact]]))).toEqual([])
  }, 60_000)
})

describe('stopping run during a rollback', () => {
  it('records the failed version but relaunches nothing when the stop comes while it rolls back', async () => {
    const dir = await tempDir('deltaport-swap-stop-rollback-')
    // 2.0.0 fails every write (a failed replay: rollback) and takes 2 s to exit after SIGTERM, so the
    // stop comes while the rollback waits for it, before it would relaunch 1.0.0.
    const file = join(dir, 'service.mjs')
    await writeFile(
      file,
      `${SERVICE_PRELUDE}const failing = version === '2.0.0'
const server = createServer((req, res) => {
  req.resume()
  req.on('end', () => {
    if (req.method !== 'POST' || !req.url.startsWith('/w/')) return res.end('ok')
    if (failing) return res.writeHead(500).end('broken')
    log('applied.log', version + ' ' + req.url)
    res.end('applied by ' + version)
  })
})
process.on('SIGTERM', () => {
  log('sigterm.log', version)
  setTimeout(() => process.exit(0), failing ? 2000 : 0)
})
server.listen(Number(process.env.PORT), '127.0.0.1')
`,
    )
    const s = await serving(dir, file, { stopTimeoutMs: 5000 })
    const swap = s.supervisor.swapTo(s.v2)
    await s.until((e) => e.type === 'buffering')
    const held = s.write(1)
    await waitFor(() => s.supervisor.counters.held === 1, 10_000)
    // The replay failed and the rollback is stopping 2.0.0.
    await logged(dir, 'sigterm.log', (l) => l === '2.0.0')

    const stopping = Date.now()
    await within(s.supervisor.stop(), 15_000, 'the stop')
    // 2.0.0's 2 s exit, then nothing more to wait for.
    expect(Date.now() - stopping).toBeLessThan(5000)
    // The failure is recorded as it would be without the stop…
    expect(await within(swap, 5000, 'the swap')).toMatchObject({
      outcome: 'rolled-back',
      errorClass: 'replay',
      serving: '1.0.0',
    })
    expect([...(await new RunFiles(join(dir, 'run')).failedVersions())]).toEqual(['2.0.0'])
    expect(s.restored).toEqual([['2.0.0', '1.0.0']])
    // …but 1.0.0 is not relaunched while the agent goes, and its stale process takes no write: the
    // held write is turned away, applied nowhere.
    expect(await lines(dir, 'launches.log')).toEqual(['1.0.0', '2.0.0'])
    expect(await held).toMatchObject({ status: 503 })
    expect(await lines(dir, 'applied.log')).toEqual([])
    expect(await runningArtifacts(new Map([['service', file]]))).toEqual([])
  }, 60_000)
})

describe('stopping run with another swap queued', () => {
  it('does not start the swap queued behind the probation it stopped', async () => {
    const dir = await tempDir('deltaport-swap-stop-queued-')
    const artifact = await service(dir, { writeMs: 30_000, startMs: 0 })
    const s = await serving(dir, artifact, { stopTimeoutMs: 1000 })
    const swap = s.supervisor.swapTo(s.v2)
    // Another version, asked for while 2.0.0 is being swapped in: it waits for that swap.
    const queued = s.supervisor.swapTo({ version: '3.0.0', artifactPath: artifact })
    await s.until((e) => e.type === 'buffering')
    const first = s.write(1)
    await waitFor(() => s.supervisor.counters.held === 1, 10_000)
    const second = s.write(2)
    await waitFor(() => s.supervisor.counters.held === 2, 10_000)
    await logged(dir, 'received.log', (l) => l.includes('"2.0.0"'))

    await within(s.supervisor.stop(), 15_000, 'the stop')
    expect(await within(swap, 5000, 'the swap')).toMatchObject({
      outcome: 'stopped',
      errorClass: 'probation',
    })
    expect(await within(queued, 5000, 'the queued swap')).toMatchObject({
      version: '3.0.0',
      outcome: 'stopped',
      errorClass: 'queued',
      serving: '1.0.0',
    })
    // Nothing of it ran: 2.0.0, still unproven, got neither a prepare nor the write held behind the
    // cut one (which its client is told to retry), and the store still goes back to 1.0.0.
    expect(s.restored).toEqual([
      ['2.0.0', '1.0.0'],
      ['3.0.0', '1.0.0'],
    ])
    expect(s.supervisor.version).toBe('1.0.0')
    expect(await second).toMatchObject({ status: 503 })
    expect((await lines(dir, 'received.log')).map((l) => JSON.parse(l).path)).toEqual(['/w/1'])
    expect(await lines(dir, 'launches.log')).toEqual(['1.0.0', '2.0.0'])
    expect(await first).toBeNull()
  }, 60_000)
})
