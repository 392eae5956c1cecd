import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import type { SwapSettingsInput } from '../../../schemas/swap.ts'
import { parseJournal } from '../journal.ts'
import { RunFiles } from '../run-files.ts'
import { sleep } from '../service-process.ts'
import type { Supervisor, SupervisorEvent } from '../supervisor.ts'
import type { ReadyUpdate } from '../update-source.ts'
import { cleanup, runningArtifacts, supervise, tempDir, waitFor, within } from './harness.ts'

/**
 * A stop (SIGINT/SIGTERM to `deltaport run`) is prompt whatever stage a swap is in: one during the
 * old version's prepare or flush hook does not wait out `hookTimeoutMs`, one during the drain does not
 * add the drain's bound to the stop's own grace for the request in flight, and one during a fall-back
 * after an early crash does not wait for the previous version's health check (nor launch it once the
 * stop has come). Services of the test's own, real processes, real HTTP on loopback.
 */
const supervisors: Supervisor[] = []
afterAll(async () => {
  for (const s of supervisors) await s.stop().catch(() => undefined)
  await cleanup()
})

interface Behaviour {
  /** How long 1.0.0 takes to answer its prepare or flush hook. */
  hookMs?: { prepare?: number; flush?: number }
  /** The status 1.0.0 answers its prepare or flush hook with (default 200). */
  hookStatus?: { prepare?: number; flush?: number }
  /** How long a POST to /slow takes to be answered. */
  slowMs?: number
  /** How long each version takes to listen when launched again (not its first launch). */
  relaunchMs?: Record<string, number>
  /** Each version exits (1) this long after it listens. */
  crashAfterMs?: Record<string, number>
  /** How long each version takes to exit after SIGTERM (default: at once). */
  termMs?: number
}

/**
 * One service file for every version (told apart by DELTAPORT_VERSION). Each launch is logged in
 * launches.log, each hook call in hooks.log, each write in applied.log once answered.
 */
async function service(dir: string, behaviour: Behaviour): Promise<string> {
  const file = join(dir, 'service.mjs')
  await writeFile(
    file,
    `import { createServer } from 'node:http'
import { appendFileSync, readFileSync } from 'node:fs'
const version = process.env.DELTAPORT_VERSION
const logFile = (name) => process.env.DELTAPORT_DATA_DIR + '/' + name
const log = (name, line) => appendFileSync(logFile(name), line + '\\n')
const behaviour = ${JSON.stringify(behaviour)}
let relaunch = false
try { relaunch = readFileSync(logFile('launches.log'), 'utf8').split('\\n').includes(version) } catch {}
log('launches.log', version)
const server = createServer((req, res) => {
  req.resume()
  req.on('end', () => {
    if (req.url === '/prepare' || req.url === '/flush') {
      const hook = req.url.slice(1)
      log('hooks.log', hook + ' ' + version)
      return setTimeout(() => {
        res.statusCode = version === '1.0.0' ? (behaviour.hookStatus?.[hook] ?? 200) : 200
        log('answered.log', hook + ' ' + res.statusCode)
        res.end('ok')
      }, version === '1.0.0' ? (behaviour.hookMs?.[hook] ?? 0) : 0)
    }
    if (req.method !== 'POST') return res.end('ok ' + version)
    log('received.log', version + ' ' + req.url)
    setTimeout(() => {
      log('applied.log', version + ' ' + req.url)
      res.end('applied by ' + version)
    }, req.url === '/slow' ? (behaviour.slowMs ?? 0) : 0)
  })
})
process.on('SIGTERM', () => setTimeout(() => process.exit(0), behaviour.termMs ?? 0))
setTimeout(() => {
  server.listen(Number(process.env.PORT), '127.0.0.1')
  const crash = behaviour.crashAfterMs?.[version]
  if (crash) setTimeout(() => process.exit(1), crash)
}, relaunch ? (behaviour.relaunchMs?.[version] ?? 0) : 0)
`,
  )
  return file
}

async function lines(dir: string, name: string): Promise<string[]> {
  return (await readFile(join(dir, 'data', name), 'utf8').catch(() => '')).split('\n').filter(Boolean)
}

