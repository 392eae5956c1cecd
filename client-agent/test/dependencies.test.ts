import { execFile } from 'node:child_process'
import { once } from 'node:events'
import { chmod, mkdir, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import type { AgentConfig } from '../config.ts'
import type { AgentError } from '../errors.ts'
import { type InstallResult, installArtifact, rollbackArtifact } from '../install.ts'
import { publishArtifact } from '../publish.ts'
import { generateKeyPair } from '../signing.ts'
import { ArtifactStore } from '../store.ts'
import { setYank } from '../yank.ts'
import { agentFailure, jsonCli, writeArtifact } from './fixtures.ts'
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

  it('are not rolled back under an artifact that needs the newer one, unless --ignore-dependents', async () => {
    await publish('rb-lib', '1.0.0')
    await publish('rb-lib', '1.1.0')
    await publish('rb-app', '1.0.0', { 'rb-lib': '^1.0.0' })
    const d = device('rollback-dependency')
    await installArtifact(d, { name: 'rb-app' })
    await publish('rb-lib', '2.0.0')
    await publish('rb-app', '2.0.0', { 'rb-lib': '^2.0.0' })
    await installArtifact(d, { name: 'rb-app' })
    expect(await currentOf(d, 'rb-lib')).toBe('2.0.0')

    const refused = await agentFailure(rollbackArtifact(d, 'rb-lib'))
    expect(refused.code).toBe('dependency-conflict')
    expect(refused.message).toContain(
      'rolling rb-lib back from 2.0.0 to 1.1.0 would break rb-app@2.0.0 (needs rb-lib ^2.0.0); nothing was switched',
    )
    expect(refused.details).toMatchObject({
      dependents: [{ name: 'rb-app', version: '2.0.0', range: '^2.0.0' }],
    })
    expect(await currentOf(d, 'rb-lib')).toBe('2.0.0')

    const configFile = join(suite.ws.dir, 'rollback-dependency-device.json')
    await writeFile(configFile, JSON.stringify(d))
    const cli = (...args: string[]) =>
      promisify(execFile)(process.execPath, [BIN, '--config', configFile, ...args])
    const exit = await cli('rollback', 'rb-lib').then(
      () => 0,
      (error: { code?: number; stderr?: string }) => {
        expect(error.stderr).toContain('pass --ignore-dependents to roll back anyway')
        return error.code
      },
    )
    expect(exit).toBe(14)
    const forced = JSON.parse((await cli('--json', 'rollback', 'rb-lib', '--ignore-dependents')).stdout)
    expect(forced.rollback).toMatchObject({ from: '2.0.0', to: '1.1.0' })
    expect(await currentOf(d, 'rb-lib')).toBe('1.1.0')
    // The dependent now runs with a dependency outside its range (as after `run`'s automatic rollback
    // of a failed trial, or a yank's retreat, which ask no one): its status warns, saying both sides.
    const status = await cli('status', 'rb-app')
    expect(status.stderr).toContain('warning: rb-app@2.0.0 needs rb-lib ^2.0.0, but rb-lib 1.1.0 runs')
    const json = JSON.parse((await cli('--json', 'status', 'rb-app')).stdout)
    expect(json.status.unmetDependencies).toEqual([
      { name: 'rb-lib', range: '^2.0.0', current: '1.1.0', satisfied: false },
    ])
    // Nothing to warn of when the range is met.
    expect((await cli('status', 'rb-lib')).stderr).not.toContain('warning')
  })

  it("an update past a dependent's range with --ignore-dependents: status warns without calling it a move back", async () => {
    await publish('up-lib', '1.0.0')
    await publish('up-app', '1.0.0', { 'up-lib': '^1.0.0' })
    const d = device('update-past-range')
    await installArtifact(d, { name: 'up-app' })
    await publish('up-lib', '2.0.0')
    const configFile = join(suite.ws.dir, 'update-past-range-device.json')
    await writeFile(configFile, JSON.stringify(d))
    const cli = (...args: string[]) =>
      promisify(execFile)(process.execPath, [BIN, '--config', configFile, ...args])
    await cli('update', 'up-lib', '--ignore-dependents')
    expect(await currentOf(d, 'up-lib')).toBe('2.0.0')
    const status = await cli('status', 'up-app')
    expect(status.stderr).toContain('warning: up-app@1.0.0 needs up-lib ^1.0.0, but up-lib 2.0.0 runs')
    // It went forward, past the range: the warning named only ways back ("moved back by …").
    expect(status.stderr).toContain('an update or rollback with --ignore-dependents')
    expect(status.stderr).not.toContain('moved back')
  })

  it("a signed yank's retreat may leave a dependent outside its range, unrefused, and its status warns", async () => {
    await publish('yr-lib', '1.0.0')
    await publish('yr-lib', '1.1.0')
    await publish('yr-app', '1.0.0', { 'yr-lib': '^1.1.0' })
    const d = device('yank-retreat')
    await installArtifact(d, { name: 'yr-lib', target: '1.0.0' })
    await installArtifact(d, { name: 'yr-lib', target: '1.1.0' })
    await installArtifact(d, { name: 'yr-app' })
    const configFile = join(suite.ws.dir, 'yank-retreat-device.json')
    await writeFile(configFile, JSON.stringify(d))
    const yanked = await jsonCli(suite.ws.configFile, ['yank', 'yr-lib@1.1.0', '--reason', 'loses data'], {
      DELTAPORT_TOKEN: TEST_TOKEN,
    })
    expect(yanked.code).toBe(0)
    // The maintainer's signed word moves yr-lib back, though yr-app needs ^1.1.0: not refused (ADR 0027).
    const updated = await jsonCli(configFile, ['update', 'yr-lib'])
    expect(updated.code).toBe(0)
    expect(updated.json?.install).toMatchObject({ version: '1.0.0', retreated: { from: '1.1.0' } })
    const status = await jsonCli(configFile, ['status', 'yr-app'])
    expect(status.code).toBe(0)
    expect(status.json?.status).toMatchObject({
      unmetDependencies: [{ name: 'yr-lib', range: '^1.1.0', current: '1.0.0', satisfied: false }],
    })
    const text = await promisify(execFile)(process.execPath, [
      BIN,
      '--config',
      configFile,
      'status',
      'yr-app',
    ])
    expect(text.stderr).toContain('warning: yr-app@1.0.0 needs yr-lib ^1.1.0, but yr-lib 1.0.0 runs')
  })
})

