import { spawnSync } from 'node:child_process'
import { chmod, lutimes, mkdir, readdir, rm, symlink, utimes, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { hashFile } from '../download.ts'
import { generateKeyPair, type KeyPairFiles, signManifest } from '../signing.ts'
import { ArtifactStore } from '../store.ts'
import type { MaintainerTrust } from '../trust.ts'
import { agentFailure, makeWorkspace, manifestFor, writeArtifact } from './fixtures.ts'

/**
 * Installs `version` with `serial` the way install does: commit the verified blob, switch `current`
 * (under `trust` when given, signed by `signers`: by default one fresh key).
 */
async function install(
  store: ArtifactStore,
  dir: string,
  version: string,
  serial: number,
  how: { signers?: KeyPairFiles[]; trust?: MaintainerTrust } = {},
): Promise<void> {
  const blob = await writeArtifact(dir, `blob-${version}`, 100)
  const manifest = manifestFor({ name: 'app', version, size: 100, sha256: await hashFile(blob.path), serial })
  const envelope = await signManifest(manifest, how.signers ?? (await generateKeyPair()))
  await store.prepare()
  await store.commitVersion(blob.path, envelope)
  await store.activate(manifest, how.trust ? { trust: how.trust } : {})
}

const trustIn = (keys: KeyPairFiles[], threshold = 1): MaintainerTrust => ({
  trustedKeys: keys.map((k) => ({ keyid: k.keyid, publicKey: k.publicKey })),
  maintainerThreshold: threshold,
})

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

describe('ArtifactStore serial floor (ADR 0037)', () => {
  it('holds the floor under the keys that raised it, even after its version is gone', async () => {
    const ws = await makeWorkspace('http://127.0.0.1:9')
    const store = new ArtifactStore(ws.config.installRoot, 'app')
    const [a, b] = await Promise.all([generateKeyPair(), generateKeyPair()])
    await install(store, ws.dir, '1.0.0', 3, { signers: [a], trust: trustIn([a]) })
    await install(store, ws.dir, '2.0.0', 9, { signers: [a], trust: trustIn([a]) })
    await store.rollback()
    expect(await store.prune(0)).toEqual([])
    await rm(store.versionDir('2.0.0'), { recursive: true })
    // Nothing installed says 9 any more; the recorded mark does, under the same keys (in any order).
    expect(await store.serialFloor(trustIn([a]))).toBe(9)
    expect(
      await store.serialFloor({ trustedKeys: [...trustIn([a]).trustedKeys, ...trustIn([a]).trustedKeys] }),
    ).toBe(9)
    // Other keys, or the same keys with a higher threshold, accept only what they would have signed off.
    expect(await store.serialFloor(trustIn([b]))).toBe(0)
    expect(await store.serialFloor(trustIn([a, b]))).toBe(3)
    expect(await store.serialFloor(trustIn([a, b], 2))).toBe(0)
  })

  it('rebuilds the floor under the trusted keys when state.json names none (lost, or from before)', async () => {
    const ws = await makeWorkspace('http://127.0.0.1:9')
    const store = new ArtifactStore(ws.config.installRoot, 'app')
    const [a, stolen] = await Promise.all([generateKeyPair(), generateKeyPair()])
    await install(store, ws.dir, '1.0.0', 4, { signers: [a] })
    await install(store, ws.dir, '9.9.9', 2 ** 40, { signers: [stolen] })
    expect((await store.state()).serialTrust).toBeUndefined()
    expect(await store.serialFloor(trustIn([a]))).toBe(4)
    expect(await store.serialFloor(trustIn([a, stolen]))).toBe(2 ** 40)

    // The next switch under `a` records the rebuilt floor with a's fingerprint.
    await install(store, ws.dir, '1.1.0', 5, { signers: [a], trust: trustIn([a]) })
    expect(await store.state()).toMatchObject({
      lastSerial: 5,
      current: '1.1.0',
      serialTrust: expect.any(String),
    })
    await rm(join(store.dir, 'state.json'))
    expect(await store.serialFloor(trustIn([a]))).toBe(5)
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
    // A killed update's rebuild output, which no later update resumes.
    const rebuilt = join(store.dir, 'partial', '.1.1.0.rebuilt.00112233aabb.tmp')
    await writeFile(rebuilt, 'half rebuilt')
    await utimes(rebuilt, anHourAgo, anHourAgo)
    const fresh = join(versions, '.0.8.0.fedcba987654.tmp')
    await mkdir(fresh)

    expect(await store.withLock({ timeoutMs: 0 }, async () => readdir(versions))).not.toContain(
      '.0.9.0.0123456789ab.tmp',
    )
    expect((await readdir(versions)).sort()).toEqual(['.0.8.0.fedcba987654.tmp', '1.0.0'])
    expect((await readdir(store.dir)).sort()).toEqual(['current', 'partial', 'state.json', 'versions'])
    expect(await readdir(join(store.dir, 'partial'))).toEqual([])
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

  it('reports something put in the way of `current` as io (exit 10), naming it, with nothing of the switch left', async () => {
    const ws = await makeWorkspace('http://127.0.0.1:9')
    const store = new ArtifactStore(ws.config.installRoot, 'app')
    await install(store, ws.dir, '1.0.0', 1)
    await install(store, ws.dir, '1.1.0', 2)
    const before = await store.state()
    // A folder where the link was (moved by hand, a backup restored over it): no rename can replace it.
    await rm(store.currentLink)
    await mkdir(join(store.currentLink, 'in-the-way'), { recursive: true })
    const entries = (await readdir(store.dir)).sort()

    const manifest = (await store.manifestOf('1.0.0')).signed
    for (const attempt of [() => store.activate(manifest), () => store.rollback()]) {
      const failed = await agentFailure(attempt())
      expect(failed.code).toBe('io')
      expect(failed.exitCode).toBe(10)
      expect(failed.message).toContain(`cannot switch app to 1.0.0: ${store.currentLink} is a directory`)
      expect(failed.details).toMatchObject({ path: store.currentLink, errno: 'EISDIR' })
      // No temp link beside it, state.json as it was.
      expect((await readdir(store.dir)).sort()).toEqual(entries)
      expect(await store.state()).toEqual(before)
    }
  })
})