/** Waits until the service's log `name` has the line `line`. */
async function logged(dir: string, name: string, line: string): Promise<void> {
  const deadline = Date.now() + 20_000
  while (!(await lines(dir, name)).includes(line)) {
    if (Date.now() > deadline) throw new Error(`no "${line}" in ${name}: ${await lines(dir, name)}`)
    await sleep(10)
  }
}

/**
 * A supervisor serving 1.0.0 of a service with `behaviour`; its update source records each `restore`.
 * `onEvent` sees each event as it is emitted (with the supervisor, once it has started).
 */
async function serving(
  dir: string,
  behaviour: Behaviour,
  input: SwapSettingsInput,
  onEvent: (e: SupervisorEvent, s: Supervisor | null) => void = () => undefined,
) {
  const artifact = await service(dir, behaviour)
  const events: SupervisorEvent[] = []
  const restored: Array<[string, string]> = []
  let started: Supervisor | null = null
  const supervisor = await supervise(dir, artifact, input, events, {
    source: { next: async () => null, restore: async (failed, back) => void restored.push([failed, back]) },
    onEvent: (e) => {
      events.push(e)
      onEvent(e, started)
    },
  })
  started = supervisor
  supervisors.push(supervisor)
  const until = (match: (e: SupervisorEvent) => boolean) =>
    waitFor(
      () => events.some(match),
      30_000,
      () => `no such event in ${JSON.stringify(events)}`,
    )
  /** A POST to `path` as `client`: its status, Retry-After and body, or null when its connection closed unanswered. */
  const write = (path: string, client = 'a') =>
    fetch(`http://127.0.0.1:${supervisor.publicPort}${path}`, {
      method: 'POST',
      headers: { 'x-client-id': client },
      body: path,
    }).then(
      async (res) => ({
        status: res.status,
        retryAfter: res.headers.get('retry-after'),
        body: await res.text(),
      }),
      () => null,
    )
  /** Stops the supervisor; how long the stop took (ms). */
  const stop = async () => {
    const start = Date.now()
    await within(supervisor.stop(), 60_000, 'the stop')
    return Date.now() - start
  }
  const v2: ReadyUpdate = { version: '2.0.0', artifactPath: artifact }
  const failed = async () => [...(await new RunFiles(join(dir, 'run')).failedVersions())]
  const pending = async () => parseJournal(await readFile(join(dir, 'run', 'swap.journal'))).pending
  const running = () => runningArtifacts(new Map([['service', artifact]]))
  /** The service processes children.json still records (what a later start would reap). */
  const recorded = async () =>
    JSON.parse(await readFile(join(dir, 'run', 'children.json'), 'utf8')).pids as number[]
  return { supervisor, events, restored, until, write, stop, v2, failed, pending, running, recorded }
}