/** fetch, except that the blob of `name@version` arrives with one byte changed (as a bad link or cache would). */
function corruptingBlob(name: string, version: string): typeof fetch {
  return async (input, init) => {
    const response = await fetch(input, init)
    const url = input instanceof Request ? input.url : String(input)
    if (!new URL(url).pathname.endsWith(`/v1/artifacts/${name}/${version}/blob`) || !response.ok)
      return response
    const bytes = Buffer.from(await response.arrayBuffer())
    bytes[bytes.length >> 1] = (bytes[bytes.length >> 1] ?? 0) ^ 0xff
    return new Response(bytes, { status: response.status, headers: response.headers })
  }
}

describe('an update whose dependencies cannot all be installed', () => {
  it('switches none of them when a later dependency is signed by an untrusted key, and all once it is not', async () => {
    await publish('liba', '1.0.0')
    await publish('libb', '1.0.0')
    await publish('two-deps', '1.0.0', { liba: '^1.0.0', libb: '^1.0.0' })
    const d = device('untrusted-second')
    await installArtifact(d, { name: 'two-deps' })

    await publish('liba', '1.1.0')
    const stranger = join(suite.ws.dir, 'stranger.key.json')
    await writeFile(stranger, JSON.stringify(await generateKeyPair()))
    const forged = await writeArtifact(suite.ws.dir, 'libb-1.1.0-forged.bin', 2_000)
    await publishArtifact({
      edgeUrl: suite.edge.url,
      token: TEST_TOKEN,
      keyFile: stranger,
      file: forged.path,
      name: 'libb',
      version: '1.1.0',
    })
    await publish('two-deps', '2.0.0', { liba: '^1.1.0', libb: '^1.1.0' })

    const failed = await agentFailure(installArtifact(d, { name: 'two-deps' }))
    expect(failed.code).toBe('untrusted-manifest')
    // liba 1.1.0 was downloaded and verified, but the app stays on 1.0.0, so liba stays on what it runs.
    expect(await currentOf(d, 'two-deps')).toBe('1.0.0')
    expect(await currentOf(d, 'liba')).toBe('1.0.0')
    expect(await currentOf(d, 'libb')).toBe('1.0.0')
    expect(await new ArtifactStore(d.installRoot, 'liba').has('1.1.0')).toBe(true)

    // The maintainer publishes a properly signed libb: the next update switches all three.
    await publish('libb', '1.2.0')
    const updated = await installArtifact(d, { name: 'two-deps' })
    expect(updated).toMatchObject({
      version: '2.0.0',
      previous: '1.0.0',
      dependencies: [
        { name: 'liba', version: '1.1.0', changed: true },
        { name: 'libb', version: '1.2.0', changed: true },
      ],
    })
    expect(await currentOf(d, 'liba')).toBe('1.1.0')
    expect(await currentOf(d, 'libb')).toBe('1.2.0')
    // liba's previous version is still the one to roll back to.
    expect((await new ArtifactStore(d.installRoot, 'liba').state()).previous).toBe('1.0.0')
  })

  it('switches none of them when a nested dependency does not verify, and all on the next try', async () => {
    await publish('libc', '1.0.0')
    await publish('nested-app', '1.0.0', { libc: '^1.0.0' })
    const d = device('nested-failure')
    await installArtifact(d, { name: 'nested-app' })

    await publish('libc', '1.1.0')
    await publish('libleaf', '1.0.0')
    await publish('middle', '1.0.0', { libleaf: '^1.0.0' })
    await publish('nested-app', '2.0.0', { libc: '^1.1.0', middle: '^1.0.0' })

    const failed = await agentFailure(
      installArtifact(d, { name: 'nested-app', fetchImpl: corruptingBlob('libleaf', '1.0.0') }),
    )
    expect(failed.code).toBe('integrity-mismatch')
    expect(await currentOf(d, 'nested-app')).toBe('1.0.0')
    expect(await currentOf(d, 'libc')).toBe('1.0.0')
    expect(await currentOf(d, 'middle')).toBeNull()
    expect(await currentOf(d, 'libleaf')).toBeNull()

    const updated = await installArtifact(d, { name: 'nested-app' })
    expect(updated.version).toBe('2.0.0')
    expect(await currentOf(d, 'nested-app')).toBe('2.0.0')
    expect(await currentOf(d, 'libc')).toBe('1.1.0')
    expect(await currentOf(d, 'middle')).toBe('1.0.0')
    expect(await currentOf(d, 'libleaf')).toBe('1.0.0')
  })

  it('leave nothing of a dependency the device never had when the update fails, and keep what it has', async () => {
    await publish('libkept', '1.0.0')
    await publish('fresh-app', '1.0.0', { libkept: '^1.0.0' })
    const d = device('never-had')
    await installArtifact(d, { name: 'fresh-app' })
    await publish('libkept', '1.1.0')
    await publish('libnew', '1.0.0')
    await publish('libbad', '1.0.0')
    await publish('fresh-app', '2.0.0', { libkept: '^1.1.0', libnew: '^1.0.0', libbad: '^1.0.0' })

    // libkept and libnew are staged (downloaded, verified, committed), then libbad's bytes do not verify.
    const failed = await agentFailure(
      installArtifact(d, { name: 'fresh-app', fetchImpl: corruptingBlob('libbad', '1.0.0') }),
    )
    expect(failed.code).toBe('integrity-mismatch')
    expect(await currentOf(d, 'fresh-app')).toBe('1.0.0')
    // libkept's staged version stays for the next try (pruned beyond keepVersions like any other);
    // libnew, which nothing on the device ever ran, is gone with its folder, like a failed first install.
    expect(await new ArtifactStore(d.installRoot, 'libkept').installedVersions()).toEqual(
      expect.arrayContaining(['1.0.0', '1.1.0']),
    )
    expect((await readdir(d.installRoot)).filter((f) => !f.startsWith('.')).sort()).toEqual([
      'fresh-app',
      'libkept',
    ])

    // The same when the app's own bytes fail after every dependency was staged.
    const own = await agentFailure(
      installArtifact(d, {
        name: 'fresh-app',
        fullOnly: true,
        fetchImpl: corruptingBlob('fresh-app', '2.0.0'),
      }),
    )
    expect(own.code).toBe('integrity-mismatch')
    expect((await readdir(d.installRoot)).filter((f) => !f.startsWith('.')).sort()).toEqual([
      'fresh-app',
      'libkept',
    ])

    expect(await installArtifact(d, { name: 'fresh-app' })).toMatchObject({ version: '2.0.0' })
    for (const [name, version] of [
      ['libkept', '1.1.0'],
      ['libnew', '1.0.0'],
      ['libbad', '1.0.0'],
    ] as const)
      expect(await currentOf(d, name)).toBe(version)
  })

  it('still sees what an earlier dependency will switch when it resolves a later one', async () => {
    await publish('libshared', '1.0.0')
    await publish('libshared', '1.5.0')
    await publish('user', '1.0.0', { libshared: '^1.2.0' })
    await publish('both', '1.0.0', { user: '^1.0.0', libshared: '^1.0.0' })
    const d = device('pending-seen')
    // libshared 1.0.0 is current and fits `both`'s own range; `user` needs ^1.2.0 of it.
    await installArtifact(d, { name: 'libshared', target: '1.0.0' })

    const installed = await installArtifact(d, { name: 'both' })
    expect(installed.dependencies).toEqual([
      { name: 'user', version: '1.0.0', range: '^1.0.0', changed: true },
      { name: 'libshared', version: '1.5.0', range: '^1.0.0', changed: true },
    ])
    expect(await currentOf(d, 'libshared')).toBe('1.5.0')
    expect(await currentOf(d, 'user')).toBe('1.0.0')
  })

  it('refuse two dependencies of one update that need ranges of a third no version fits', async () => {
    await publish('libx', '1.2.0')
    await publish('libx', '1.5.0')
    await publish('needs-x12', '1.0.0', { libx: '~1.2.0' })
    await publish('needs-x13', '1.0.0', { libx: '^1.3.0' })
    await publish('wants-both', '1.0.0', { 'needs-x12': '^1.0.0', 'needs-x13': '^1.0.0' })
    const d = device('staged-conflict')

    // needs-x12 stages libx 1.2.0; needs-x13's range is then checked against that staged need too.
    const conflict = await agentFailure(installArtifact(d, { name: 'wants-both' }))
    expect(conflict.code).toBe('dependency-conflict')
    expect(conflict.message).toContain('needs-x12@1.0.0 (needs libx ~1.2.0)')
    for (const name of ['wants-both', 'needs-x12', 'needs-x13', 'libx'])
      expect(await currentOf(d, name)).toBeNull()
  })

  it('switches back the dependencies already switched when the artifact itself cannot be', async () => {
    await publish('libd', '1.0.0')
    await publish('blocked-app', '1.0.0', { libd: '^1.0.0' })
    const d = device('switch-fails')
    await installArtifact(d, { name: 'blocked-app' })
    await publish('libd', '1.1.0')
    await publish('blocked-app', '2.0.0', { libd: '^1.1.0' })

    // While the app downloads (libd already staged), its `current` becomes something no link can
    // replace: the app's switch fails after libd's.
    const appCurrent = join(d.installRoot, 'blocked-app', 'current')
    const failed = await agentFailure(
      installArtifact(d, {
        name: 'blocked-app',
        fullOnly: true,
        fetchImpl: beforeBlob('blocked-app', '2.0.0', async () => {
          await rm(appCurrent)
          await mkdir(join(appCurrent, 'in-the-way'), { recursive: true })
        }),
      }),
    )
    // A rename over a folder fails (EISDIR): the store says what is in the way.
    expect(failed.code).toBe('io')
    expect(failed.message).toContain(`${appCurrent} is a directory`)
    expect(await currentOf(d, 'libd')).toBe('1.0.0')
    expect(await readdir(join(d.installRoot, 'blocked-app'))).not.toContain('switching.json')

    await rm(appCurrent, { recursive: true })
    await symlink(join('versions', '1.0.0'), appCurrent)
    expect(await installArtifact(d, { name: 'blocked-app' })).toMatchObject({ version: '2.0.0' })
    expect(await currentOf(d, 'libd')).toBe('1.1.0')
  })

  it('make another command on a staged dependency wait for the switch, then meet the new set', async () => {
    await publish('libe', '1.0.0')
    await publish('raced-app', '1.0.0', { libe: '^1.0.0' })
    const d = device('raced')
    await installArtifact(d, { name: 'raced-app' })
    await publish('libe', '1.0.5')
    await publish('libe', '1.1.0')
    await publish('raced-app', '2.0.0', { libe: '^1.1.0' })

    // Between staging libe 1.1.0 and the switch, `install libe@1.0.5` starts. It moved libe under the
    // update, which then ended busy with nothing switched; the update holds libe's lock until its
    // switch now, so the install waits, then is checked against raced-app 2.0.0 (which needs ^1.1.0).
    let other: Promise<AgentError> | null = null
    const updated = await installArtifact(d, {
      name: 'raced-app',
      fullOnly: true,
      fetchImpl: beforeBlob('raced-app', '2.0.0', async () => {
        await new Promise<void>((waits) => {
          other = agentFailure(
            installArtifact(d, {
              name: 'libe',
              target: '1.0.5',
              allowDowngrade: true,
              onLockWait: () => waits(),
            }),
          )
          void other.then(() => waits())
        })
      }),
    })
    expect(updated).toMatchObject({ version: '2.0.0' })
    expect((await (other as Promise<AgentError> | null))?.code).toBe('dependency-conflict')
    expect(await currentOf(d, 'libe')).toBe('1.1.0')
    expect(await currentOf(d, 'raced-app')).toBe('2.0.0')
  })

  it('switch nothing when a staged dependency was changed without its lock (by hand)', async () => {
    await publish('libh', '1.0.0')
    await publish('hand-app', '1.0.0', { libh: '^1.0.0' })
    const d = device('by-hand')
    await installArtifact(d, { name: 'hand-app' })
    await publish('libh', '1.1.0')
    await publish('hand-app', '2.0.0', { libh: '^1.1.0' })
    const libh = new ArtifactStore(d.installRoot, 'libh')

    // Someone deletes the staged version by hand while the update downloads hand-app.
    const failed = await agentFailure(
      installArtifact(d, {
        name: 'hand-app',
        fullOnly: true,
        fetchImpl: beforeBlob('hand-app', '2.0.0', () =>
          rm(join(libh.dir, 'versions', '1.1.0'), { recursive: true }),
        ),
      }),
    )
    expect(failed.code).toBe('busy')
    expect(failed.message).toContain('libh 1.1.0, which this update was to switch to, was deleted while')
    expect(failed.message).toContain("does not take deltaport's locks")
    expect(failed.message).toContain('run the update again')
    expect(await currentOf(d, 'libh')).toBe('1.0.0')
    expect(await currentOf(d, 'hand-app')).toBe('1.0.0')
    expect(await installArtifact(d, { name: 'hand-app' })).toMatchObject({ version: '2.0.0' })
    expect(await currentOf(d, 'libh')).toBe('1.1.0')
  })

  it('killed while switching are finished by the next install, even offline', async () => {
    await publish('libj', '1.0.0')
    await publish('journal-app', '1.0.0', { libj: '^1.0.0' })
    const d = device('journal')
    await installArtifact(d, { name: 'journal-app' })
    await publish('libj', '1.1.0')
    await publish('journal-app', '2.0.0', { libj: '^1.1.0' })
    await installArtifact(d, { name: 'journal-app' })

    // What a kill after libj's switch and before the app's leaves: libj moved, the app not, the journal.
    const app = new ArtifactStore(d.installRoot, 'journal-app')
    await app.rollback()
    const journal = {
      steps: [
        { name: 'libj', from: '1.0.0', to: '1.1.0' },
        { name: 'journal-app', from: '1.0.0', to: '2.0.0' },
      ],
    }
    await writeFile(join(app.dir, 'switching.json'), JSON.stringify(journal))
    expect(await currentOf(d, 'journal-app')).toBe('1.0.0')

    const offline: typeof fetch = () => Promise.reject(new TypeError('fetch failed'))
    await agentFailure(installArtifact(d, { name: 'journal-app', fetchImpl: offline }))
    expect(await currentOf(d, 'journal-app')).toBe('2.0.0')
    expect(await currentOf(d, 'libj')).toBe('1.1.0')
    expect(await readdir(app.dir)).not.toContain('switching.json')

    // A journal whose artifact someone moved since (here libj, by hand to 1.0.0 and the app back) is
    // dropped: the later change wins.
    await app.rollback()
    await new ArtifactStore(d.installRoot, 'libj').rollback()
    await writeFile(
      join(app.dir, 'switching.json'),
      JSON.stringify({
        steps: [
          { name: 'libj', from: '0.9.0', to: '1.1.0' },
          { name: 'journal-app', from: '1.0.0', to: '2.0.0' },
        ],
      }),
    )
    await agentFailure(installArtifact(d, { name: 'journal-app', fetchImpl: offline }))
    expect(await currentOf(d, 'journal-app')).toBe('1.0.0')
    expect(await currentOf(d, 'libj')).toBe('1.0.0')
    expect(await readdir(app.dir)).not.toContain('switching.json')
  })
})

