import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { request } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { RunChildren, SwapSettings, type SwapSettingsInput } from '../../../schemas/swap.ts'
import { buildSampleService, type SampleBuild } from '../../sample-service/build.ts'
import { sleep } from '../service-process.ts'
import { Supervisor, type SupervisorEvent } from '../supervisor.ts'
import { journalSettled, post, runningArtifacts, splitWrite, within } from './harness.ts'

/**
 * Ways a device owner can break the buffered swap's promise (no dropped request, a failed update leaves
 * the previous version serving, no service process outlives its supervisor), each with real processes
 * and sockets: the sample service as the child, node:http clients on loopback.
 */

const dirs: string[] = []
const supervisors: Supervisor[] = []
afterAll(async () => {
  for (const s of supervisors) await s.stop().catch(() => undefined)
  for (const d of dirs) await rm(d, { recursive: true, force: true })
})

async function setup(builds: SampleBuild[], input: SwapSettingsInput = {}) {
  const dir = await mkdtemp(join(tmpdir(), 'deltaport-swap-edge-'))
  dirs.push(dir)
  const artifacts = new Map<string, string>()
  for (const b of builds) artifacts.set(b.version, await buildSampleService(join(dir, `${b.version}.js`), b))
  const events: SupervisorEvent[] = []
  const supervisor = await Supervisor.start({
    command: [process.execPath, '--no-warnings', '{artifact}'],
    runDir: join(dir, 'run'),
    dataDir: join(dir, 'data'),
    settings: SwapSettings.parse(input),
    initial: { version: builds[0]!.version, artifactPath: artifacts.get(builds[0]!.version)! },
    host: '127.0.0.1',
    port: 0,
    stdio: 'ignore',
    onEvent: (e) => events.push(e),
  })
  supervisors.push(supervisor)
  const swapTo = (version: string) => supervisor.swapTo({ version, artifactPath: artifacts.get(version)! })
  const until = async (match: (e: SupervisorEvent) => boolean, timeoutMs = 20_000) => {
    const deadline = Date.now() + timeoutMs
    while (!events.some(match)) {
      if (Date.now() > deadline) throw new Error(`no such event in ${JSON.stringify(events)}`)
      await sleep(10)
    }
  }
  const recordedPids = async () =>
    RunChildren.parse(JSON.parse(await readFile(join(dir, 'run', 'children.json'), 'utf8'))).pids
  /** Live (non-zombie) processes running one of this test's artifacts, by version. */
  const running = () => runningArtifacts(artifacts)
  return { dir, supervisor, events, swapTo, until, recordedPids, running, port: supervisor.publicPort }
}

