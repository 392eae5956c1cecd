import { spawnSync } from 'node:child_process'
import { chmod, lutimes, mkdir, readdir, rm, symlink, utimes, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { hashFile } from '../download.ts'
import { generateKeyPair, signManifest } from '../signing.ts'
import { ArtifactStore } from '../store.ts'
import { makeWorkspace, manifestFor, writeArtifact } from './fixtures.ts'

/** Installs `version` with `serial` the way install does: commit the verified blob, switch `current`. */
async function install(store: ArtifactStore, dir: string, version: string, serial: number): Promise<void> {
  const blob = await writeArtifact(dir, `blob-${version}`, 100)
  const manifest = manifestFor({ name: 'app', version, size: 100, sha256: await hashFile(blob.path), serial })
  const envelope = await signManifest(manifest, await generateKeyPair())
  await store.prepare()
  await store.commitVersion(blob.path, envelope)
  await store.activate(manifest)
}

describe('ArtifactStore state', () => {
  it('starts empty when nothing was installed yet', async () => {
    const ws = await makeWorkspace('http://127.0.0.1:9')
    const store = new ArtifactStore(ws.config.installRoot, 'app')
    expect(await store.state()).toEqual({ lastSerial: 0, current: null, previous: null })
    expect(await store.installedVersions()).toEqual([])
  })

  it('keeps rollback protection when state.json is lost or garbled', async () => {
    const ws = await makeWorkspace('http://127.0.0.1:9')
    const store = new ArtifactStore(ws.config.installRoot, 'app')
    await install(store, ws.dir, '1.0.0', 4)
    await install(store, ws.dir, '1.1.0', 7)
    expect(await store.state()).toEqual({ lastSerial: 7, current: '1.1.0', previous: '1.0.0' })

    // Restarting the high-water mark at 0 would let a replayed serial-5 manifest in; the installed
    // manifests still say 7 was accepted.
    const stateFile = join(store.dir, 'state.json')
    await writeFile(stateFile, '{"lastSerial": ')
    expect(await store.state()).toEqual({ lastSerial: 7, current: '1.1.0', previous: null })
    await writeFile(stateFile, JSON.stringify({ lastSerial: -1, current: '1.1.0', previous: null }))
    expect((await store.state()).lastSerial).toBe(7)
    await rm(stateFile)
    expect((await store.state()).lastSerial).toBe(7)
  })

  it('reports a store root it cannot read instead of calling it empty', async () => {
    const ws = await makeWorkspace('http://127.0.0.1:9')
    const root = join(ws.dir, 'a-file')
    await writeFile(root, 'not a directory')
    const store = new ArtifactStore(root, 'app')
    await expect(store.state()).rejects.toMatchObject({ code: 'ENOTDIR' })
    await expect(store.installedVersions()).rejects.toMatchObject({ code: 'ENOTDIR' })
  })
})

describe('ArtifactStore prune', () => {
  it('keeps current, previous and the newest releases up to the limit, and what a service runs', async () => {
    const ws = await makeWorkspace('http://127.0.0.1:9')
    const store = new ArtifactStore(ws.config.installRoot, 'app')
    // Installed out of release order: 1.3.0 (serial 4) went in before 1.2.0 (serial 3).
    for (const [version, serial] of [
      ['1.0.0', 1],
      ['1.1.0', 2],
      ['1.3.0', 4],
      ['1.2.0', 3],
      ['1.4.0', 5],
    ] as const)
      await install(store, ws.dir, version, serial)
    await store.rollback() // current 1.2.0, previous 1.4.0
    expect(await store.prune(3, ['1.0.0'])).toEqual(['1.1.0'])
    expect((await store.installedVersions()).sort()).toEqual(['1.0.0', '1.2.0', '1.3.0', '1.4.0'])
    expect(await store.prune(2)).toEqual(['1.3.0', '1.0.0'])
    expect((await store.installedVersions()).sort()).toEqual(['1.2.0', '1.4.0'])
    expect((await store.rollback()).current).toBe('1.4.0')
  })

  it('sweeps version folders a crash left half deleted or half committed', async () => {
    const ws = await makeWorkspace('http://127.0.0.1:9')
    const store = new ArtifactStore(ws.config.installRoot, 'app')
    await install(store, ws.dir, '1.0.0', 1)
    const versions = join(store.dir, 'versions')
    await mkdir(join(versions, '.0.9.0.0123456789ab.tmp'))
    await writeFile(join(versions, '.0.9.0.0123456789ab.tmp', 'blob'), 'half')
    expect(await store.installedVersions()).toEqual(['1.0.0'])
    expect(await store.prune(2)).toEqual([])
    expect(await readdir(versions)).toEqual(['1.0.0'])
  })
})

describe('ArtifactStore leftovers', () => {
  it('sweeps what an earlier lock holder left, when the next command takes the lock; never a live version', async () => {
    const ws = await makeWorkspace('http://127.0.0.1:9')
    const store = new ArtifactStore(ws.config.installRoot, 'app')
    await install(store, ws.dir, '1.0.0', 1)
    const versions = join(store.dir, 'versions')
    const anHourAgo = new Date(Date.now() - 3_600_000)
    // A version folder renamed aside whose delete failed, and a temp state file and link, all older
    // than this process; and one made after it started (the current holder's own work) that stays.
    const aside = join(versions, '.0.9.0.0123456789ab.tmp')
    await mkdir(aside)
    await writeFile(join(aside, 'blob'), 'half deleted')
    await utimes(aside, anHourAgo, anHourAgo)
    await writeFile(join(store.dir, '.state.json.00112233aabb.tmp'), '{')
    await utimes(join(store.dir, '.state.json.00112233aabb.tmp'), anHourAgo, anHourAgo)
    await symlink('versions/1.0.0', join(store.dir, '.current.00112233aabb.tmp'))
    await lutimes(join(store.dir, '.current.00112233aabb.tmp'), anHourAgo, anHourAgo)
    const fresh = join(versions, '.0.8.0.fedcba987654.tmp')
    await mkdir(fresh)

    expect(await store.withLock({ timeoutMs: 0 }, async () => readdir(versions))).not.toContain(
      '.0.9.0.0123456789ab.tmp',
    )
    expect((await readdir(versions)).sort()).toEqual(['.0.8.0.fedcba987654.tmp', '1.0.0'])
    expect((await readdir(store.dir)).sort()).toEqual(['current', 'partial', 'state.json', 'versions'])
    expect(await store.state()).toMatchObject({ current: '1.0.0' })
    expect(await hashFile(store.blobPath('1.0.0'))).toMatch(/^[0-9a-f]{64}$/)
  })

  it('uninstalls a version folder made read-only, leaving no temp folder behind', async () => {
    const ws = await makeWorkspace('http://127.0.0.1:9')
    const store = new ArtifactStore(ws.config.installRoot, 'app')
    await install(store, ws.dir, '1.0.0', 1)
    await chmod(store.versionDir('1.0.0'), 0o555)
    // Root ignores file modes: the uninstall then runs as root without the capabilities that override
    // them (a user switch would also need the checkout readable by that user, which a CI clone is not).
    const asRoot = process.getuid?.() === 0
    const script = `const { ArtifactStore } = await import(${JSON.stringify(join(import.meta.dirname, '..', 'store.ts'))})
      await new ArtifactStore(${JSON.stringify(ws.config.installRoot)}, 'app').uninstall()`
    const node = [process.execPath, '--input-type=module', '-e', script]
    const [command, ...args] = asRoot
      ? ['setpriv', '--bounding-set=-dac_override,-dac_read_search,-fowner', '--', ...node]
      : node
    const child = spawnSync(command as string, args, { encoding: 'utf8' })
    expect(child.stderr).toBe('')
    expect(child.status).toBe(0)
    expect(await readdir(store.dir)).not.toContain('versions')
    expect(await store.state()).toMatchObject({ current: null, lastSerial: 1 })
  })
})