/**
 * kapp 0.9.0 then 1.0.0 installed with libk 1.0.0, then the update to kapp 2.0.0 (which needs libk
 * ^1.1.0) killed after libk's switch and before kapp's: libk runs 1.1.0, kapp's link and state.json
 * are as before the update (current 1.0.0, previous 0.9.0), and the journal names both switches.
 */
async function killedMidSwitch(label: string) {
  const d = device(label)
  const [app, lib] = [`kapp-${label}`, `libk-${label}`]
  await publish(lib, '1.0.0')
  await publish(app, '0.9.0', { [lib]: '^1.0.0' })
  await publish(app, '1.0.0', { [lib]: '^1.0.0' })
  await installArtifact(d, { name: app, target: '0.9.0' })
  await installArtifact(d, { name: app, target: '1.0.0' })
  const appStore = new ArtifactStore(d.installRoot, app)
  const appState = await readFile(join(appStore.dir, 'state.json'))
  await publish(lib, '1.1.0')
  await publish(app, '2.0.0', { [lib]: '^1.1.0' })
  await installArtifact(d, { name: app })
  await writeFile(join(appStore.dir, 'state.json'), appState)
  await rm(appStore.currentLink)
  await symlink(join('versions', '1.0.0'), appStore.currentLink)
  const steps = [
    { name: lib, from: '1.0.0', to: '1.1.0' },
    { name: app, from: '1.0.0', to: '2.0.0' },
  ]
  await writeFile(join(appStore.dir, 'switching.json'), JSON.stringify({ steps }))
  expect(await currentOf(d, app)).toBe('1.0.0')
  expect(await currentOf(d, lib)).toBe('1.1.0')
  return { d, app, lib, appStore, steps }
}