describe('a stop during a swap’s prepare, drain or flush', () => {
  it('does not wait for a prepare hook that takes a minute; nothing is launched, the store stays', async () => {
    const dir = await tempDir('deltaport-stop-prepare-')
    const s = await serving(
      dir,
      { hookMs: { prepare: 60_000 } },
      { hookTimeoutMs: 60_000, stopTimeoutMs: 1000 },
    )
    const swap = s.supervisor.swapTo(s.v2)
    await logged(dir, 'hooks.log', 'prepare 1.0.0')

    expect(await s.stop()).toBeLessThan(3000)
    expect(await within(swap, 5000, 'the swap')).toMatchObject({
      outcome: 'stopped',
      errorClass: 'prepare',
      serving: '1.0.0',
    })
    // Not deferred (nothing is retried by an agent that is gone), not blamed, store back at 1.0.0.
    expect(s.events.some((e) => e.type === 'error' && /deferred/.test(e.message))).toBe(false)
    expect(s.restored).toEqual([['2.0.0', '1.0.0']])
    expect(await s.failed()).toEqual([])
    expect(s.supervisor.version).toBe('1.0.0')
    expect(await lines(dir, 'launches.log')).toEqual(['1.0.0'])
    expect(await lines(dir, 'hooks.log')).toEqual(['prepare 1.0.0'])
    expect(await s.running()).toEqual([])
  }, 90_000)

  it('does not wait for a flush hook that takes a minute; the old version takes the held write', async () => {
    const dir = await tempDir('deltaport-stop-flush-')
    const s = await serving(
      dir,
      { hookMs: { flush: 60_000 } },
      { hookTimeoutMs: 60_000, stopTimeoutMs: 1000 },
    )
    const swap = s.supervisor.swapTo(s.v2)
    await s.until((e) => e.type === 'buffering')
    const held = s.write('/w/1')
    await waitFor(() => s.supervisor.counters.held === 1, 10_000)
    await logged(dir, 'hooks.log', 'flush 1.0.0')

    expect(await s.stop()).toBeLessThan(3000)
    expect(await within(swap, 5000, 'the swap')).toMatchObject({
      outcome: 'stopped',
      errorClass: 'flush',
      serving: '1.0.0',
    })
    // 1.0.0 never stopped serving and owns the data: it applied the held write, once.
    expect(await held).toMatchObject({ status: 200, body: 'applied by 1.0.0' })
    expect(await lines(dir, 'applied.log')).toEqual(['1.0.0 /w/1'])
    expect(s.restored).toEqual([['2.0.0', '1.0.0']])
    expect(await s.failed()).toEqual([])
    expect(await lines(dir, 'launches.log')).toEqual(['1.0.0'])
    expect(await s.pending()).toEqual([])
    expect(await s.running()).toEqual([])
  }, 90_000)

  it('takes no longer during the drain than the grace of the request in flight', async () => {
    const dir = await tempDir('deltaport-stop-drain-')
    // The drain waits up to stopTimeoutMs for the live write in flight; the stop's own close gives that
    // write stopTimeoutMs as well. Once, not one after the other.
    const s = await serving(dir, { slowMs: 60_000 }, { stopTimeoutMs: 3000 })
    const slow = s.write('/slow', 'slow')
    await logged(dir, 'received.log', '1.0.0 /slow')
    const swap = s.supervisor.swapTo(s.v2)
    await s.until((e) => e.type === 'buffering')
    const held = s.write('/w/1')
    await waitFor(() => s.supervisor.counters.held === 1, 10_000)

    expect(await s.stop()).toBeLessThan(3000 + 1200)
    expect(await within(swap, 5000, 'the swap')).toMatchObject({
      outcome: 'stopped',
      errorClass: 'drain',
      serving: '1.0.0',
    })
    expect(await held).toMatchObject({ status: 200, body: 'applied by 1.0.0' })
    // The live write got its grace, then its connection was closed unanswered (as without a swap).
    expect(await slow).toBeNull()
    expect(await lines(dir, 'hooks.log')).toEqual(['prepare 1.0.0'])
    expect(s.restored).toEqual([['2.0.0', '1.0.0']])
    expect(await s.failed()).toEqual([])
    expect(await lines(dir, 'launches.log')).toEqual(['1.0.0'])
    expect(await s.running()).toEqual([])
  }, 90_000)
})

