import { once } from 'node:events'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { createServer, type Server } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { afterAll, describe, expect, it } from 'vitest'
import { RunChildren, SwapSettings } from '../../../schemas/swap.ts'
import { AgentError } from '../../errors.ts'
import { buildSampleService } from '../../sample-service/build.ts'
import { Supervisor, type SupervisorEvent } from '../supervisor.ts'
import type { ReadyUpdate, UpdateSource } from '../update-source.ts'
import { runningArtifacts, spawnAgent, waitFor, within } from './harness.ts'

/**
 * Stopping `deltaport run` at awkward moments: the agent must exit promptly and leave no service
 * process behind, whatever it was doing (an update downloading, a public port it could not take).
 */

const dirs: string[] = []
const supervisors: Supervisor[] = []
afterAll(async () => {
  for (const s of supervisors) await s.stop().catch(() => undefined)
  for (const d of dirs) await rm(d, { recursive: true, force: true })
})

async function artifactsFor(versions: string[]) {
  const dir = await mkdtemp(join(tmpdir(), 'deltaport-swap-stop-'))
  dirs.push(dir)
  const artifacts = new Map<string, string>()
  for (const version of versions)
    artifacts.set(version, await buildSampleService(join(dir, `${version}.js`), { version }))
  const ready = (version: string): ReadyUpdate => ({ version, artifactPath: artifacts.get(version)! })
  const options = (port: number, source?: UpdateSource, events: SupervisorEvent[] = []) => ({
    command: [process.execPath, '--no-warnings', '{artifact}'],
    runDir: join(dir, 'run'),
    dataDir: join(dir, 'data'),
    settings: SwapSettings.parse({}),
    initial: ready(versions[0]!),
    host: '127.0.0.1',
    port,
    stdio: 'ignore' as const,
    ...(source ? { source } : {}),
    onEvent: (e: SupervisorEvent) => events.push(e),
  })
  const recordedPids = async () =>
    RunChildren.parse(JSON.parse(await readFile(join(dir, 'run', 'children.json'), 'utf8'))).pids
  return { artifacts, ready, options, recordedPids, running: () => runningArtifacts(artifacts) }
}

/**
 * An update source whose next version takes as long as the test says, like a download on a slow link.
 * `honoursAbort: false` is a download that completes anyway once started.
 */
function slowSource(ready: (v: string) => ReadyUpdate, version: string, honoursAbort: boolean) {
  let finish: () => void = () => undefined
  const downloaded = new Promise<void>((resolve) => {
    finish = resolve
  })
  const seen: { asked: number; aborted: boolean } = { asked: 0, aborted: false }
  const source: UpdateSource = {
    next: async (_running, _refused, signal) => {
      seen.asked++
      const aborted = new Promise<void>((_, reject) =>
        signal?.addEventListener('abort', () => {
          seen.aborted = true
          if (honoursAbort) reject(new AgentError('network', 'download aborted'))
        }),
      )
      await Promise.race([downloaded, aborted])
      return ready(version)
    },
    restore: async () => undefined,
  }
  return { source, seen, finish }
}

/** Serving 1.0.0 with an update check under way whose source is downloading 2.0.0. */
async function checkingForUpdate(honoursAbort: boolean) {
  const t = await artifactsFor(['1.0.0', '2.0.0'])
  const slow = slowSource(t.ready, '2.0.0', honoursAbort)
  const events: SupervisorEvent[] = []
  const supervisor = await Supervisor.start(t.options(0, slow.source, events))
  supervisors.push(supervisor)
  const check = supervisor.checkForUpdate()
  await waitFor(
    () => slow.seen.asked === 1,
    10_000,
    () => 'the update check never asked its source',
  )
  return { t, slow, events, supervisor, check }
}

describe('stopping run', () => {
  it('aborts an update still downloading: stop returns at once and no new version starts', async () => {
    const { t, slow, events, supervisor, check } = await checkingForUpdate(true)
    await within(supervisor.stop(), 10_000, 'stop waited for the download')
    expect(slow.seen.aborted).toBe(true)
    expect(await within(check, 5_000, 'the aborted check never ended')).toBeNull()
    expect(events.map((e) => e.type)).not.toContain('swap-started')
    expect(await t.running()).toEqual([])
    expect(await t.recordedPids()).toEqual([])
  })

  it('does not swap to a version whose download finished after the stop', async () => {
    const { t, slow, events, supervisor, check } = await checkingForUpdate(false)
    await supervisor.stop()
    slow.finish()
    expect(await within(check, 5_000, 'the check never ended')).toBeNull()
    expect(events.map((e) => e.type)).not.toContain('swap-started')
    expect(await t.running()).toEqual([])
  })

  it('exits promptly on SIGTERM while a crashed service waits out a long restart back-off', async () => {
    const t = await artifactsFor(['1.0.0'])
    const dir = dirs.at(-1)!
    // What `deltaport run` does, in a process of its own (its exit is what is measured): a restart
    // back-off of two minutes, stop on SIGTERM, every event on stdout.
    const agent = await spawnAgent(
      dir,
      t.artifacts.get('1.0.0')!,
      { restartBackoffMs: 120000, restartBackoffMaxMs: 120000 },
      `process.once('SIGTERM', async () => {
  await supervisor.stop()
  console.log(JSON.stringify({ type: 'stopped' }))
})
`,
      { events: true },
    )
    const seen: string[] = []
    createInterface({ input: agent.stdout }).on('line', (line) => {
      seen.push((JSON.parse(line) as { type: string }).type)
    })
    try {
      await waitFor(
        () => seen.includes('started'),
        20_000,
        () => `no start: ${seen}`,
      )
      const [pid] = await t.recordedPids()
      process.kill(pid!, 'SIGKILL')
      // The crash was seen and its restart is two minutes away.
      await waitFor(
        () => seen.includes('service-restarted'),
        20_000,
        () => `no restart: ${seen}`,
      )
      agent.kill('SIGTERM')
      // Far less than the two-minute back-off, even on a busy machine.
      const [code] = await within(once(agent, 'exit'), 45_000, 'the agent process exiting')
      expect(code).toBe(0)
      expect(seen.at(-1)).toBe('stopped')
      // No restart was started, before or after the stop, and nothing is left running.
      expect(seen.filter((type) => type === 'service-restarted')).toHaveLength(1)
      expect(await t.running()).toEqual([])
      expect(await t.recordedPids()).toEqual([])
    } finally {
      agent.kill('SIGKILL')
    }
  })

  it('on a port another process holds: an io error naming the address, and the service it started is stopped', async () => {
    const t = await artifactsFor(['1.0.0'])
    const holder: Server = createServer()
    await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve))
    const port = (holder.address() as { port: number }).port
    try {
      const failure = await Supervisor.start(t.options(port)).then(
        () => null,
        (error: unknown) => error,
      )
      expect(failure).toBeInstanceOf(AgentError)
      expect(failure).toMatchObject({ code: 'io', details: { errno: 'EADDRINUSE', port } })
      expect((failure as AgentError).message).toContain(`cannot listen on 127.0.0.1:${port}`)
      expect(await t.running()).toEqual([])
      expect(await t.recordedPids()).toEqual([])
    } finally {
      holder.close()
    }
  })
})
