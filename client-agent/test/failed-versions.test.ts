import { readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { RunState } from '../../schemas/swap.ts'
import { runDaemonCycle } from '../daemon/daemon.ts'
import { StagingArea } from '../daemon/staging.ts'
import { EdgeClient } from '../edge-client.ts'
import { installArtifact, runFilesOf } from '../install.ts'
import { controlRollout } from '../rollout/client.ts'
import { installWithinRollout, rolloutGate } from '../rollout/update-gate.ts'
import { ArtifactStore } from '../store.ts'
import { RunFiles } from '../swap/run-files.ts'
import { jsonCli, writeArtifact } from './fixtures.ts'
import { TEST_TOKEN, useEdgeWorkspace } from './local-edge.ts'

/**
 * A version `deltaport run` rolled back (its health check failed) is remembered per artifact in
 * run/state.json, the file the supervisor writes (RunFiles.addFailed, as swap/supervisor.ts calls it;
 * swap/test/run-cli.test.ts records one with a real `run`). `update`, `install` of a channel and the
 * daemon's prefetch skip it; `--retry-failed` or naming it installs it; `uninstall` forgets it.
 */
const suite = useEdgeWorkspace()
const idle = () => 0

/** name@1.0.0 installed and current, name@1.1.0 published as the channel head and recorded as failed here. */
async function failedHead(name: string): Promise<ArtifactStore> {
  for (const [i, version] of ['1.0.0', '1.1.0'].entries()) {
    const file = await writeArtifact(suite.ws.dir, `${name}-${version}.bin`, 20_000 + i)
    await suite.publish(file.path, name, version)
    if (version === '1.0.0') await installArtifact(suite.ws.config, { name })
  }
  const store = new ArtifactStore(suite.ws.config.installRoot, name)
  await runFilesOf(store).addFailed('1.1.0', 'health check failed', new Date('2026-11-26T10:00:00Z'))
  return store
}

const cli = (args: string[]) => jsonCli(suite.ws.configFile, args)

describe('versions that failed a swap on this device', () => {
  it('update and install of the channel stay put (exit 0, skippedFailed); the daemon does not stage it', async () => {
    const store = await failedHead('fh-skip')
    const updated = await cli(['update', 'fh-skip'])
    expect(updated.code).toBe(0)
    expect(updated.json).toMatchObject({
      skippedFailed: {
        name: 'fh-skip',
        current: '1.0.0',
        version: '1.1.0',
        reason: 'health check failed',
        at: '2026-11-26T10:00:00.000Z',
        message: expect.stringContaining('--retry-failed'),
      },
    })
    expect(updated.json).not.toHaveProperty('install')
    const installed = await cli(['install', 'fh-skip@stable'])
    expect(installed).toMatchObject({ code: 0, json: { skippedFailed: { version: '1.1.0' } } })
    expect((await store.state()).current).toBe('1.0.0')
    expect(await store.has('1.1.0')).toBe(false)

    const cycle = await runDaemonCycle(suite.ws.config, { loadSampler: idle })
    expect(cycle.failedHere).toContainEqual({ name: 'fh-skip', version: '1.1.0' })
    expect(cycle.staged.filter((s) => s.name === 'fh-skip')).toEqual([])
    expect(await new StagingArea(suite.ws.config.installRoot).find('fh-skip', '1.1.0')).toBeUndefined()

    const status = await cli(['status', 'fh-skip'])
    expect(status.json).toMatchObject({
      status: {
        current: '1.0.0',
        failedHere: [{ version: '1.1.0', reason: 'health check failed', at: '2026-11-26T10:00:00.000Z' }],
      },
    })

    // --retry-failed installs it and forgets the record (a `run` that fails it again records it again).
    const retried = await cli(['update', 'fh-skip', '--retry-failed'])
    expect(retried).toMatchObject({
      code: 0,
      json: { install: { version: '1.1.0', retriedFailed: { version: '1.1.0' } } },
    })
    expect(await runFilesOf(store).failedVersions()).toEqual(new Set())
    expect((await cli(['status', 'fh-skip'])).json).not.toHaveProperty('status.failedHere')
  }, 60_000)

  it('naming the version installs it; a newer version installs normally and keeps the record', async () => {
    const named = await failedHead('fh-named')
    expect(await cli(['update', 'fh-named', '--to', '1.1.0'])).toMatchObject({
      code: 0,
      json: { install: { version: '1.1.0', retriedFailed: { version: '1.1.0' } } },
    })

    const store = await failedHead('fh-newer')
    const file = await writeArtifact(suite.ws.dir, 'fh-newer-1.2.0.bin', 20_002)
    await suite.publish(file.path, 'fh-newer', '1.2.0')
    expect(await cli(['update', 'fh-newer'])).toMatchObject({
      code: 0,
      json: { install: { version: '1.2.0', previous: '1.0.0' } },
    })
    expect((await named.state()).current).toBe('1.1.0')
    expect(await runFilesOf(store).failedVersions()).toEqual(new Set(['1.1.0']))
    expect((await cli(['status', 'fh-newer'])).json).toMatchObject({
      status: { current: '1.2.0', failedHere: [{ version: '1.1.0' }] },
    })
  }, 60_000)

  it('uninstall forgets the record, so a reinstall starts afresh', async () => {
    const store = await failedHead('fh-gone')
    const stateFile = join(store.dir, 'run', 'state.json')
    expect(RunState.parse(JSON.parse(await readFile(stateFile, 'utf8'))).failedVersions).toEqual(['1.1.0'])
    expect(await cli(['uninstall', 'fh-gone'])).toMatchObject({
      code: 0,
      json: { uninstall: { removed: [{ name: 'fh-gone', failed: ['1.1.0'] }] } },
    })
    await expect(stat(stateFile)).rejects.toMatchObject({ code: 'ENOENT' })
    expect(await cli(['install', 'fh-gone'])).toMatchObject({
      code: 0,
      json: { install: { version: '1.1.0' } },
    })
  }, 60_000)

  it('keeps the record bounded: the newest 1000 versions, each reason cut at 200 characters', async () => {
    const store = await failedHead('fh-bounds')
    const files = runFilesOf(store)
    for (let i = 0; i < 1000; i++) await files.addFailed(`0.0.${i}`, 'x'.repeat(300))
    const state = RunState.parse(JSON.parse(await readFile(join(store.dir, 'run', 'state.json'), 'utf8')))
    expect(state.failedVersions).toHaveLength(1000)
    expect(state.failedVersions).not.toContain('1.1.0')
    expect(state.failures.every((f) => f.reason.length === 200)).toBe(true)
  }, 120_000)

  it('keeps every change made at once: a run recording failures while an install forgets another', async () => {
    // Each caller its own RunFiles, as `run` and `install` are separate processes.
    const dir = join(suite.ws.dir, 'concurrent-run')
    await new RunFiles(dir).addFailed('1.0.0')
    await Promise.all([
      new RunFiles(dir).addFailed('1.0.1'),
      new RunFiles(dir).forgetFailed('1.0.0'),
      new RunFiles(dir).addFailed('1.0.2'),
    ])
    expect(await new RunFiles(dir).failedVersions()).toEqual(new Set(['1.0.1', '1.0.2']))
  })

  it('tells a rollout nothing when its version was recorded as failed while the update waited', async () => {
    // `update` looked at the record before `run` (holding the lock) failed the version; the locked
    // install then stays put, and the rollout must not hear `installed` after `run`'s rollback.
    const store = await failedHead('fh-rollout')
    const edge = new EdgeClient(suite.edge.url)
    await controlRollout(edge, TEST_TOKEN, 'fh-rollout', 'stable', 'start', {
      version: '1.1.0',
      stages: [{ percent: 100, durationMs: 3_600_000 }],
    })
    const gate = await rolloutGate(suite.ws.config, 'fh-rollout', undefined)
    expect(gate).toMatchObject({ kind: 'in', version: '1.1.0' })
    if (gate.kind !== 'in') return
    const { result, report } = await installWithinRollout(suite.ws.config, 'fh-rollout', gate, () =>
      installArtifact(suite.ws.config, {
        name: 'fh-rollout',
        target: gate.version,
        channel: 'stable',
        recordedFailures: 'skip',
      }),
    )
    expect(result.skippedFailed).toMatchObject({ version: '1.1.0' })
    expect(report).toMatchObject({ reported: false })
    expect((await store.state()).current).toBe('1.0.0')
    const status = await controlRollout(edge, TEST_TOKEN, 'fh-rollout', 'stable', 'status')
    expect(status.overall.counts).toMatchObject({ installed: 0 })
  }, 60_000)
})
