import { execFile, spawnSync } from 'node:child_process'
import { copyFile, mkdir, readdir, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import type { AgentConfig } from '../config.ts'
import { StagingArea } from '../daemon/staging.ts'
import { unfinishedSwitches } from '../dependency-switch.ts'
import { installArtifact, rollbackArtifact } from '../install.ts'
import { ArtifactStore } from '../store.ts'
import { lockRun } from '../swap/run-lock.ts'
import { uninstallArtifact } from '../uninstall.ts'
import { agentFailure, writeArtifact } from './fixtures.ts'
import { useEdgeWorkspace } from './local-edge.ts'

const suite = useEdgeWorkspace()
const BIN = join(import.meta.dirname, '..', 'bin', 'deltaport.ts')

async function publish(name: string, version: string, deps: Record<string, string> = {}) {
  const art = await writeArtifact(suite.ws.dir, `${name}-${version}.bin`, 2_000)
  const dependencies = Object.entries(deps).map(([dep, range]) => ({ name: dep, range }))
  await suite.publish(art.path, name, version, { dependencies })
}

describe('commands on an artifact never installed', () => {
  it('are not-found and leave no folder for it in the store', async () => {
    const device: AgentConfig = { ...suite.ws.config, installRoot: join(suite.ws.dir, 'store-never') }
    await mkdir(device.installRoot, { recursive: true })
    expect((await agentFailure(uninstallArtifact(device, { name: 'never-here' }))).code).toBe('not-found')
    expect((await agentFailure(rollbackArtifact(device, 'never-here'))).code).toBe('not-found')
    expect(await readdir(device.installRoot)).toEqual([])
  })
})

describe('uninstall', () => {
  it('removes an artifact and, when asked, the dependencies nothing else needs; never what others need', async () => {
    await publish('un-lib', '1.0.0')
    await publish('un-shared', '1.0.0')
    await publish('un-app', '1.0.0', { 'un-lib': '^1.0.0', 'un-shared': '^1.0.0' })
    await publish('un-other', '1.0.0', { 'un-shared': '^1.0.0' })
    const device: AgentConfig = { ...suite.ws.config, installRoot: join(suite.ws.dir, 'store-uninstall') }
    await installArtifact(device, { name: 'un-app' })
    await installArtifact(device, { name: 'un-other' })

    // A library an installed artifact runs on stays.
    const needed = await agentFailure(uninstallArtifact(device, { name: 'un-lib' }))
    expect(needed.code).toBe('dependency-conflict')
    expect(needed.message).toContain('un-app@1.0.0 (^1.0.0)')

    // What the daemon prefetched of an artifact goes with it (staged copy and partial downloads);
    // another artifact's stays.
    const staging = new StagingArea(device.installRoot)
    await staging.prepare()
    for (const name of ['un-app', 'un-other']) {
      const store = new ArtifactStore(device.installRoot, name)
      const copy = join(suite.ws.dir, `${name}-staged.bin`)
      await copyFile(store.blobPath('1.0.0'), copy)
      await staging.put(copy, await store.manifestOf('1.0.0'))
      await writeFile(staging.partialPath(name, '1.1.0'), 'half a download')
    }

    const result = await uninstallArtifact(device, { name: 'un-app', withDependencies: true })
    expect(result.removed).toEqual([
      { name: 'un-app', versions: ['1.0.0'], staged: ['1.0.0'], unfinished: 0 },
      { name: 'un-lib', versions: ['1.0.0'], staged: [], unfinished: 0 },
    ])
    expect((await staging.list()).map((e) => e.name)).toEqual(['un-other'])
    expect(await readdir(staging.partialDir)).toEqual([`un-other@1.1.0.part`])
    expect(result.kept).toEqual([{ name: 'un-shared', reason: 'needed by un-other' }])
    const app = new ArtifactStore(device.installRoot, 'un-app')
    expect(await app.installedVersions()).toEqual([])
    // Rollback protection survives: the serial high-water mark is still on disk.
    expect(await app.state()).toMatchObject({ current: null, previous: null, lastSerial: 1 })
    expect((await new ArtifactStore(device.installRoot, 'un-shared').state()).current).toBe('1.0.0')
    expect((await agentFailure(uninstallArtifact(device, { name: 'un-app' }))).code).toBe('not-found')
    // Rollback of what was uninstalled says so, as for an artifact never installed (exit 6).
    const rolledBack = await agentFailure(rollbackArtifact(device, 'un-app'))
    expect([rolledBack.code, rolledBack.message]).toEqual(['not-found', 'un-app is not installed'])

    // It installs again like any artifact, its dependency with it.
    expect(await installArtifact(device, { name: 'un-app' })).toMatchObject({
      version: '1.0.0',
      method: 'full',
    })
    expect((await new ArtifactStore(device.installRoot, 'un-lib').state()).current).toBe('1.0.0')
  })

  it('reports a damaged installed manifest as io naming the file, without holding other artifacts back', async () => {
    await publish('dm-app', '1.0.0')
    await publish('dm-other', '1.0.0')
    const device: AgentConfig = { ...suite.ws.config, installRoot: join(suite.ws.dir, 'store-damaged') }
    await installArtifact(device, { name: 'dm-app' })
    const app = new ArtifactStore(device.installRoot, 'dm-app')
    const manifest = join(app.versionDir('1.0.0'), 'manifest.json')
    for (const [damage, why] of [
      ['{bad', 'is not valid JSON'],
      ['{"signed":{}}', 'does not match the manifest schema'],
    ] as const) {
      await writeFile(manifest, damage)
      const error = await agentFailure(app.manifestOf('1.0.0'))
      expect(error.code).toBe('io')
      expect(error.message).toBe(
        `the installed manifest of dm-app@1.0.0 (${manifest}) ${why}: run "deltaport uninstall dm-app" and install it again`,
      )
    }
    // Installing something else reads every installed manifest for dependents: not stopped by this one.
    expect(await installArtifact(device, { name: 'dm-other' })).toMatchObject({ version: '1.0.0' })
    // And the way out works.
    const removed = await uninstallArtifact(device, { name: 'dm-app' })
    expect(removed.removed).toEqual([{ name: 'dm-app', versions: ['1.0.0'], staged: [], unfinished: 0 }])
    expect(await installArtifact(device, { name: 'dm-app' })).toMatchObject({ version: '1.0.0' })
  })

  it('is refused while a deltaport run serves the artifact, and goes ahead once that process is gone', async () => {
    await publish('un-served', '1.0.0')
    const device: AgentConfig = { ...suite.ws.config, installRoot: join(suite.ws.dir, 'store-served') }
    await installArtifact(device, { name: 'un-served' })
    const run = join(new ArtifactStore(device.installRoot, 'un-served').dir, 'run')
    await mkdir(run, { recursive: true })
    const children = (pids: number[]) =>
      writeFile(join(run, 'children.json'), JSON.stringify({ pids, versions: ['1.0.0'] }))

    await children([process.pid])
    const busy = await agentFailure(uninstallArtifact(device, { name: 'un-served' }))
    expect(busy.code).toBe('busy')
    expect(busy.message).toContain(`pids ${process.pid}`)

    const exited = spawnSync(process.execPath, ['-e', '0']).pid
    await children([exited])
    // A run still starting (its lock taken, no service recorded yet) counts as serving too.
    const starting = await lockRun(device.installRoot, 'un-served')
    try {
      const early = await agentFailure(uninstallArtifact(device, { name: 'un-served' }))
      expect(early.code).toBe('busy')
      expect(early.message).toContain('another `deltaport run` already serves un-served')
    } finally {
      await starting.release()
    }
    expect(await new ArtifactStore(device.installRoot, 'un-served').installedVersions()).toEqual(['1.0.0'])
    expect((await uninstallArtifact(device, { name: 'un-served' })).removed).toEqual([
      { name: 'un-served', versions: ['1.0.0'], staged: [], unfinished: 0 },
    ])
  })

  it('runs from the CLI: exit 14 naming the dependents, then --json output', async () => {
    await publish('un-cli-lib', '1.0.0')
    await publish('un-cli-app', '1.0.0', { 'un-cli-lib': '^1.0.0' })
    const configFile = join(suite.ws.dir, 'uninstall-cli.json')
    await writeFile(
      configFile,
      JSON.stringify({ ...suite.ws.config, installRoot: join(suite.ws.dir, 'store-uninstall-cli') }),
    )
    const cli = (args: string[]) =>
      promisify(execFile)(process.execPath, [BIN, '--config', configFile, ...args]).then(
        ({ stdout }) => ({ code: 0, stdout, stderr: '' }),
        (e: { code: number; stdout: string; stderr: string }) => e,
      )
    expect((await cli(['install', 'un-cli-app'])).code).toBe(0)
    const refused = await cli(['uninstall', 'un-cli-lib'])
    expect(refused.code).toBe(14)
    expect(refused.stderr).toContain('un-cli-app@1.0.0')
    const done = await cli(['--json', 'uninstall', 'un-cli-app', '--with-dependencies'])
    expect(done.code).toBe(0)
    expect(JSON.parse(done.stdout)).toMatchObject({
      ok: true,
      uninstall: { name: 'un-cli-app', removed: [{ name: 'un-cli-app' }, { name: 'un-cli-lib' }], kept: [] },
    })
  })

  it('removes the journal of an update of it killed while switching, which status then no longer reports', async () => {
    await publish('un-jlib', '1.0.0')
    await publish('un-japp', '1.0.0', { 'un-jlib': '^1.0.0' })
    const device: AgentConfig = {
      ...suite.ws.config,
      installRoot: join(suite.ws.dir, 'store-uninstall-journal'),
    }
    await installArtifact(device, { name: 'un-japp' })
    // What a kill of that first install leaves after un-jlib's switch: the app committed, never current.
    const app = new ArtifactStore(device.installRoot, 'un-japp')
    await rm(app.currentLink)
    await rm(join(app.dir, 'state.json'))
    const steps = [
      { name: 'un-jlib', from: null, to: '1.0.0' },
      { name: 'un-japp', from: null, to: '1.0.0' },
    ]
    await writeFile(join(app.dir, 'switching.json'), JSON.stringify({ steps }))
    expect(await unfinishedSwitches(device.installRoot, 'un-jlib')).toHaveLength(1)

    await uninstallArtifact(device, { name: 'un-japp' })
    // Only the app's serial memory (state.json) is left, and status of the library no longer tells of
    // an update of the app to finish (whose `deltaport update` would install the app again).
    expect(await readdir(app.dir)).toEqual(['state.json'])
    expect(await unfinishedSwitches(device.installRoot, 'un-jlib')).toEqual([])
  })

  it('removes what a killed first install left, and only then says "not installed"', async () => {
    const device: AgentConfig = { ...suite.ws.config, installRoot: join(suite.ws.dir, 'store-killed-first') }
    // What a first install killed mid-download leaves: no version, no current, a partial download.
    const store = new ArtifactStore(device.installRoot, 'un-killed')
    await mkdir(join(store.dir, 'partial'), { recursive: true })
    await writeFile(store.partialPath('1.0.0'), Buffer.alloc(64 * 1024, 7))
    const result = await uninstallArtifact(device, { name: 'un-killed' })
    expect(result.removed).toEqual([{ name: 'un-killed', versions: [], staged: [], unfinished: 1 }])
    expect(await store.unfinishedWork()).toEqual([])
    expect((await agentFailure(uninstallArtifact(device, { name: 'un-killed' }))).code).toBe('not-found')
  })

  it('removes what the daemon is fetching of an artifact not installed yet, its claim with it', async () => {
    const device: AgentConfig = { ...suite.ws.config, installRoot: join(suite.ws.dir, 'store-prefetching') }
    // A dependency the daemon prefetches before anything installed it: its claim and half a download.
    const staging = new StagingArea(device.installRoot)
    await staging.claim('un-coming', '1.0.0')
    await writeFile(staging.partialPath('un-coming', '1.0.0'), 'half a download')
    const result = await uninstallArtifact(device, { name: 'un-coming' })
    expect(result.removed).toEqual([{ name: 'un-coming', versions: [], staged: [], unfinished: 0 }])
    // The claim gone is what makes the daemon drop the item instead of putting it in (daemon.test.ts).
    expect(await staging.isClaimed('un-coming', '1.0.0')).toBe(false)
    expect(await staging.holds('un-coming')).toBe(false)
    expect((await agentFailure(uninstallArtifact(device, { name: 'un-coming' }))).code).toBe('not-found')
  })
})