describe('an update killed while switching', () => {
  it('is reported by status, of the artifact and of a dependency in it, and finished by rollback first', async () => {
    const { d, app, lib, appStore, steps } = await killedMidSwitch('status')
    const configFile = join(suite.ws.dir, 'killed-device.json')
    await writeFile(configFile, JSON.stringify(d))
    const cli = (...args: string[]) =>
      promisify(execFile)(process.execPath, [BIN, '--config', configFile, ...args])
    for (const name of [app, lib]) {
      const status = await cli('--json', 'status', name)
      expect(JSON.parse(status.stdout).status.unfinishedSwitch).toEqual([
        {
          artifact: app,
          steps: [
            { ...steps[0], current: '1.1.0' },
            { ...steps[1], current: '1.0.0' },
          ],
          message: expect.stringContaining(`deltaport update ${app}`),
        },
      ])
      const told = await cli('status', name)
      expect(told.stderr).toContain(`warning: an update of ${app} was killed while switching`)
    }

    // Rollback does not move kapp to 0.9.0 under libk 1.1.0: it finishes the update, then undoes it.
    const back = await cli('rollback', app)
    expect(back.stdout).toContain('rolled back from 2.0.0 to 1.0.0')
    expect(back.stderr).toContain(`an update killed while switching was finished first (${app} switched)`)
    expect(await currentOf(d, app)).toBe('1.0.0')
    expect((await appStore.state()).previous).toBe('2.0.0')
    expect(await currentOf(d, lib)).toBe('1.1.0')
    expect(await readdir(appStore.dir)).not.toContain('switching.json')
    expect(JSON.parse((await cli('--json', 'status', lib)).stdout).status).not.toHaveProperty(
      'unfinishedSwitch',
    )
  })

  it('is finished before a rollback of a dependency in it, which then acts on the finished set', async () => {
    const { d, app, lib, appStore } = await killedMidSwitch('dependency')
    // The finished set has kapp 2.0.0, which needs libk ^1.1.0: going back to 1.0.0 under it is refused.
    const refused = await agentFailure(rollbackArtifact(d, lib))
    expect(refused.code).toBe('dependency-conflict')
    expect(await currentOf(d, app)).toBe('2.0.0')
    expect(await currentOf(d, lib)).toBe('1.1.0')
    expect(await rollbackArtifact(d, lib, { ignoreDependents: true })).toMatchObject({
      from: '1.1.0',
      to: '1.0.0',
    })
    expect(await currentOf(d, app)).toBe('2.0.0')
    expect(await currentOf(d, lib)).toBe('1.0.0')
    expect(await readdir(appStore.dir)).not.toContain('switching.json')
  })
})