describe('buffered swap: edge cases a device owner hits', () => {
  it('answers a write whose body was still arriving when the swap ended, and the client’s next ones', async () => {
    const { supervisor, swapTo, until, port } = await setup([
      { version: '1.0.0' },
      { version: '2.0.0', startupDelayMs: 300 },
    ])
    const swap = swapTo('2.0.0')
    await until((e) => e.type === 'buffering')
    // A slow upload: its headers arrive while writes are held, its body only after the swap is over.
    const slow = splitWrite(port, 'slow-upload', 1)
    expect((await swap).outcome).toBe('installed')
    expect(supervisor.mode).toBe('pass')
    slow.finish()
    const answer = await within(slow.answered, 5000, 'the slow upload')
    expect(answer.status).toBe(200)
    expect(JSON.parse(answer.body)).toMatchObject({ seq: 1, version: '2.0.0', applied: true })
    // The same client's next write is not queued behind anything.
    const next = await within(post(port, 'slow-upload', 2), 5000, 'the next write')
    expect(await next.json()).toMatchObject({ seq: 2, version: '2.0.0', applied: true })
  })

  it.each([
    ['one client id per writer', {}],
    // Behind a local reverse proxy (or a NAT) every writer is the same client to the agent: its queue always
    // has a write waiting while another one replays.
    ['all writers one client (by address)', { clientHeader: 'x-not-sent' }],
  ])('ends the swap under steady closed-loop write load: %s', async (_, input: SwapSettingsInput) => {
    const { dir, supervisor, swapTo, port } = await setup(
      [{ version: '1.0.0' }, { version: '2.0.0', startupDelayMs: 200 }],
      input,
    )
    // Each client sends its next write as soon as the last one is answered: after the switch, every
    // answer from the replay brings a new write, so the backlog is never empty for long.
    let stop = false
    const failures: string[] = []
    const writers = Array.from({ length: 6 }, async (_, i) => {
      const client = `loop-${i}`
      for (let seq = 1; !stop; seq++) {
        const answer = await post(port, client, seq)
        const body = (await answer.json()) as { applied?: boolean }
        if (answer.status !== 200 || !body.applied) failures.push(`${client}#${seq}: ${answer.status}`)
      }
    })
    try {
      await sleep(200)
      const report = await within(swapTo('2.0.0'), 10_000, 'the swap under load')
      expect(report.outcome).toBe('installed')
      expect(supervisor.mode).toBe('pass')
      // Settled: nothing is owed a replay, so the journal was compacted to nothing owed.
      expect(journalSettled(join(dir, 'run', 'swap.journal'))).toBe(true)
    } finally {
      stop = true
      await Promise.all(writers)
    }
    expect(failures).toEqual([])
  })

  it('rolls back a new version that dies during its probation, although no write failed', async () => {
    const { swapTo, running, port } = await setup(
      [{ version: '1.0.0' }, { version: '2.0.0', crashAfterMs: 100 }],
      { probationMs: 1000 },
    )
    const report = await swapTo('2.0.0')
    expect(report).toMatchObject({ outcome: 'rolled-back', serving: '1.0.0' })
    expect(await (await fetch(`http://127.0.0.1:${port}/health`)).json()).toEqual({ version: '1.0.0' })
    expect(await (await post(port, 'after-crash', 1)).json()).toMatchObject({
      version: '1.0.0',
      applied: true,
    })
    await sleep(1000)
    expect(await running()).toEqual(['1.0.0'])
  })

  it('goes back to the previous version when the new one crashes soon after its probation', async () => {
    const { swapTo, until, running, port, events } = await setup(
      // It crashes 2 s after it started listening (well after its probation), each time it is started.
      [{ version: '1.0.0' }, { version: '2.0.0', crashAfterMs: 2000 }],
      { probationMs: 200 },
    )
    expect((await swapTo('2.0.0')).outcome).toBe('installed')
    await until((e) => e.type === 'swap-done' && e.report.outcome === 'rolled-back', 15_000)
    expect(
      events.filter((e) => e.type === 'swap-done').map((e) => e.type === 'swap-done' && e.report),
    ).toEqual([
      expect.objectContaining({ version: '2.0.0', outcome: 'installed' }),
      expect.objectContaining({
        version: '2.0.0',
        outcome: 'rolled-back',
        errorClass: 'crash',
        serving: '1.0.0',
      }),
    ])
    expect(await (await fetch(`http://127.0.0.1:${port}/health`)).json()).toEqual({ version: '1.0.0' })
    expect(await (await post(port, 'after-fallback', 1)).json()).toMatchObject({
      version: '1.0.0',
      applied: true,
    })
    await sleep(1500)
    expect(await running()).toEqual(['1.0.0'])
  })

  it('swaps to a new version while the old one has crashed and is waiting to restart', async () => {
    const { swapTo, recordedPids, running, port } = await setup([{ version: '1.0.0' }, { version: '2.0.0' }])
    const [oldPid] = await recordedPids()
    process.kill(oldPid!, 'SIGKILL')
    await sleep(50)
    // The update may well be the fix for the crash: it must not be refused (and blacklisted) because the
    // old process cannot answer its prepare hook.
    const report = await swapTo('2.0.0')
    expect(report).toMatchObject({ outcome: 'installed', serving: '2.0.0' })
    expect(await (await fetch(`http://127.0.0.1:${port}/health`)).json()).toEqual({ version: '2.0.0' })
    await sleep(1500)
    expect(await running()).toEqual(['2.0.0'])
  })

  it('swaps when the old version dies while it is asked to flush', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'deltaport-swap-flush-'))
    dirs.push(dir)
    // v1 dies instead of answering POST /flush; every other request gets its version.
    const service = async (version: string, dieOnFlush: boolean) => {
      const file = join(dir, `svc-${version}.mjs`)
      await writeFile(
        file,
        `import { createServer } from 'node:http'
const server = createServer((req, res) => {
  req.resume()
  req.on('end', () => {
    if (${dieOnFlush} && req.url === '/flush') process.exit(1)
    res.end(JSON.stringify({ version: ${JSON.stringify(version)} }))
  })
})
process.on('SIGTERM', () => process.exit(0))
server.listen(Number(process.env.PORT), '127.0.0.1')
`,
      )
      return file
    }
    const supervisor = await Supervisor.start({
      command: [process.execPath, '{artifact}'],
      runDir: join(dir, 'run'),
      dataDir: join(dir, 'data'),
      settings: SwapSettings.parse({}),
      initial: { version: '1.0.0', artifactPath: await service('1.0.0', true) },
      host: '127.0.0.1',
      port: 0,
      stdio: 'ignore',
    })
    supervisors.push(supervisor)
    const report = await supervisor.swapTo({ version: '2.0.0', artifactPath: await service('2.0.0', false) })
    // Dead, it writes nothing more: the new version owns the data, and is not refused for the old one's crash.
    expect(report).toMatchObject({ outcome: 'installed', serving: '2.0.0' })
    const url = `http://127.0.0.1:${supervisor.publicPort}`
    expect(await (await fetch(`${url}/w`, { method: 'POST', body: 'x' })).json()).toEqual({
      version: '2.0.0',
    })
  })

  it('leaves no restarted copy of an old version that crashed mid-swap running next to the new one', async () => {
    const { supervisor, swapTo, until, recordedPids, running, port } = await setup([
      { version: '1.0.0' },
      // Starts slowly: the old version's restart (about 200 ms after its crash) wins the race.
      { version: '2.0.0', startupDelayMs: 1500 },
    ])
    const [oldPid] = await recordedPids()
    const swap = swapTo('2.0.0')
    await until((e) => e.type === 'buffering')
    process.kill(oldPid!, 'SIGKILL')
    await until((e) => e.type === 'service-restarted')
    const held = post(port, 'mid-swap', 1)
    expect((await swap).outcome).toBe('installed')
    expect(await (await held).json()).toMatchObject({ seq: 1, version: '2.0.0', applied: true })
    await sleep(1000)
    expect(await running()).toEqual(['2.0.0'])
    expect(await recordedPids()).toHaveLength(1)
    expect(supervisor.version).toBe('2.0.0')
  })

  it('starts no service process after it was stopped while a crashed one waited to restart', async () => {
    const { supervisor, recordedPids, running } = await setup([{ version: '1.0.0' }])
    const [pid] = await recordedPids()
    process.kill(pid!, 'SIGKILL')
    await sleep(50)
    await supervisor.stop()
    // The restart was due about 200 ms after the crash.
    await sleep(1000)
    expect(await running()).toEqual([])
    expect(await recordedPids()).toEqual([])
  })

  it('tells the service who the client is (X-Forwarded-For), drops headers named by Connection and client-made replay marks', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'deltaport-swap-xff-'))
    dirs.push(dir)
    // A service that answers every request with the headers it got (and waits `delay` ms to listen).
    const echo = async (version: string, delay: number) => {
      const file = join(dir, `echo-${version}.mjs`)
      await writeFile(
        file,
        `import { createServer } from 'node:http'
const server = createServer((req, res) => {
  req.resume()
  req.on('end', () => res.end(JSON.stringify({ version: ${JSON.stringify(version)}, headers: req.headers })))
})
process.on('SIGTERM', () => process.exit(0))
setTimeout(() => server.listen(Number(process.env.PORT), '127.0.0.1'), ${delay})
`,
      )
      return file
    }
    const supervisor = await Supervisor.start({
      command: [process.execPath, '{artifact}'],
      runDir: join(dir, 'run'),
      dataDir: join(dir, 'data'),
      settings: SwapSettings.parse({ prepare: { kind: 'none' }, flush: { kind: 'none' } }),
      initial: { version: '1.0.0', artifactPath: await echo('1.0.0', 0) },
      host: '127.0.0.1',
      port: 0,
      stdio: 'ignore',
    })
    supervisors.push(supervisor)
    const url = `http://127.0.0.1:${supervisor.publicPort}`
    const Echo = (r: Response) => r.json() as Promise<{ version: string; headers: Record<string, string> }>
    const live = await Echo(
      await fetch(`${url}/x`, { headers: { 'x-forwarded-for': '203.0.113.9', 'x-deltaport-replay': '7' } }),
    )
    // The client's own claim is kept, the address the proxy saw is appended.
    expect(live.headers['x-forwarded-for']).toBe('203.0.113.9, 127.0.0.1')
    // Only the agent marks replays: a service that de-duplicates on the mark must not be fooled by a client.
    expect(live.headers['x-deltaport-replay']).toBeUndefined()
    // A header the client's Connection header names is hop-by-hop too (RFC 9110 §7.6.1).
    const nominated = await new Promise<{ headers: Record<string, string> }>((resolve, reject) => {
      const req = request(`${url}/x`, { headers: { connection: 'keep-alive, x-hop', 'x-hop': 'secret' } })
      req.on('response', (res) => {
        let text = ''
        res.on('data', (c: Buffer) => {
          text += c.toString()
        })
        res.on('end', () => resolve(JSON.parse(text) as { headers: Record<string, string> }))
      })
      req.on('error', reject)
      req.end()
    })
    expect(nominated.headers['x-hop']).toBeUndefined()
    const swap = supervisor.swapTo({ version: '2.0.0', artifactPath: await echo('2.0.0', 500) })
    await sleep(100)
    expect(supervisor.mode).toBe('buffer')
    const held = await Echo(
      await fetch(`${url}/w`, { method: 'POST', body: 'x', headers: { 'x-deltaport-replay': '7' } }),
    )
    expect(held.version).toBe('2.0.0')
    expect(held.headers['x-forwarded-for']).toBe('127.0.0.1')
    expect(held.headers['x-deltaport-replay']).toMatch(/^\d+$/)
    expect(held.headers['x-deltaport-replay']).not.toBe('7')
    // Live again after the swap: still unmarked.
    expect((await swap).outcome).toBe('installed')
    const after = await Echo(
      await fetch(`${url}/w`, { method: 'POST', body: 'x', headers: { 'x-deltaport-replay': '7' } }),
    )
    expect(after.headers['x-deltaport-replay']).toBeUndefined()
  })
})
