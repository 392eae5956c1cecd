import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import { z } from 'zod'
import { RunChildren } from '../../../schemas/swap.ts'
import { buildSampleService, type SampleBuild } from '../../sample-service/build.ts'
import { ArtifactStore } from '../../store.ts'
import { TEST_TOKEN, useEdgeWorkspace } from '../../test/local-edge.ts'
import { parseJournal } from '../journal.ts'
import { RunFiles } from '../run-files.ts'
import { freePort, sleep } from '../service-process.ts'
import { runningArtifacts, within } from './harness.ts'

const exec = promisify(execFile)
const BIN = join(import.meta.dirname, '..', '..', 'bin', 'deltaport.ts')
const NAME = 'sample-svc'
const setup = useEdgeWorkspace()

const Event = z.object({ event: z.object({ type: z.string() }).passthrough() })
type AgentEvent = z.infer<typeof Event>['event']

async function cli(args: string[]): Promise<string> {
  const { stdout } = await exec(process.execPath, [BIN, '--config', setup.ws.configFile, ...args], {
    env: { ...process.env, DELTAPORT_TOKEN: TEST_TOKEN },
  })
  return stdout
}

async function publish(build: SampleBuild, name = NAME): Promise<void> {
  const file = await buildSampleService(join(setup.ws.dir, `${name}-${build.version}.js`), build)
  await exec(
    process.execPath,
    [BIN, '--config', setup.ws.configFile, 'publish', file, '--name', name, '--version', build.version],
    { env: { ...process.env, DELTAPORT_TOKEN: TEST_TOKEN } },
  )
}