describe('an update killed while switching, finished later', () => {
  it('is put back to the old set, not finished, when a staged version no longer has its signed bytes', async () => {
    const { d, app, lib, appStore } = await killedMidSwitch('rot')
    // The disk rots under the staged version before the restart.
    const blob = appStore.blobPath('2.0.0')
    await chmod(blob, 0o644)
    const bytes = await readFile(blob)
    bytes[0] = (bytes[0] ?? 0) ^ 0xff
    await writeFile(blob, bytes)

    const offline: typeof fetch = () => Promise.reject(new TypeError('fetch failed'))
    const failed = await agentFailure(installArtifact(d, { name: app, fetchImpl: offline }))
    expect(failed.code).toBe('integrity-mismatch')
    expect(failed.message).toContain(`${app}@2.0.0 on disk no longer has the bytes its signed manifest names`)
    expect(failed.details).toMatchObject({
      artifact: app,
      version: '2.0.0',
      putBack: [`${lib} 1.1.0 → 1.0.0`],
    })
    expect(await currentOf(d, app)).toBe('1.0.0')
    expect(await currentOf(d, lib)).toBe('1.0.0')
    expect(await readdir(appStore.dir)).not.toContain('switching.json')

    // The next update downloads the damaged version again and switches the whole set.
    expect(await installArtifact(d, { name: app })).toMatchObject({ version: '2.0.0' })
    expect(await currentOf(d, lib)).toBe('1.1.0')
  })

  it('is put back to the old set, not finished, when no key trusted now signed a staged version', async () => {
    const { d, app, lib, appStore } = await killedMidSwitch('rotated')
    // The maintainer key was dropped from the device's config (rotated away) before the restart.
    const next = await generateKeyPair()
    const rotated = { ...d, trustedKeys: [{ keyid: next.keyid, publicKey: next.publicKey }] }
    const failed = await agentFailure(rollbackArtifact(rotated, lib))
    expect(failed.code).toBe('untrusted-manifest')
    expect(failed.message).toContain(`${app}@2.0.0 on disk has no valid signature by a trusted key now`)
    expect(failed.details).toMatchObject({ revokedKeys: [d.trustedKeys[0]?.keyid] })
    expect(await currentOf(d, app)).toBe('1.0.0')
    expect(await currentOf(d, lib)).toBe('1.0.0')
    expect(await readdir(appStore.dir)).not.toContain('switching.json')
  })
})

