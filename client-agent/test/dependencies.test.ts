import { execFile } from 'node:child_process'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import type { AgentConfig } from '../config.ts'
import { installArtifact } from '../install.ts'
import { ArtifactStore } from '../store.ts'
import { setYank } from '../yank.ts'
import { agentFailure, writeArtifact } from './fixtures.ts'
import { TEST_TOKEN, useEdgeWorkspace } from './local-edge.ts'

const suite = useEdgeWorkspace()

async function publish(name: string, version: string, deps: Record<string, string> = {}) {
  const art = await writeArtifact(suite.ws.dir, `${name}-${version}.bin`, 2_000)
  const dependencies = Object.entries(deps).map(([dep, range]) => ({ name: dep, range }))
  await suite.publish(art.path, name, version, { dependencies })
}

function device(label: string): AgentConfig {
  return { ...suite.ws.config, installRoot: join(suite.ws.dir, `store-${label}`) }
}

async function currentOf(config: AgentConfig, name: string): Promise<string | null> {
  return (await new ArtifactStore(config.installRoot, name).state()).current
}

describe('dependencies', () => {
  it('are installed first, in the highest version their range allows, and kept when they still fit', async () => {
    await publish('libz', '1.0.0')
    await publish('libz', '1.4.0')
    await publish('libz', '2.0.0')
    await publish('viewer', '1.0.0', { libz: '^1.0.0' })
    const d = device('deps')

    const installed = await installArtifact(d, { name: 'viewer' })
    expect(installed).toMatchObject({
      version: '1.0.0',
      dependencies: [{ name: 'libz', version: '1.4.0', range: '^1.0.0', changed: true }],
    })
    expect(await currentOf(d, 'libz')).toBe('1.4.0')

    // A newer viewer still happy with libz 1.4: nothing is fetched for it.
    await publish('viewer', '1.1.0', { libz: '^1.2.0' })
    const updated = await installArtifact(d, { name: 'viewer' })
    expect(updated.dependencies).toEqual([
      { name: 'libz', version: '1.4.0', range: '^1.2.0', changed: false },
    ])
    // A viewer that needs libz 2 moves it (no other artifact needs libz 1).
    await publish('viewer', '2.0.0', { libz: '^2.0.0' })
    expect((await installArtifact(d, { name: 'viewer' })).dependencies).toEqual([
      { name: 'libz', version: '2.0.0', range: '^2.0.0', changed: true },
    ])
  })

  it('are looked up past folders in the install root that are not artifacts', async () => {
    await publish('libstray', '1.0.0')
    const d = device('stray')
    // Left by someone else: a name that does not URI-decode, one that is not an artifact name, a file.
    for (const stray of ['%zz', 'Not An Artifact'])
      await mkdir(join(d.installRoot, stray), { recursive: true })
    await writeFile(join(d.installRoot, 'notes.txt'), 'hello')
    expect(await installArtifact(d, { name: 'libstray' })).toMatchObject({ version: '1.0.0' })
  })

  it('are resolved through chains and cycles, skipping yanked versions', async () => {
    await publish('leaf', '1.0.0')
    await publish('leaf', '1.1.0')
    await setYank({
      edgeUrl: suite.edge.url,
      token: TEST_TOKEN,
      name: 'leaf',
      version: '1.1.0',
      reason: 'bad',
    })
    await publish('ping', '1.0.0', { pong: '^1.0.0', leaf: '^1.0.0' })
    await publish('pong', '1.0.0', { ping: '^1.0.0' })
    await publish('top', '1.0.0', { ping: '^1.0.0' })
    const d = device('chain')
    const installed = await installArtifact(d, { name: 'top' })
    expect(installed.version).toBe('1.0.0')
    expect(await currentOf(d, 'ping')).toBe('1.0.0')
    expect(await currentOf(d, 'pong')).toBe('1.0.0')
    expect(await currentOf(d, 'leaf')).toBe('1.0.0')
  })

  it('never break another installed artifact: a conflict leaves everything as it was', async () => {
    await publish('libq', '1.0.0')
    await publish('libq', '2.0.0')
    await publish('app-old', '1.0.0', { libq: '^1.0.0' })
    await publish('app-new', '1.0.0', { libq: '^2.0.0' })
    const d = device('conflict')
    await installArtifact(d, { name: 'app-old' })
    expect(await currentOf(d, 'libq')).toBe('1.0.0')

    const conflict = await agentFailure(installArtifact(d, { name: 'app-new' }))
    expect(conflict.code).toBe('dependency-conflict')
    expect(conflict.exitCode).toBe(14)
    expect(conflict.message).toContain('app-old@1.0.0 (needs libq ^1.0.0)')
    expect(await currentOf(d, 'app-new')).toBeNull()
    expect(await currentOf(d, 'libq')).toBe('1.0.0')

    // Updating the library itself past what app-old needs is refused too, unless asked for.
    const direct = await agentFailure(installArtifact(d, { name: 'libq' }))
    expect(direct.code).toBe('dependency-conflict')
    expect(direct.message).toContain('libq@2.0.0 would break app-old@1.0.0')
    expect(await currentOf(d, 'libq')).toBe('1.0.0')
    expect(await installArtifact(d, { name: 'libq', ignoreDependents: true })).toMatchObject({
      version: '2.0.0',
    })
  })

  it('that nothing published satisfies stop the install before it switches', async () => {
    await publish('orphan', '1.0.0', { 'never-published': '^1.0.0' })
    await publish('libr', '1.0.0')
    await publish('needs-r3', '1.0.0', { libr: '^3.0.0' })
    const d = device('missing')
    expect((await agentFailure(installArtifact(d, { name: 'orphan' }))).code).toBe('not-found')
    const none = await agentFailure(installArtifact(d, { name: 'needs-r3' }))
    expect(none.code).toBe('not-found')
    expect(none.message).toContain('no published version of libr satisfies ^3.0.0 (needed by needs-r3@1.0.0)')
    expect(await currentOf(d, 'orphan')).toBeNull()
    expect(await currentOf(d, 'needs-r3')).toBeNull()

    // Found before any dependency is installed: libr, which fits, is not made current for an install
    // that the next dependency stops (it was, and stayed behind on the device).
    await publish('needs-r-and-missing', '1.0.0', { libr: '^1.0.0', 'never-published': '^1.0.0' })
    expect((await agentFailure(installArtifact(d, { name: 'needs-r-and-missing' }))).code).toBe('not-found')
    expect(await currentOf(d, 'libr')).toBeNull()
    expect(await currentOf(d, 'needs-r-and-missing')).toBeNull()
  })

  it('after a rollback, the CLI says which dependency no longer fits and how to fix it', async () => {
    await publish('libm', '1.0.0')
    await publish('libm', '2.0.0')
    await publish('tool', '1.0.0', { libm: '^1.0.0' })
    const d = device('rollback')
    const configFile = join(suite.ws.dir, 'rollback-device.json')
    await writeFile(configFile, JSON.stringify(d))
    const cli = (...args: string[]) =>
      promisify(execFile)(process.execPath, [BIN, '--config', configFile, ...args])
    await cli('install', 'tool')
    await publish('tool', '2.0.0', { libm: '^2.0.0' })
    await cli('update', 'tool')
    expect(await currentOf(d, 'libm')).toBe('2.0.0')

    const back = await cli('rollback', 'tool')
    expect(back.stderr).toContain('tool@1.0.0 needs libm ^1.0.0, the device has 2.0.0')
    expect(back.stderr).toContain('deltaport install tool@1.0.0 --allow-downgrade')
    const fixed = await cli('--json', 'install', 'tool@1.0.0', '--allow-downgrade')
    expect(JSON.parse(fixed.stdout).install.dependencies).toEqual([
      { name: 'libm', version: '1.0.0', range: '^1.0.0', changed: true },
    ])
    const status = JSON.parse((await cli('--json', 'status', 'tool')).stdout).status
    expect(status.dependencies).toEqual([
      { name: 'libm', range: '^1.0.0', current: '1.0.0', satisfied: true },
    ])
  })
})

const BIN = join(import.meta.dirname, '..', 'bin', 'deltaport.ts')
