import { spawnSync } from 'node:child_process'
import {
  mkdir,
  readdir,
  readFile,
  readlink,
  rename,
  rm,
  stat,
  symlink,
  utimes,
  writeFile,
} from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { hashFile } from '../download.ts'
import type { AgentError } from '../errors.ts'
import { type InstallResult, installArtifact, rollbackArtifact } from '../install.ts'
import { publishArtifact } from '../publish.ts'
import { generateKeyPair, signManifest } from '../signing.ts'
import { ArtifactStore } from '../store.ts'
import { RunFiles } from '../swap/run-files.ts'
import { uninstallArtifact } from '../uninstall.ts'
import { agentFailure, expectSameBytes, makeWorkspace, manifestFor, writeArtifact } from './fixtures.ts'
import { TEST_TOKEN, useEdgeWorkspace } from './local-edge.ts'

const suite = useEdgeWorkspace()

const publish = (file: string, name: string, version: string, extra: { expiresInDays?: number } = {}) =>
  suite.publish(file, name, version, extra)

describe('publish → install → update → rollback through a real edge', () => {
  it('installs, updates and rolls back with the previous version kept', async () => {
    const v1 = await writeArtifact(suite.ws.dir, 'app-1.bin', 300_000)
    const v2 = await writeArtifact(suite.ws.dir, 'app-2.bin', 310_000)
    expect((await publish(v1.path, 'app', '1.0.0')).serial).toBe(1)

    const first = await installArtifact(suite.ws.config, { name: 'app' })
    expect(first).toMatchObject({
      version: '1.0.0',
      method: 'full',
      bytesDownloaded: 300_000,
      previous: null,
    })
    const store = new ArtifactStore(suite.ws.config.installRoot, 'app')
    expectSameBytes(await readFile(join(store.currentLink, 'blob')), v1.bytes)

    expect((await publish(v2.path, 'app', '1.1.0')).serial).toBe(2)
    const second = await installArtifact(suite.ws.config, { name: 'app', target: 'stable' })
    expect(second).toMatchObject({ version: '1.1.0', previous: '1.0.0' })
    expectSameBytes(await readFile(join(store.currentLink, 'blob')), v2.bytes)
    expect(await installArtifact(suite.ws.config, { name: 'app' })).toMatchObject({
      alreadyCurrent: true,
      bytesDownloaded: 0,
      previous: '1.0.0',
    })

    expect(await rollbackArtifact(suite.ws.config, 'app')).toEqual({
      name: 'app',
      from: '1.1.0',
      to: '1.0.0',
    })
    expect(await readlink(store.currentLink)).toBe(join('versions', '1.0.0'))
    expectSameBytes(await readFile(join(store.currentLink, 'blob')), v1.bytes)
    expect((await store.state()).lastSerial).toBe(2)

    // A kill between the link switch and the state write (kill-resume found one): state.json says
    // 1.0.0 is current and 1.1.0 previous while the link already names 1.1.0 again. The link wins, so a
    // rollback goes to 1.0.0 instead of "back" to the version already running.
    const temp = `${store.currentLink}.interrupted`
    await symlink(join('versions', '1.1.0'), temp)
    await rename(temp, store.currentLink)
    expect(await store.state()).toMatchObject({ lastSerial: 2, current: '1.1.0', previous: '1.0.0' })
    expect((await store.rollback()).current).toBe('1.0.0')
    expectSameBytes(await readFile(join(store.currentLink, 'blob')), v1.bytes)
  })

  it('never switches to a version on disk whose bytes changed, and says when the previous one is gone', async () => {
    const v1 = await writeArtifact(suite.ws.dir, 'onfs-1.bin', 50_000)
    const v2 = await writeArtifact(suite.ws.dir, 'onfs-2.bin', 50_000)
    await publish(v1.path, 'onfs', '1.0.0')
    await publish(v2.path, 'onfs', '1.1.0')
    const config = { ...suite.ws.config, installRoot: join(suite.ws.dir, 'store-onfs') }
    await installArtifact(config, { name: 'onfs', target: '1.0.0' })
    await installArtifact(config, { name: 'onfs' })
    const store = new ArtifactStore(config.installRoot, 'onfs')

    // Four bytes of the previous version overwritten on disk: rollback refuses and switches nothing.
    const damaged = await readFile(store.blobPath('1.0.0'))
    damaged.set([1, 2, 3, 4], 100)
    await writeFile(store.blobPath('1.0.0'), damaged)
    const refused = await agentFailure(rollbackArtifact(config, 'onfs'))
    expect(refused.code).toBe('integrity-mismatch')
    expect(refused.message).toContain('onfs@1.0.0 on disk no longer has the bytes its signed manifest names')
    expect((await store.state()).current).toBe('1.1.0')

    // Installing that version fetches it again instead of switching to the damaged copy.
    const reinstalled = await installArtifact(config, { name: 'onfs', target: '1.0.0', allowDowngrade: true })
    expect(reinstalled.method).not.toBe('local')
    expectSameBytes(await readFile(store.blobPath('1.0.0')), v1.bytes)

    // The previous version removed by hand: a typed failure, not a "rollback" to the same version.
    await installArtifact(config, { name: 'onfs' })
    await rm(store.versionDir('1.0.0'), { recursive: true })
    const gone = await agentFailure(rollbackArtifact(config, 'onfs'))
    expect(gone.code).toBe('not-found')
    expect(gone.message).toBe(
      `onfs's previous version 1.0.0 is no longer installed: install it with "deltaport install onfs@1.0.0 --allow-downgrade"`,
    )
    expect((await store.state()).current).toBe('1.1.0')
    // The advice works as given: an older version than the current one needs --allow-downgrade.
    const refusedOlder = await agentFailure(installArtifact(config, { name: 'onfs', target: '1.0.0' }))
    expect(refusedOlder.code).toBe('untrusted-manifest')
    expect(
      await installArtifact(config, { name: 'onfs', target: '1.0.0', allowDowngrade: true }),
    ).toMatchObject({ version: '1.0.0' })
  })

  it('refuses a manifest whose signed fields were tampered with at the edge', async () => {
    const art = await writeArtifact(suite.ws.dir, 'tamper.bin', 1000)
    const evil = await writeArtifact(suite.ws.dir, 'evil.bin', 1000)
    const honest = await signManifest(
      manifestFor({
        name: 'tamper',
        version: '1.0.0',
        size: 1000,
        sha256: await hashFile(art.path),
        serial: 1,
      }),
      suite.ws.key,
    )
    // An attacker with edge access swaps in other bytes and edits the manifest to match them.
    const tampered = { ...honest, signed: { ...honest.signed, sha256: await hashFile(evil.path) } }
    const auth = { authorization: `Bearer ${TEST_TOKEN}` }
    const staged = await fetch(`${suite.edge.url}/v1/publish/tamper/1.0.0`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify(tampered),
    })
    expect(staged.status).toBe(201)
    const put = await fetch(`${suite.edge.url}/v1/publish/tamper/1.0.0/blob`, {
      method: 'PUT',
      headers: auth,
      body: evil.bytes,
    })
    expect(put.status).toBe(201)

    const error = await agentFailure(installArtifact(suite.ws.config, { name: 'tamper' }))
    expect(error.code).toBe('untrusted-manifest')
    expect(await new ArtifactStore(suite.ws.config.installRoot, 'tamper').installedVersions()).toEqual([])
  })

  it('refuses manifests signed by an unpinned key', async () => {
    const stranger = await generateKeyPair()
    const other = await makeWorkspace(suite.edge.url)
    await writeFile(other.keyFile, JSON.stringify(stranger))
    const art = await writeArtifact(suite.ws.dir, 'stranger.bin', 500)
    await publishArtifact({
      edgeUrl: suite.edge.url,
      token: TEST_TOKEN,
      keyFile: other.keyFile,
      file: art.path,
      name: 'stranger',
      version: '1.0.0',
    })
    expect((await agentFailure(installArtifact(suite.ws.config, { name: 'stranger' }))).code).toBe(
      'untrusted-manifest',
    )
  })

  it('refuses a rolled-back serial and an expired manifest', async () => {
    const a = await writeArtifact(suite.ws.dir, 'rb-1.bin', 2000)
    const b = await writeArtifact(suite.ws.dir, 'rb-2.bin', 2000)
    await publish(a.path, 'rb', '1.0.0')
    await publish(b.path, 'rb', '2.0.0')
    await installArtifact(suite.ws.config, { name: 'rb', target: '2.0.0' })
    const error = await agentFailure(installArtifact(suite.ws.config, { name: 'rb', target: '1.0.0' }))
    expect(error.code).toBe('untrusted-manifest')
    expect(error.message).toContain('rollback refused')
    // A deliberate pin may go back; a channel head never may.
    expect(
      await installArtifact(suite.ws.config, { name: 'rb', target: '1.0.0', allowDowngrade: true }),
    ).toMatchObject({ version: '1.0.0' })

    const expired = await agentFailure(
      installArtifact(suite.ws.config, {
        name: 'rb',
        target: '2.0.0',
        now: new Date(Date.now() + 91 * 86_400_000),
      }),
    )
    expect(expired.message).toContain('expired')
  })

  it('installs an empty artifact and updates from it', async () => {
    const empty = join(suite.ws.dir, 'empty.bin')
    await writeFile(empty, '')
    await publish(empty, 'empty', '1.0.0')
    expect(await installArtifact(suite.ws.config, { name: 'empty' })).toMatchObject({
      method: 'full',
      bytesDownloaded: 0,
      size: 0,
    })
    const store = new ArtifactStore(suite.ws.config.installRoot, 'empty')
    expect((await readFile(join(store.currentLink, 'blob'))).length).toBe(0)
    const next = await writeArtifact(suite.ws.dir, 'empty-next.bin', 3_000)
    await publish(next.path, 'empty', '1.0.1')
    expect(await installArtifact(suite.ws.config, { name: 'empty' })).toMatchObject({ version: '1.0.1' })
    expectSameBytes(await readFile(join(store.currentLink, 'blob')), next.bytes)
  })

  it('resumes an interrupted download and verifies the result', async () => {
    const big = await writeArtifact(suite.ws.dir, 'big.bin', 4 * 1024 * 1024)
    await publish(big.path, 'resumable', '1.0.0')
    const abort = new AbortController()
    const interrupted = installArtifact(suite.ws.config, {
      name: 'resumable',
      signal: abort.signal,
      onProgress: (p) => {
        if (p.received > 1024 * 1024) abort.abort()
      },
    })
    await expect(interrupted).rejects.toThrow()
    const store = new ArtifactStore(suite.ws.config.installRoot, 'resumable')
    const partialSize = (await stat(store.partialPath('1.0.0'))).size
    expect(partialSize).toBeGreaterThan(1024 * 1024)
    expect(partialSize).toBeLessThan(big.bytes.length)
    expect((await store.state()).current).toBeNull()

    const resumed = await installArtifact(suite.ws.config, { name: 'resumable' })
    expect(resumed.resumedFrom).toBe(partialSize)
    expect(resumed.bytesDownloaded).toBe(big.bytes.length - partialSize)
    expectSameBytes(await readFile(join(store.currentLink, 'blob')), big.bytes)
  })

  it('clears the work files killed or abandoned updates left in partial/, keeping a newer download', async () => {
    const v1 = await writeArtifact(suite.ws.dir, 'litter-1.bin', 50_000)
    const v2 = await writeArtifact(suite.ws.dir, 'litter-2.bin', 50_000)
    await publish(v1.path, 'litter', '1.0.0')
    await installArtifact(suite.ws.config, { name: 'litter' })
    await publish(v2.path, 'litter', '1.1.0')
    const store = new ArtifactStore(suite.ws.config.installRoot, 'litter')
    const partial = join(store.dir, 'partial')
    const anHourAgo = new Date(Date.now() - 3_600_000)
    // What kill -9 leaves: a rebuild's open temp output, a delta payload and its journal, a chain's
    // intermediate output; and a full download of a version the channel has since moved past.
    const litter = {
      '.1.1.0.rebuilt.0123456789ab.tmp': 'half rebuilt',
      '1.0.0-1.0.5.vcdiff.delta': 'payload',
      '1.0.0-1.0.5.vcdiff.delta.journal': '{}',
      '1.0.5.rebuilt': 'intermediate',
      '1.0.9.part': 'abandoned download',
      // A download of a release newer than what gets installed stays resumable.
      '2.0.0.part': 'still wanted',
    }
    for (const [file, text] of Object.entries(litter)) {
      await writeFile(join(partial, file), text)
      await utimes(join(partial, file), anHourAgo, anHourAgo)
    }
    expect(await installArtifact(suite.ws.config, { name: 'litter' })).toMatchObject({ version: '1.1.0' })
    expect(await readdir(partial)).toEqual(['2.0.0.part'])
  })

  it('runs one install of an artifact at a time: a second waits and finds it done', async () => {
    const art = await writeArtifact(suite.ws.dir, 'shared.bin', 2 * 1024 * 1024)
    await publish(art.path, 'shared', '1.0.0')
    let second: Promise<InstallResult> | undefined
    let busy: Promise<AgentError> | undefined
    const waitedFor: string[] = []
    const first = installArtifact(suite.ws.config, {
      name: 'shared',
      onProgress: () => {
        // Started while the first one is downloading into the shared partial file.
        second ??= installArtifact(suite.ws.config, {
          name: 'shared',
          onLockWait: (holder) => waitedFor.push(holder),
        })
        busy ??= agentFailure(installArtifact(suite.ws.config, { name: 'shared', lockWaitMs: 0 }))
      },
    })
    expect(await first).toMatchObject({ method: 'full', bytesDownloaded: art.bytes.length })
    expect(await second).toMatchObject({ method: 'local', alreadyCurrent: true, bytesDownloaded: 0 })
    expect(waitedFor).toEqual([expect.stringContaining(`pid ${process.pid}`)])
    expect((await busy)?.code).toBe('busy')
    const store = new ArtifactStore(suite.ws.config.installRoot, 'shared')
    expectSameBytes(await readFile(join(store.currentLink, 'blob')), art.bytes)
    await expect(stat(join(store.dir, 'lock'))).rejects.toThrow()
  })

  it('deletes versions beyond keepVersions after a switch, sparing what rollback and a service need', async () => {
    const store = new ArtifactStore(suite.ws.config.installRoot, 'kept')
    const runFiles = new RunFiles(join(store.dir, 'run'))
    await mkdir(runFiles.dir, { recursive: true })
    const installed: InstallResult[] = []
    for (const version of ['1.0.0', '1.1.0', '1.2.0', '1.3.0']) {
      const art = await writeArtifact(suite.ws.dir, `kept-${version}.bin`, 5_000)
      await publish(art.path, 'kept', version)
      installed.push(await installArtifact(suite.ws.config, { name: 'kept', fullOnly: true }))
      // `deltaport run` still serves 1.0.0 while 1.2.0 goes in.
      if (version === '1.1.0') await runFiles.recordChildren([4242], ['1.0.0'])
      if (version === '1.2.0') await runFiles.recordChildren([], [])
    }
    expect(installed.map((r) => r.pruned)).toEqual([[], [], [], ['1.1.0', '1.0.0']])
    expect((await store.installedVersions()).sort()).toEqual(['1.2.0', '1.3.0'])
    expect(await rollbackArtifact(suite.ws.config, 'kept')).toMatchObject({ to: '1.2.0' })
    // Going back to a deleted version downloads it again.
    const again = await installArtifact(suite.ws.config, {
      name: 'kept',
      target: '1.0.0',
      allowDowngrade: true,
    })
    expect(again).toMatchObject({ method: 'full', pruned: ['1.3.0'] })

    const roomy = { ...suite.ws.config, keepVersions: 3 }
    const art = await writeArtifact(suite.ws.dir, 'kept-2.0.0.bin', 5_000)
    await publish(art.path, 'kept', '2.0.0')
    expect(await installArtifact(roomy, { name: 'kept' })).toMatchObject({ pruned: [] })
    expect((await store.installedVersions()).sort()).toEqual(['1.0.0', '1.2.0', '2.0.0'])
  })

  it('throws away a resumed partial that does not verify and downloads again from byte 0, once', async () => {
    const art = await writeArtifact(suite.ws.dir, 'corrupt.bin', 100_000)
    await publish(art.path, 'corrupt', '1.0.0')
    const store = new ArtifactStore(suite.ws.config.installRoot, 'corrupt')
    await store.prepare()
    // Garbage left by a crashed earlier run: the resumed bytes no longer hash right.
    await writeFile(store.partialPath('1.0.0'), Buffer.alloc(50_000, 7))
    const installed = await installArtifact(suite.ws.config, { name: 'corrupt' })
    expect(installed).toMatchObject({ method: 'full', resumedFrom: 0, bytesDownloaded: 150_000 })
    expect(installed.fallbacks).toEqual([
      'resume: the 50000 bytes kept from an earlier download did not verify; downloaded again from byte 0',
    ])
    expectSameBytes(await readFile(join(store.currentLink, 'blob')), art.bytes)

    // Bytes that do not verify on a fresh download are the edge's: reported at once, nothing kept.
    await uninstallArtifact(suite.ws.config, { name: 'corrupt' })
    const flipping: typeof fetch = async (input, init) => {
      const response = await fetch(input, init)
      if (!String(input).endsWith('/blob')) return response
      const bytes = new Uint8Array(await response.arrayBuffer())
      bytes[10] = (bytes[10] ?? 0) ^ 1
      return new Response(bytes, { status: response.status, headers: response.headers })
    }
    let blobRequests = 0
    const counting: typeof fetch = (input, init) => {
      if (String(input).endsWith('/blob')) blobRequests += 1
      return flipping(input, init)
    }
    const error = await agentFailure(
      installArtifact(suite.ws.config, { name: 'corrupt', fetchImpl: counting }),
    )
    expect(error.code).toBe('integrity-mismatch')
    expect(blobRequests).toBe(1)
    await expect(stat(store.partialPath('1.0.0'))).rejects.toThrow()
  })

  it('starts over when the partial download is a folder; names one it cannot remove', async () => {
    const art = await writeArtifact(suite.ws.dir, 'partdir.bin', 20_000)
    await publish(art.path, 'partdir', '1.0.0')
    const config = { ...suite.ws.config, installRoot: join(suite.ws.dir, 'store-partdir') }
    const store = new ArtifactStore(config.installRoot, 'partdir')
    const partial = store.partialPath('1.0.0')
    await mkdir(join(partial, 'inside'), { recursive: true })
    expect(await installArtifact(config, { name: 'partdir' })).toMatchObject({
      method: 'full',
      resumedFrom: 0,
      bytesDownloaded: 20_000,
    })
    expectSameBytes(await readFile(join(store.currentLink, 'blob')), art.bytes)

    // A mount point inside it cannot be removed by anyone (root only can make one: skipped otherwise).
    await uninstallArtifact(config, { name: 'partdir' })
    await mkdir(join(partial, 'mnt'), { recursive: true })
    if (process.getuid?.() !== 0 || spawnSync('mount', ['-t', 'tmpfs', 'tmpfs', join(partial, 'mnt')]).status)
      return
    try {
      const error = await agentFailure(installArtifact(config, { name: 'partdir' }))
      expect(error).toMatchObject({ code: 'io', exitCode: 10, details: { path: partial } })
      expect(error.message).toContain(`the partial download ${partial} cannot be resumed`)
    } finally {
      spawnSync('umount', [join(partial, 'mnt')])
    }
  })

  it('refuses an update that would leave less than minFreeBytes free, before writing anything', async () => {
    const config = { ...suite.ws.config, installRoot: join(suite.ws.dir, 'store-full-disk') }
    const v1 = await writeArtifact(suite.ws.dir, 'roomy-1.bin', 50_000)
    const v2 = await writeArtifact(suite.ws.dir, 'roomy-2.bin', 60_000)
    await publish(v1.path, 'roomy', '1.0.0')
    await installArtifact(config, { name: 'roomy' })
    await publish(v2.path, 'roomy', '1.1.0')

    // A floor above what any disk here has free: the real statfs says no.
    const full = { ...config, minFreeBytes: 2 ** 52 }
    const error = await agentFailure(installArtifact(full, { name: 'roomy' }))
    expect(error.code).toBe('no-space')
    expect(error.exitCode).toBe(13)
    expect(error.message).toContain('installing roomy@1.1.0 needs 58.6 KiB')
    const store = new ArtifactStore(config.installRoot, 'roomy')
    expect((await store.state()).current).toBe('1.0.0')
    expect(await store.installedVersions()).toEqual(['1.0.0'])
    await expect(stat(store.partialPath('1.1.0'))).rejects.toThrow()

    expect(await installArtifact(config, { name: 'roomy' })).toMatchObject({ version: '1.1.0' })
  })
})