describe('two updates at once whose dependencies overlap', () => {
  it('do not wait on each other until the lock wait runs out', async () => {
    // dl-libhttp needs dl-libc; dl-app-a needs dl-libhttp; dl-app-b needs both.
    await publish('dl-libc', '1.0.0')
    await publish('dl-libhttp', '1.0.0', { 'dl-libc': '^1.0.0' })
    await publish('dl-app-a', '1.0.0', { 'dl-libhttp': '^1.0.0' })
    await publish('dl-app-b', '1.0.0', { 'dl-libc': '^1.0.0', 'dl-libhttp': '^1.0.0' })
    const d = device('overlap')
    await installArtifact(d, { name: 'dl-app-a' })
    await installArtifact(d, { name: 'dl-app-b' })
    await publish('dl-libc', '1.1.0')
    await publish('dl-libhttp', '1.1.0', { 'dl-libc': '^1.1.0' })
    await publish('dl-app-a', '2.0.0', { 'dl-libhttp': '^1.1.0' })
    await publish('dl-app-b', '2.0.0', { 'dl-libc': '^1.1.0', 'dl-libhttp': '^1.1.0' })

    // B stages both libraries, then, just before its own download, lets A start. A stages dl-libhttp,
    // which needs dl-libc: A is held at dl-libc's index until B is waiting for a lock (B's switch takes
    // dl-libc, then dl-libhttp) or done. Staging nested in dependency order, A then held dl-libhttp
    // while it waited for dl-libc, which B held while it waited for dl-libhttp.
    // Waiting on each other ends, after this long, with one of them busy (nothing switched).
    const lockWaitMs = 15_000
    let bWaits = () => {}
    const bWaiting = new Promise<void>((resolve) => {
      bWaits = resolve
    })
    let aReached = () => {}
    const aAtLibc = new Promise<void>((resolve) => {
      aReached = resolve
    })
    let aRun: Promise<unknown> = Promise.resolve()
    const bRun = installArtifact(d, {
      name: 'dl-app-b',
      fullOnly: true,
      lockWaitMs,
      onLockWait: () => bWaits(),
      fetchImpl: beforeBlob('dl-app-b', '2.0.0', async () => {
        aRun = installArtifact(d, { name: 'dl-app-a', lockWaitMs, fetchImpl: aFetch })
        await aAtLibc
      }),
    })
    const aFetch: typeof fetch = async (input, init) => {
      const url = new URL(input instanceof Request ? input.url : String(input))
      if (url.pathname === '/v1/artifacts/dl-libc') {
        aReached()
        await Promise.race([bWaiting, bRun.catch(() => undefined)])
      }
      return fetch(input, init)
    }
    const [b, a] = await Promise.allSettled([bRun, aAtLibc.then(() => aRun)])
    expect(b.status, String(b.status === 'rejected' && b.reason)).toBe('fulfilled')
    expect(a.status, String(a.status === 'rejected' && a.reason)).toBe('fulfilled')
    for (const [name, version] of [
      ['dl-app-a', '2.0.0'],
      ['dl-app-b', '2.0.0'],
      ['dl-libhttp', '1.1.0'],
      ['dl-libc', '1.1.0'],
    ] as const)
      expect(await currentOf(d, name)).toBe(version)
  })
})