/** `deltaport run` as a real child process; its --json events are collected line by line. */
function startAgent(port: number, extra: string[] = [], name = NAME) {
  const child: ChildProcess = spawn(
    process.execPath,
    [
      '--no-warnings',
      BIN,
      '--config',
      setup.ws.configFile,
      '--json',
      'run',
      name,
      '--port',
      String(port),
      '--interval',
      '1',
      ...extra,
      '--',
      process.execPath,
      '--no-warnings',
      '{artifact}',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  )
  const events: AgentEvent[] = []
  const waiters: Array<() => void> = []
  createInterface({ input: child.stdout! }).on('line', (line) => {
    const parsed = Event.safeParse(JSON.parse(line))
    if (parsed.success) events.push(parsed.data.event)
    for (const w of waiters.splice(0)) w()
  })
  let stderr = ''
  child.stderr!.on('data', (c: Buffer) => {
    stderr += c.toString()
  })
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  return {
    child,
    events,
    exited,
    stderr: () => stderr,
    async waitFor(match: (e: AgentEvent) => boolean, timeoutMs = 40_000): Promise<AgentEvent> {
      const deadline = Date.now() + timeoutMs
      for (;;) {
        const found = events.find(match)
        if (found) return found
        if (Date.now() > deadline)
          throw new Error(`no matching event; got ${JSON.stringify(events)}\n${stderr}`)
        await Promise.race([new Promise<void>((r) => waiters.push(r)), sleep(200)])
      }
    },
  }
}

/** The pids of the service an agent has launched (and is health-checking, if it starts slowly). */
async function launched(runFiles: RunFiles, agent: { stderr(): string }): Promise<number[]> {
  const deadline = Date.now() + 40_000
  for (;;) {
    const pids = await runFiles.livePids()
    if (pids.length > 0) return pids
    if (Date.now() > deadline) throw new Error(`the service never started\n${agent.stderr()}`)
    await sleep(50)
  }
}

function write(port: number, client: string, seq: number): Promise<Response> {
  return fetch(`http://127.0.0.1:${port}/write`, {
    method: 'POST',
    headers: { 'x-client-id': client, 'content-type': 'application/json' },
    body: JSON.stringify({ seq }),
  })
}

async function serviceLog(
  name = NAME,
): Promise<Array<{ client: string; seq: number; version: string; replay: boolean }>> {
  const dir = join(new ArtifactStore(setup.ws.config.installRoot, name).dir, 'data')
  const text = await readFile(join(dir, 'writes.log'), 'utf8')
  return text
    .split('\n')
    .filter(Boolean)
    .map((l) =>
      z
        .object({ client: z.string(), seq: z.number(), version: z.string(), replay: z.boolean() })
        .parse(JSON.parse(l)),
    )
}

describe('deltaport run (CLI, local edge)', () => {
  it('installs v1, serves it, picks up a published v2 and swaps under traffic with no error', async () => {
    await publish({ version: '1.0.0' })
    const port = await freePort()
    const agent = startAgent(port)
    try {
      await agent.waitFor((e) => e.type === 'started')
      const statuses: number[] = []
      let seq = 0
      let stop = false
      const traffic = (async () => {
        while (!stop) {
          const w = await write(port, 'cli-client', ++seq)
          statuses.push(w.status)
          await w.arrayBuffer()
          const r = await fetch(`http://127.0.0.1:${port}/state?client=cli-client`)
          statuses.push(r.status)
          await r.arrayBuffer()
        }
      })()
      await sleep(500)
      await publish({ version: '1.0.1' })
      const done = await agent.waitFor((e) => e.type === 'swap-done')
      await sleep(300)
      stop = true
      await traffic
      expect(done).toMatchObject({ report: { version: '1.0.1', outcome: 'installed', serving: '1.0.1' } })
      expect(statuses.length).toBeGreaterThan(10)
      expect(statuses.every((s) => s === 200)).toBe(true)
      const mine = (await serviceLog()).filter((l) => l.client === 'cli-client').map((l) => l.seq)
      expect(mine).toEqual(Array.from({ length: seq }, (_, i) => i + 1))
      const health = await fetch(`http://127.0.0.1:${port}/health`)
      expect(await health.json()).toEqual({ version: '1.0.1' })
      // What the service runs is on record, so an install's pruning spares it.
      const runFiles = new RunFiles(join(new ArtifactStore(setup.ws.config.installRoot, NAME).dir, 'run'))
      expect(await runFiles.versionsInUse()).toEqual(['1.0.1'])
    } finally {
      agent.child.kill('SIGTERM')
      expect(await agent.exited).toBe(0)
    }
  }, 90_000)

  it('replays the journal exactly once, in per-client order, after the agent is SIGKILLed mid-swap', async () => {
    // A slow-starting version keeps the swap in its buffering phase for seconds.
    await publish({ version: '1.0.2', startupDelayMs: 3000 })
    const port = await freePort()
    const first = startAgent(port)
    const clients = ['kill-a', 'kill-b', 'kill-c']
    const perClient = 4
    const journalPath = join(new ArtifactStore(setup.ws.config.installRoot, NAME).dir, 'run', 'swap.journal')
    try {
      await first.waitFor((e) => e.type === 'buffering')
      // Sent in a fixed order without waiting: each request stays open while the swap holds it.
      const pending: Array<Promise<unknown>> = []
      for (let seq = 1; seq <= perClient; seq++) {
        for (const client of clients) {
          pending.push(write(port, client, seq).catch(() => null))
          await sleep(40)
        }
      }
      const deadline = Date.now() + 10_000
      while (parseJournal(await readFile(journalPath)).pending.length < clients.length * perClient) {
        if (Date.now() > deadline) throw new Error('writes never reached the journal')
        await sleep(20)
      }
      first.child.kill('SIGKILL')
      await first.exited
      // Nothing was acknowledged: every held request died with the agent.
      expect((await Promise.all(pending)).every((r) => r === null)).toBe(true)
    } finally {
      first.child.kill('SIGKILL')
    }

    const second = startAgent(port)
    try {
      const started = await second.waitFor((e) => e.type === 'started')
      expect(started).toMatchObject({ recovered: clients.length * perClient })
      expect((started as { reaped?: number }).reaped).toBeGreaterThanOrEqual(1)
      const log = await serviceLog()
      for (const client of clients) {
        const lines = log.filter((l) => l.client === client)
        expect(lines.map((l) => l.seq)).toEqual([1, 2, 3, 4])
        expect(lines.every((l) => l.replay)).toBe(true)
      }
      expect(parseJournal(await readFile(journalPath)).pending).toEqual([])
      // And it serves afterwards: the next write of each client follows on.
      for (const client of clients) expect((await write(port, client, perClient + 1)).status).toBe(200)
    } finally {
      second.child.kill('SIGTERM')
      expect(await second.exited).toBe(0)
    }
  }, 90_000)

  it('rolls back a version that fails its health check: store restored, rollout told, not retried', async () => {
    await publish({ version: '1.0.3', fail: 'health' })
    await cli(['rollout', 'start', NAME, '--version', '1.0.3', '--stages', '100', '--stage-duration', '1h'])
    // A build that keeps answering "unhealthy" fails after 500 ms (the slow-starting 1.0.2 that is current
    // now only refuses connections while it starts, so it still gets the whole timeout).
    const swapConfig = join(setup.ws.dir, 'swap.json')
    await writeFile(swapConfig, JSON.stringify({ healthTimeoutMs: 10_000, unhealthyGraceMs: 500 }))
    const port = await freePort()
    // No polling (--interval 0): the manual trigger, SIGHUP, starts the check.
    const agent = startAgent(port, ['--swap-config', swapConfig, '--interval', '0'])
    try {
      await agent.waitFor((e) => e.type === 'started')
      await sleep(1000)
      expect(agent.events.some((e) => e.type === 'swap-started')).toBe(false)
      agent.child.kill('SIGHUP')
      const done = await agent.waitFor((e) => e.type === 'swap-done')
      expect(done).toMatchObject({
        report: { version: '1.0.3', outcome: 'rolled-back', errorClass: 'health-check', serving: '1.0.2' },
      })
      const status = JSON.parse(await cli(['--json', 'status', NAME])).status
      expect(status).toMatchObject({ current: '1.0.2' })
      expect(await (await fetch(`http://127.0.0.1:${port}/health`)).json()).toEqual({ version: '1.0.2' })
      // The coordinator heard about it (best effort, so give the report a moment).
      let counts: Record<string, number> = {}
      for (let i = 0; i < 50 && !counts['rolled-back']; i++) {
        counts = JSON.parse(await cli(['--json', 'rollout', 'status', NAME])).rollout.overall.counts
        if (!counts['rolled-back']) await sleep(100)
      }
      expect(counts).toMatchObject({ 'rolled-back': 1, installed: 0 })
      // Checking again finds the same channel head, but a version that failed a swap is not tried again.
      agent.child.kill('SIGHUP')
      await sleep(2000)
      expect(agent.events.filter((e) => e.type === 'swap-started')).toHaveLength(1)
    } finally {
      agent.child.kill('SIGTERM')
      expect(await agent.exited).toBe(0)
    }
  }, 90_000)

  it('remembers the version that failed its health check: update skips it, status shows it, naming it installs it', async () => {
    // Follows the test above: `run` rolled 1.0.3 back to 1.0.2, and the rollout of 1.0.3 still admits
    // this device. `update` (the rollout names 1.0.3) and `install` of the channel (its head is 1.0.3)
    // stay on 1.0.2 and say why; the rollout hears nothing more.
    const updated = JSON.parse(await cli(['--json', 'update', NAME]))
    expect(updated).toMatchObject({
      skippedFailed: { name: NAME, current: '1.0.2', version: '1.0.3', reason: 'health check failed' },
    })
    expect(updated).not.toHaveProperty('install')
    expect(updated.skippedFailed.message).toContain(`deltaport install ${NAME}@1.0.3`)
    const installed = JSON.parse(await cli(['--json', 'install', NAME]))
    expect(installed).toMatchObject({ skippedFailed: { version: '1.0.3', current: '1.0.2' } })
    const status = JSON.parse(await cli(['--json', 'status', NAME])).status
    expect(status).toMatchObject({
      current: '1.0.2',
      failedHere: [{ version: '1.0.3', reason: 'health check failed' }],
    })
    expect(await cli(['status', NAME])).toContain('failed here')
    const counts = JSON.parse(await cli(['--json', 'rollout', 'status', NAME])).rollout.overall.counts
    expect(counts).toMatchObject({ 'rolled-back': 1, installed: 0 })
    // Named, it is installed, and no longer recorded as failed.
    const named = JSON.parse(await cli(['--json', 'install', `${NAME}@1.0.3`]))
    expect(named.install).toMatchObject({ version: '1.0.3', retriedFailed: { version: '1.0.3' } })
    expect(JSON.parse(await cli(['--json', 'status', NAME])).status).not.toHaveProperty('failedHere')
  }, 60_000)

  it('keeps a SIGHUP that arrives during a swap: the version published meanwhile follows right after', async () => {
    // Its own artifact, away from the rollout above.
    const name = 'sighup-svc'
    await publish({ version: '1.0.0' }, name)
    const port = await freePort()
    const agent = startAgent(port, ['--interval', '0'], name)
    const versionOf = (e: AgentEvent) => z.object({ report: z.object({ version: z.string() }) }).safeParse(e)
    try {
      await agent.waitFor((e) => e.type === 'started')
      // Slow to start, so its swap still runs when the next version is published and signalled.
      await publish({ version: '1.0.1', startupDelayMs: 6000 }, name)
      agent.child.kill('SIGHUP')
      await agent.waitFor((e) => e.type === 'swap-started')
      await publish({ version: '1.0.2' }, name)
      expect(agent.events.some((e) => e.type === 'swap-done')).toBe(false)
      agent.child.kill('SIGHUP')
      const first = await agent.waitFor((e) => e.type === 'swap-done')
      expect(first).toMatchObject({ report: { version: '1.0.1', outcome: 'installed' } })
      // No further signal: the one sent during the first swap is enough.
      const second = await agent.waitFor((e) => versionOf(e).data?.report.version === '1.0.2', 30_000)
      expect(second).toMatchObject({ report: { outcome: 'installed', serving: '1.0.2' } })
      expect(await (await fetch(`http://127.0.0.1:${port}/health`)).json()).toEqual({ version: '1.0.2' })
    } finally {
      agent.child.kill('SIGTERM')
      expect(await agent.exited).toBe(0)
    }
  }, 120_000)
  it('keeps a SIGHUP that arrives while it starts (a systemd reload): it serves, then checks', async () => {
    const name = 'hup-start-svc'
    // Slow to become healthy: the agent is still starting when the signal comes.
    await publish({ version: '1.0.0', startupDelayMs: 10_000 }, name)
    const port = await freePort()
    const agent = startAgent(port, ['--interval', '0'], name)
    const runFiles = new RunFiles(join(new ArtifactStore(setup.ws.config.installRoot, name).dir, 'run'))
    try {
      await launched(runFiles, agent)
      await publish({ version: '1.0.1' }, name)
      expect(agent.events.some((e) => e.type === 'started')).toBe(false)
      agent.child.kill('SIGHUP')
      await agent.waitFor((e) => e.type === 'started')
      // No polling (--interval 0): the swap comes from the signal kept during the start.
      const done = await agent.waitFor((e) => e.type === 'swap-done')
      expect(done).toMatchObject({ report: { version: '1.0.1', outcome: 'installed' } })
    } finally {
      agent.child.kill('SIGTERM')
      expect(await agent.exited).toBe(0)
    }
  }, 90_000)

  it('keeps a SIGHUP that arrives while it stops: the stop ends as a stop, the service with it', async () => {
    const name = 'hup-stop-svc'
    // A write takes 3 s: a stop waits for the one in flight (up to stopTimeoutMs, 5 s).
    await publish({ version: '1.0.0', writeDelayMs: 3000 }, name)
    const port = await freePort()
    const agent = startAgent(port, ['--interval', '0'], name)
    const store = new ArtifactStore(setup.ws.config.installRoot, name)
    const runFiles = new RunFiles(join(store.dir, 'run'))
    try {
      await agent.waitFor((e) => e.type === 'started')
      const inFlight = write(port, 'a', 1).catch(() => null)
      await sleep(300)
      agent.child.kill('SIGTERM')
      await sleep(300)
      // A reload (or logrotate's HUP) during the stop: its default action would kill the agent mid-stop
      // and leave the service running on its own.
      agent.child.kill('SIGHUP')
      expect(await within(agent.exited, 15_000, 'the agent')).toBe(0)
      expect((await inFlight)?.status).toBe(200)
      expect(await runningArtifacts(new Map([['1.0.0', store.blobPath('1.0.0')]]))).toEqual([])
      expect(await runFiles.livePids()).toEqual([])
    } finally {
      agent.child.kill('SIGKILL')
    }
  }, 90_000)

  it.each([
    ['SIGTERM', 143],
    ['SIGINT', 130],
  ] as const)(
    'on %s while it starts, stops the service it launched and exits %i',
    async (signal, status) => {
      const name = `${signal.toLowerCase()}-start-svc`
      // Slow to become healthy: the agent is still starting when the signal comes.
      await publish({ version: '1.0.0', startupDelayMs: 20_000 }, name)
      const port = await freePort()
      const agent = startAgent(port, ['--interval', '0'], name)
      const store = new ArtifactStore(setup.ws.config.installRoot, name)
      const runFiles = new RunFiles(join(store.dir, 'run'))
      let pids: number[] = []
      try {
        pids = await launched(runFiles, agent)
        expect(agent.events.some((e) => e.type === 'started')).toBe(false)
        agent.child.kill(signal)
        expect(await within(agent.exited, 15_000, 'the agent')).toBe(status)
        // Not left to run on (holding its port) until the next `run` reaps it.
        expect(await runningArtifacts(new Map([['1.0.0', store.blobPath('1.0.0')]]))).toEqual([])
        expect(await runFiles.livePids()).toEqual([])
      } finally {
        agent.child.kill('SIGKILL')
        for (const pid of pids) {
          try {
            process.kill(pid, 'SIGKILL')
          } catch {
            // Gone, as it should be.
          }
        }
      }
    },
    90_000,
  )

  it('holds the requests that arrive while a crashed service restarts and answers them from the restart', async () => {
    const name = 'restart-svc'
    await publish({ version: '1.0.0' }, name)
    // A back-off long enough for the requests below to arrive while nothing runs.
    const swapConfig = join(setup.ws.dir, 'restart-swap.json')
    await writeFile(swapConfig, JSON.stringify({ restartBackoffMs: 1500 }))
    const port = await freePort()
    const agent = startAgent(port, ['--swap-config', swapConfig, '--interval', '0'], name)
    try {
      await agent.waitFor((e) => e.type === 'started')
      const runDir = join(new ArtifactStore(setup.ws.config.installRoot, name).dir, 'run')
      const { pids } = RunChildren.parse(JSON.parse(await readFile(join(runDir, 'children.json'), 'utf8')))
      expect(pids).toHaveLength(1)
      process.kill(pids[0]!, 'SIGKILL')
      const restarted = await agent.waitFor((e) => e.type === 'service-restarted')
      expect(restarted).toMatchObject({ version: '1.0.0', restartInMs: 1500, holdMs: 10_000 })
      const [read, written] = await Promise.all([
        fetch(`http://127.0.0.1:${port}/state?client=restart-client`),
        write(port, 'restart-client', 1),
      ])
      expect([read.status, written.status]).toEqual([200, 200])
      expect(await written.json()).toMatchObject({ seq: 1, version: '1.0.0', applied: true })
      // Applied once, by the replay into the restarted process.
      expect((await serviceLog(name)).filter((l) => l.client === 'restart-client')).toEqual([
        { client: 'restart-client', seq: 1, version: '1.0.0', replay: true },
      ])
    } finally {
      agent.child.kill('SIGTERM')
      expect(await agent.exited).toBe(0)
    }
  }, 90_000)
})
