import { spawn } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { type AgentConfig, loadConfig } from '../config.ts'
import { watchConfig } from '../daemon/config-watch.ts'
import { type CycleResult, runDaemon } from '../daemon/daemon.ts'
import type { AgentError } from '../errors.ts'
import { type FaultProxy, startFaultProxy } from './fault-proxy.ts'
import { useEdgeWorkspace } from './local-edge.ts'

/**
 * The long-running daemon takes a changed config file before its next cycle, validated as at start;
 * an invalid one is reported once and the last good config keeps running. A real config file, the real
 * edge (behind a pass-through loopback proxy that records the polls).
 */

const suite = useEdgeWorkspace()
const BIN = join(import.meta.dirname, '..', 'bin', 'deltaport.ts')

let proxy: FaultProxy | undefined
afterEach(async () => {
  await proxy?.close()
  proxy = undefined
})

async function until(what: () => boolean, ms = 20_000): Promise<void> {
  const end = Date.now() + ms
  while (!what()) {
    if (Date.now() > end) throw new Error('timed out waiting')
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

/** `deltaport daemon --json --interval <s>` on `file`, its stdout lines parsed as they come. */
function spawnDaemonJson(file: string, intervalSeconds: number) {
  const child = spawn(
    process.execPath,
    [BIN, '--config', file, '--json', 'daemon', '--interval', String(intervalSeconds)],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  )
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  const lines: Record<string, unknown>[] = []
  let buffered = ''
  child.stdout.on('data', (d: Buffer) => {
    buffered += d.toString()
    for (let at = buffered.indexOf('\n'); at >= 0; at = buffered.indexOf('\n')) {
      lines.push(JSON.parse(buffered.slice(0, at)) as Record<string, unknown>)
      buffered = buffered.slice(at + 1)
    }
  })
  return { child, exited, lines }
}

describe('the daemon reloading its config file', () => {
  it('takes a valid change at the next cycle, and keeps the last good config on an invalid one', async () => {
    proxy = await startFaultProxy(suite.edge.url, () => undefined)
    const edgeUrl = proxy.url
    const polls = () => proxy?.seen().filter((r) => r.path.startsWith('/v1/prefetch')) ?? []
    const dir = await mkdtemp(join(tmpdir(), 'deltaport-reload-'))
    const file = join(dir, 'deltaport.json')
    const base = {
      edgeUrl,
      trustedKeys: suite.ws.config.trustedKeys,
      installRoot: './store',
      idleLoadPerCore: 1000,
    }
    // A zero budget: every cycle is skipped (`no-budget`) without asking the edge anything.
    await writeFile(file, JSON.stringify({ ...base, stagingBudgetBytes: 0 }))
    const watch = await watchConfig(file)
    const config = await loadConfig(file)

    const stop = new AbortController()
    const cycles: CycleResult[] = []
    const reloaded: AgentConfig[] = []
    const refused: AgentError[] = []
    const errors: Error[] = []
    const done = runDaemon(config, {
      signal: stop.signal,
      intervalSeconds: 0.1,
      configWatch: watch,
      onCycle: (result) => cycles.push(result),
      onError: (error) => errors.push(error),
      onConfig: (event) => {
        if ('reloaded' in event) reloaded.push(event.reloaded)
        else refused.push(event.error)
      },
    })
    try {
      await until(() => cycles.length >= 2)
      expect(cycles.every((c) => c.skipped === 'no-budget')).toBe(true)

      // Invalid for the schema (the same one as at start): reported once, however many cycles follow.
      await writeFile(file, JSON.stringify({ ...base, stagingBudgetBytes: 'lots' }))
      await until(() => refused.length === 1)
      let seen = cycles.length
      await until(() => cycles.length >= seen + 4)
      // Not JSON at all: a new change, reported once more.
      await writeFile(file, '{"edgeUrl": ')
      await until(() => refused.length === 2)
      seen = cycles.length
      await until(() => cycles.length >= seen + 4)
      // Valid, but another store: the running daemon holds this one's lock; not taken, not even in part.
      await writeFile(file, JSON.stringify({ ...base, installRoot: './other', stagingBudgetBytes: 1 << 20 }))
      await until(() => refused.length === 3)
      seen = cycles.length
      await until(() => cycles.length >= seen + 4)
      expect(refused.map((e) => e.code)).toEqual(['config', 'config', 'config'])
      expect(refused[0]?.message).toContain('stagingBudgetBytes')
      expect(refused[1]?.message).toContain('is not valid JSON')
      expect(refused[2]?.message).toContain('restart it')
      expect(reloaded).toEqual([])
      expect(errors).toEqual([])
      // The last good config ran on: every cycle skipped, nothing asked of the edge.
      expect(cycles.every((c) => c.skipped === 'no-budget')).toBe(true)
      expect(polls()).toEqual([])

      // A valid change: taken before the next cycle, which polls the edge with the new budget.
      await writeFile(file, JSON.stringify({ ...base, stagingBudgetBytes: 1 << 20 }))
      await until(() => polls().length === 1)
      await until(() => cycles.some((c) => c.skipped === null))
      expect(reloaded).toHaveLength(1)
      expect(reloaded[0]?.stagingBudgetBytes).toBe(1 << 20)
      expect(reloaded[0]?.installRoot).toBe(join(dir, 'store'))
      expect(new URL(polls()[0]?.path ?? '', edgeUrl).searchParams.get('budget')).toBe(String(1 << 20))
      expect(refused).toHaveLength(3)
      expect(errors).toEqual([])
    } finally {
      stop.abort()
      await done
      await rm(dir, { recursive: true, force: true })
    }
  }, 60_000)

  it('reports a config file removed under it once, and runs on', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'deltaport-reload-'))
    const file = join(dir, 'deltaport.json')
    await writeFile(
      file,
      JSON.stringify({ edgeUrl: suite.edge.url, installRoot: './store', stagingBudgetBytes: 0 }),
    )
    const watch = await watchConfig(file)
    const stop = new AbortController()
    let cycles = 0
    const refused: AgentError[] = []
    const done = runDaemon(await loadConfig(file), {
      signal: stop.signal,
      intervalSeconds: 0.1,
      configWatch: watch,
      onCycle: () => {
        cycles++
      },
      onConfig: (event) => {
        if ('error' in event) refused.push(event.error)
      },
    })
    try {
      await until(() => cycles >= 2)
      await rm(file)
      await until(() => refused.length === 1)
      const seen = cycles
      await until(() => cycles >= seen + 4)
      expect(refused).toHaveLength(1)
      expect(refused[0]?.message).toContain('cannot read config file')
    } finally {
      stop.abort()
      await done
      await rm(dir, { recursive: true, force: true })
    }
  }, 60_000)

  it('`deltaport daemon --json` says so: a refused change as a config failure, a taken one as configReloaded', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'deltaport-reload-'))
    const file = join(dir, 'deltaport.json')
    const base = { edgeUrl: suite.edge.url, installRoot: './store', idleLoadPerCore: 1000 }
    await writeFile(file, JSON.stringify({ ...base, stagingBudgetBytes: 0 }))
    const { child, exited, lines } = spawnDaemonJson(file, 1)
    try {
      await until(() => lines.length >= 1)
      await writeFile(file, JSON.stringify({ ...base, stagingBudgetBytes: -1 }))
      await until(() => lines.some((l) => l.ok === false))
      await writeFile(file, JSON.stringify({ ...base, stagingBudgetBytes: 1 << 20 }))
      await until(() => lines.some((l) => 'configReloaded' in l))
      await until(() => lines.some((l) => (l.daemon as CycleResult | undefined)?.skipped === null))
    } finally {
      child.kill('SIGTERM')
    }
    expect(await exited).toBe(0)
    const refusedLines = lines.filter((l) => l.ok === false)
    expect(refusedLines).toEqual([
      {
        ok: false,
        error: expect.objectContaining({
          code: 'config',
          keptLastGood: true,
          message: expect.stringContaining('stagingBudgetBytes'),
        }),
      },
    ])
    expect(lines.filter((l) => 'configReloaded' in l)).toEqual([{ ok: true, configReloaded: file }])
    await rm(dir, { recursive: true, force: true })
  }, 60_000)

  it('on SIGHUP looks at the file and polls at once, however long the interval, and keeps running', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'deltaport-reload-hup-'))
    const file = join(dir, 'deltaport.json')
    const base = { edgeUrl: suite.edge.url, installRoot: './store', idleLoadPerCore: 1000 }
    await writeFile(file, JSON.stringify({ ...base, stagingBudgetBytes: 0 }))
    const { child, exited, lines } = spawnDaemonJson(file, 3600)
    const cycles = () => lines.filter((l) => 'daemon' in l).map((l) => l.daemon as CycleResult)
    try {
      await until(() => cycles().length >= 1)
      expect(cycles()[0]?.skipped).toBe('no-budget')
      await writeFile(file, JSON.stringify({ ...base, stagingBudgetBytes: 1 << 20 }))
      // The next cycle is an hour away: only the signal can bring it forward.
      child.kill('SIGHUP')
      await until(() => cycles().length >= 2)
      expect(lines.filter((l) => 'configReloaded' in l)).toEqual([{ ok: true, configReloaded: file }])
      expect(cycles()[1]?.skipped).toBeNull()
      // A second SIGHUP with nothing changed polls again, and the daemon is still there to hear SIGTERM.
      child.kill('SIGHUP')
      await until(() => cycles().length >= 3)
    } finally {
      child.kill('SIGTERM')
    }
    expect(await exited).toBe(0)
    await rm(dir, { recursive: true, force: true })
  }, 60_000)
})