describe("two updates at once, each of the other's artifact", () => {
  it('do not wait on each other: one waits in lock order and finds the work done, nothing half switched', async () => {
    // cy-a 2.0.0 needs cy-b ^2 and cy-b 2.0.0 needs cy-a ^2: `update cy-a` and `update cy-b` each
    // stage the other's artifact. Each held its own lock while it waited for the other's (A: cy-a then
    // cy-b, B: cy-b then cy-a) until the lock wait ran out and one ended busy with nothing switched.
    await publish('cy-b', '1.0.0')
    await publish('cy-a', '1.0.0', { 'cy-b': '>=1.0.0' })
    const d = device('cycle')
    await installArtifact(d, { name: 'cy-a' })
    await publish('cy-a', '2.0.0', { 'cy-b': '^2.0.0' })
    await publish('cy-b', '2.0.0', { 'cy-a': '^2.0.0' })

    // A holds cy-a and is about to stage cy-b (it reads cy-b's index): B starts then, and A goes on
    // once B waits for a lock (cy-a's) or is done.
    const lockWaitMs = 30_000
    let bWaits = () => {}
    const bWaiting = new Promise<void>((resolve) => {
      bWaits = resolve
    })
    let aReached = () => {}
    const aAtB = new Promise<void>((resolve) => {
      aReached = resolve
    })
    let bRun: Promise<InstallResult> | null = null
    const aFetch: typeof fetch = async (input, init) => {
      const url = new URL(input instanceof Request ? input.url : String(input))
      if (url.pathname === '/v1/artifacts/cy-b' && bRun === null) {
        bRun = installArtifact(d, { name: 'cy-b', lockWaitMs, onLockWait: () => bWaits() })
        aReached()
        await Promise.race([bWaiting, bRun.catch(() => undefined)])
      }
      return fetch(input, init)
    }
    const started = performance.now()
    const aRun = installArtifact(d, { name: 'cy-a', lockWaitMs, fetchImpl: aFetch })
    await Promise.race([aAtB, aRun.catch(() => undefined)])
    const [a, b] = await Promise.allSettled([aRun, bRun ?? Promise.reject(new Error('B never started'))])
    expect(a.status, String(a.status === 'rejected' && a.reason)).toBe('fulfilled')
    expect(b.status, String(b.status === 'rejected' && b.reason)).toBe('fulfilled')
    // Neither sat out the lock wait.
    expect(performance.now() - started).toBeLessThan(lockWaitMs)
    // A switched both; B waited for A (in lock order) and found them current.
    expect(a.status === 'fulfilled' && a.value).toMatchObject({ version: '2.0.0', alreadyCurrent: false })
    expect(b.status === 'fulfilled' && b.value).toMatchObject({
      version: '2.0.0',
      alreadyCurrent: true,
      dependencies: [{ name: 'cy-a', version: '2.0.0', changed: false }],
    })
    expect(await currentOf(d, 'cy-a')).toBe('2.0.0')
    expect(await currentOf(d, 'cy-b')).toBe('2.0.0')
    for (const name of ['cy-a', 'cy-b'])
      expect(await readdir(new ArtifactStore(d.installRoot, name).dir)).not.toContain('switching.json')
  })

  it('as two `deltaport update` processes: both exit 0, one finding the work done', async () => {
    await publish('cp-b', '1.0.0')
    await publish('cp-a', '1.0.0', { 'cp-b': '>=1.0.0' })
    const d = device('cycle-cli')
    await installArtifact(d, { name: 'cp-a' })
    await publish('cp-a', '2.0.0', { 'cp-b': '^2.0.0' })
    await publish('cp-b', '2.0.0', { 'cp-a': '^2.0.0' })

    // A gate in front of the real edge holds `update cp-a`'s read of cp-b's index (it holds cp-a and
    // is about to stage cp-b) until `update cp-b` reads cp-a's (it holds cp-b, about to stage cp-a).
    let aAtB = () => {}
    const aReached = new Promise<void>((resolve) => {
      aAtB = resolve
    })
    let bAtA = () => {}
    const bReached = new Promise<void>((resolve) => {
      bAtA = resolve
    })
    let held = false
    const edge = suite.edge.url
    const gate = createServer((req, res) => {
      const url = new URL(req.url ?? '/', edge)
      const pass = async () => {
        if (url.pathname === '/v1/artifacts/cp-b' && !held) {
          held = true
          aAtB()
          await bReached
        } else if (url.pathname === '/v1/artifacts/cp-a' && held) bAtA()
        const chunks: Buffer[] = []
        for await (const chunk of req) chunks.push(chunk as Buffer)
        const headers = Object.entries(req.headers).flatMap(([k, v]) =>
          typeof v === 'string' && !['host', 'connection', 'content-length'].includes(k)
            ? [[k, v] as [string, string]]
            : [],
        )
        const answer = await fetch(url, {
          method: req.method ?? 'GET',
          headers,
          ...(chunks.length > 0 ? { body: Buffer.concat(chunks) } : {}),
        })
        const body = Buffer.from(await answer.arrayBuffer())
        const out = [...answer.headers].filter(
          ([k]) => !['content-encoding', 'content-length', 'transfer-encoding'].includes(k),
        )
        res.writeHead(answer.status, Object.fromEntries(out))
        res.end(body)
      }
      pass().catch(() => res.destroy())
    })
    gate.listen(0, '127.0.0.1')
    await once(gate, 'listening')
    try {
      const configFile = join(suite.ws.dir, 'cycle-cli-device.json')
      const { port } = gate.address() as AddressInfo
      await writeFile(configFile, JSON.stringify({ ...d, edgeUrl: `http://127.0.0.1:${port}` }))
      const aRun = jsonCli(configFile, ['update', 'cp-a', '--wait', '20'])
      await Promise.race([aReached, aRun])
      const bRun = jsonCli(configFile, ['update', 'cp-b', '--wait', '20'])
      const [a, b] = await Promise.all([aRun, bRun])
      expect(a.code, a.stderr).toBe(0)
      expect(b.code, b.stderr).toBe(0)
      expect(JSON.stringify(b.json)).toContain('"alreadyCurrent":true')
      expect(await currentOf(d, 'cp-a')).toBe('2.0.0')
      expect(await currentOf(d, 'cp-b')).toBe('2.0.0')
    } finally {
      gate.close()
    }
  })

  it("wait in lock order when one update's artifact is a dependency the other stages", async () => {
    // ao-app needs ao-alib and ao-lib; ao-lib needs ao-alib. `update ao-app` holds ao-app and stages
    // both; `update ao-lib` holds ao-lib and stages ao-alib. Without a lock held from staging to the
    // switch, `update ao-lib` switched both libraries in ao-app's window and ao-app ended busy ("changed
    // by another command"), nothing switched; with the switch's locks taken only then, the two could
    // wait on each other (ao-app holding ao-alib for its switch, ao-lib waiting for it while holding
    // ao-lib) until the lock wait ran out.
    await publish('ao-alib', '1.0.0')
    await publish('ao-lib', '1.0.0', { 'ao-alib': '^1.0.0' })
    await publish('ao-app', '1.0.0', { 'ao-alib': '^1.0.0', 'ao-lib': '^1.0.0' })
    const d = device('own-lock')
    await installArtifact(d, { name: 'ao-app' })
    await publish('ao-alib', '1.1.0')
    await publish('ao-lib', '1.1.0', { 'ao-alib': '^1.1.0' })
    await publish('ao-app', '2.0.0', { 'ao-alib': '^1.1.0', 'ao-lib': '^1.1.0' })

    let lib: Promise<InstallResult> | null = null
    const app = await installArtifact(d, {
      name: 'ao-app',
      fullOnly: true,
      lockWaitMs: 10_000,
      fetchImpl: beforeBlob('ao-app', '2.0.0', async () => {
        await new Promise<void>((waits) => {
          lib = installArtifact(d, { name: 'ao-lib', lockWaitMs: 10_000, onLockWait: () => waits() })
          lib.then(
            () => waits(),
            () => waits(),
          )
        })
      }),
    })
    expect(app).toMatchObject({ version: '2.0.0', alreadyCurrent: false })
    expect(await (lib as Promise<InstallResult> | null)).toMatchObject({
      version: '1.1.0',
      alreadyCurrent: true,
      dependencies: [{ name: 'ao-alib', version: '1.1.0', changed: false }],
    })
    for (const [name, version] of [
      ['ao-app', '2.0.0'],
      ['ao-lib', '1.1.0'],
      ['ao-alib', '1.1.0'],
    ] as const)
      expect(await currentOf(d, name)).toBe(version)
  })
})