describe('a stop right after the running version failed its prepare or flush hook', () => {
  // The swap would be deferred (retried later); the agent is going, so it is stopped instead.
  const deferred = (s: { events: SupervisorEvent[] }) =>
    s.events.some((e) => e.type === 'error' && /deferred/.test(e.message))

  it('ends stopped, not deferred, when the stop comes while the old process’s death is checked (prepare)', async () => {
    const dir = await tempDir('deltaport-stop-prepare-refused-')
    const s = await serving(dir, { hookStatus: { prepare: 503 } }, { stopTimeoutMs: 1000 })
    const swap = s.supervisor.swapTo(s.v2)
    // The refusal has reached the agent, which now checks (250 ms) whether 1.0.0 refused by dying.
    await logged(dir, 'answered.log', 'prepare 503')

    expect(await s.stop()).toBeLessThan(2000)
    expect(await within(swap, 5000, 'the swap')).toMatchObject({
      outcome: 'stopped',
      errorClass: 'prepare',
      serving: '1.0.0',
    })
    expect(deferred(s)).toBe(false)
    expect(s.supervisor.deferred).toEqual([])
    expect(s.restored).toEqual([['2.0.0', '1.0.0']])
    expect(await s.failed()).toEqual([])
    expect(await lines(dir, 'launches.log')).toEqual(['1.0.0'])
  }, 90_000)

  it('ends stopped, not deferred, when the stop comes while the old process’s death is checked (flush)', async () => {
    const dir = await tempDir('deltaport-stop-flush-refused-')
    const s = await serving(dir, { hookStatus: { flush: 503 } }, { stopTimeoutMs: 1000 })
    const swap = s.supervisor.swapTo(s.v2)
    await logged(dir, 'answered.log', 'flush 503')

    expect(await s.stop()).toBeLessThan(2000)
    expect(await within(swap, 5000, 'the swap')).toMatchObject({
      outcome: 'stopped',
      errorClass: 'flush',
      serving: '1.0.0',
    })
    expect(deferred(s)).toBe(false)
    expect(s.supervisor.deferred).toEqual([])
    expect(s.restored).toEqual([['2.0.0', '1.0.0']])
    expect(await lines(dir, 'launches.log')).toEqual(['1.0.0'])
  }, 90_000)

  it('ends stopped, not deferred, when the stop comes while the held writes replay into the old version', async () => {
    const dir = await tempDir('deltaport-stop-deferral-replay-')
    // 1.0.0 refuses its flush after 1 s (time to hold a write); the held write takes 1.5 s to apply.
    const s = await serving(
      dir,
      { hookMs: { flush: 1000 }, hookStatus: { flush: 503 }, slowMs: 1500 },
      { stopTimeoutMs: 3000 },
    )
    const swap = s.supervisor.swapTo(s.v2)
    await s.until((e) => e.type === 'buffering')
    const held = s.write('/slow')
    await waitFor(() => s.supervisor.counters.held === 1, 10_000)
    // The deferral's replay has sent it to 1.0.0.
    await logged(dir, 'received.log', '1.0.0 /slow')

    expect(await s.stop()).toBeLessThan(3000)
    expect(await within(swap, 5000, 'the swap')).toMatchObject({
      outcome: 'stopped',
      errorClass: 'flush',
      serving: '1.0.0',
      replayed: 1,
    })
    // The replay under way was let finish (within the stop's grace): applied once, answered.
    expect(await held).toMatchObject({ status: 200, body: 'applied by 1.0.0' })
    expect(await lines(dir, 'applied.log')).toEqual(['1.0.0 /slow'])
    expect(deferred(s)).toBe(false)
    expect(s.supervisor.deferred).toEqual([])
    expect(s.restored).toEqual([['2.0.0', '1.0.0']])
    expect(await s.failed()).toEqual([])
    expect(await s.pending()).toEqual([])
    expect(await lines(dir, 'launches.log')).toEqual(['1.0.0'])
  }, 90_000)
})