describe('a failed update beside another that needs the same new dependency', () => {
  it('does not delete the version the other update downloaded and is about to switch to', async () => {
    await publish('nd-lib', '1.0.0')
    await publish('nd-app-a', '1.0.0')
    await publish('nd-app-b', '1.0.0')
    const d = device('new-dependency')
    await installArtifact(d, { name: 'nd-app-a' })
    await installArtifact(d, { name: 'nd-app-b' })
    await publish('nd-app-a', '2.0.0', { 'nd-lib': '^1.0.0' })
    await publish('nd-app-b', '2.0.0', { 'nd-lib': '^1.0.0' })

    // B downloads and stages nd-lib (the device never had it); before B's own download, A's update
    // starts. It found nd-lib staged, reused it, failed on its own bytes and deleted it; now B holds
    // nd-lib's lock until its switch, so A waits for it, finds nd-lib current, and fails on its bytes.
    let a: Promise<AgentError> | null = null
    const b = await installArtifact(d, {
      name: 'nd-app-b',
      fullOnly: true,
      fetchImpl: beforeBlob('nd-app-b', '2.0.0', async () => {
        await new Promise<void>((waits) => {
          a = agentFailure(
            installArtifact(d, {
              name: 'nd-app-a',
              fullOnly: true,
              onLockWait: () => waits(),
              fetchImpl: corruptingBlob('nd-app-a', '2.0.0'),
            }),
          )
          void a.then(() => waits())
        })
      }),
    })
    expect((await (a as Promise<AgentError> | null))?.code).toBe('integrity-mismatch')
    // A's cleanup left B's nd-lib alone: B switched both.
    expect(b).toMatchObject({ version: '2.0.0' })
    expect(await currentOf(d, 'nd-lib')).toBe('1.0.0')
    expect(await currentOf(d, 'nd-app-a')).toBe('1.0.0')
  })

  it('the other way round (the one that downloaded it fails), the other waits, downloads it again and switches', async () => {
    await publish('nd2-lib', '1.0.0')
    await publish('nd2-app-a', '1.0.0')
    await publish('nd2-app-b', '1.0.0')
    const d = device('new-dependency-deleted')
    await installArtifact(d, { name: 'nd2-app-a' })
    await installArtifact(d, { name: 'nd2-app-b' })
    await publish('nd2-app-a', '2.0.0', { 'nd2-lib': '^1.0.0' })
    await publish('nd2-app-b', '2.0.0', { 'nd2-lib': '^1.0.0' })

    // A downloads and stages nd2-lib; before A's own download, B's update starts. It found nd2-lib
    // staged and reused it; A's bytes then failed to verify, A deleted the nd2-lib it downloaded, and
    // B's switch found it gone: busy, nothing switched (ADR 0027: once judged not worth closing). A
    // holds nd2-lib's lock until it ends now: B waits, and stages nd2-lib after A has discarded it.
    let b: Promise<InstallResult> | null = null
    const a = await agentFailure(
      installArtifact(d, {
        name: 'nd2-app-a',
        fullOnly: true,
        fetchImpl: beforeBlob(
          'nd2-app-a',
          '2.0.0',
          async () => {
            await new Promise<void>((waits) => {
              b = installArtifact(d, { name: 'nd2-app-b', fullOnly: true, onLockWait: () => waits() })
              b.catch(() => waits())
            })
          },
          corruptingBlob('nd2-app-a', '2.0.0'),
        ),
      }),
    )
    expect(a.code).toBe('integrity-mismatch')
    expect(await (b as Promise<InstallResult> | null)).toMatchObject({
      version: '2.0.0',
      alreadyCurrent: false,
    })
    expect(await currentOf(d, 'nd2-app-b')).toBe('2.0.0')
    expect(await currentOf(d, 'nd2-lib')).toBe('1.0.0')
    expect(await currentOf(d, 'nd2-app-a')).toBe('1.0.0')
  })
})

/**
 * fetch (through `inner`), running `before` once, just before the blob of `name@version` is requested.
 */
function beforeBlob(
  name: string,
  version: string,
  before: () => Promise<void>,
  inner: typeof fetch = fetch,
): typeof fetch {
  let ran = false
  return async (input, init) => {
    const url = input instanceof Request ? input.url : String(input)
    if (!ran && new URL(url).pathname.endsWith(`/v1/artifacts/${name}/${version}/blob`)) {
      ran = true
      await before()
    }
    return inner(input, init)
  }
}

const BIN = join(import.meta.dirname, '..', 'bin', 'deltaport.ts')