describe('a stop during a fall-back after an early crash', () => {
  /** 2.0.0 exits 1.5 s after it listens, past its probation, within healthTimeoutMs of its switch. */
  const earlyCrash = { crashAfterMs: { '2.0.0': 1500 } }
  const settings = { probationMs: 200, healthTimeoutMs: 30_000, stopTimeoutMs: 1000 }

  it('does not wait for the previous version’s health check; the failure is still recorded', async () => {
    const dir = await tempDir('deltaport-stop-fallback-health-')
    // Launched again by the fall-back, 1.0.0 takes a minute to listen (healthTimeoutMs gives it 30 s).
    const s = await serving(dir, { ...earlyCrash, relaunchMs: { '1.0.0': 60_000 } }, settings)
    expect(await s.supervisor.swapTo(s.v2)).toMatchObject({ outcome: 'installed' })
    await s.until((e) => e.type === 'rolling-back')
    const relaunched = async () => (await lines(dir, 'launches.log')).filter((l) => l === '1.0.0').length
    const deadline = Date.now() + 20_000
    while ((await relaunched()) < 2 && Date.now() < deadline) await sleep(10)
    expect(await relaunched()).toBe(2)
    // Held for the previous version (the fall-back holds writes).
    const held = s.write('/w/1')
    await waitFor(() => s.supervisor.counters.held === 1, 10_000)

    expect(await s.stop()).toBeLessThan(3000)
    const done = s.events.find(
      (e) => e.type === 'swap-done' && e.report.version === '2.0.0' && e.report.outcome !== 'installed',
    )
    expect(done).toMatchObject({ report: { outcome: 'rolled-back', errorClass: 'crash', serving: '1.0.0' } })
    // 2.0.0 failed on its own before the stop: recorded, and the store goes back to 1.0.0.
    expect(await s.failed()).toEqual(['2.0.0'])
    expect(s.restored).toEqual([['2.0.0', '1.0.0']])
    expect(s.supervisor.version).toBe('1.0.0')
    // Nobody took the held write: its client is told to retry, and nothing replays it.
    const answer = await held
    expect(answer).toMatchObject({ status: 503 })
    expect(Number(answer?.retryAfter)).toBeGreaterThanOrEqual(1)
    expect(await lines(dir, 'applied.log')).toEqual([])
    expect(await s.pending()).toEqual([])
    expect(await lines(dir, 'launches.log')).toEqual(['1.0.0', '2.0.0', '1.0.0'])
    expect(await s.running()).toEqual([])
  }, 90_000)

  it('launches nothing once the stop has come, however early in the fall-back', async () => {
    const dir = await tempDir('deltaport-stop-fallback-begin-')
    let stopping: Promise<void> | null = null
    // The stop comes the moment the fall-back begins (as its `rolling-back` is reported).
    const s = await serving(dir, earlyCrash, settings, (e, supervisor) => {
      if (e.type === 'rolling-back' && supervisor) stopping = supervisor.stop()
    })
    expect(await s.supervisor.swapTo(s.v2)).toMatchObject({ outcome: 'installed' })
    await s.until((e) => e.type === 'rolling-back')
    await within(stopping ?? Promise.reject(new Error('no stop')), 10_000, 'the stop')
    await s.until((e) => e.type === 'swap-done' && e.report.outcome === 'rolled-back')

    expect(await lines(dir, 'launches.log')).toEqual(['1.0.0', '2.0.0'])
    expect(await s.failed()).toEqual(['2.0.0'])
    expect(s.restored).toEqual([['2.0.0', '1.0.0']])
    expect(s.supervisor.version).toBe('1.0.0')
    expect(await s.running()).toEqual([])
  }, 90_000)
})

describe('a stop with more than one service process alive', () => {
  it('stops them side by side: one stopTimeoutMs for all, not one each', async () => {
    const dir = await tempDir('deltaport-stop-two-processes-')
    // Both versions take a minute to exit after SIGTERM, so each gets its SIGKILL after stopTimeoutMs.
    const s = await serving(dir, { termMs: 60_000 }, { probationMs: 60_000, stopTimeoutMs: 2000 })
    const swap = s.supervisor.swapTo(s.v2)
    // Mid-probation: 1.0.0 (the fall-back for reads) and 2.0.0 both run.
    await s.until((e) => e.type === 'switched')
    expect(await s.running()).toEqual(['service', 'service'])

    const took = await s.stop()
    expect(await within(swap, 5000, 'the swap')).toMatchObject({
      outcome: 'stopped',
      errorClass: 'probation',
    })
    // One after the other, this took 2 × 2 s.
    expect(took).toBeGreaterThanOrEqual(2000)
    expect(took).toBeLessThan(2000 + 1200)
    expect(await s.running()).toEqual([])
  }, 90_000)

  it('does not wait for the swap’s own stop of the old version before stopping the new one', async () => {
    const dir = await tempDir('deltaport-stop-while-retiring-')
    const s = await serving(dir, { termMs: 60_000 }, { probationMs: 200, stopTimeoutMs: 2000 })
    const swap = s.supervisor.swapTo(s.v2)
    await s.until((e) => e.type === 'switched')
    // The probation is over and the swap is stopping 1.0.0, which ignores SIGTERM for 2 s; 2.0.0 serves.
    await sleep(600)
    expect(s.events.some((e) => e.type === 'swap-done')).toBe(false)

    const took = await s.stop()
    expect(await within(swap, 5000, 'the swap')).toMatchObject({ outcome: 'installed', serving: '2.0.0' })
    // The rest of 1.0.0's stop, then 2.0.0's whole stop, took 1.4 s + 2 s.
    expect(took).toBeLessThan(2000 + 1200)
    expect(await s.running()).toEqual([])
    expect(await s.recorded()).toEqual([])
  }, 90_000)
})
