import { chmod, readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { installArtifact } from '../install.ts'
import { ArtifactStore } from '../store.ts'
import { expectSameBytes, writeArtifact } from './fixtures.ts'
import { useEdgeWorkspace } from './local-edge.ts'

const suite = useEdgeWorkspace()

describe('install of the version already current, whose bytes on disk changed', () => {
  it('re-hashes it when the owner names the version, and installs it again in place', async () => {
    const v1 = await writeArtifact(suite.ws.dir, 'rot-1.bin', 300_000)
    await suite.publish(v1.path, 'rot', '1.0.0')
    const config = suite.ws.config
    await installArtifact(config, { name: 'rot', target: '1.0.0' })
    const store = new ArtifactStore(config.installRoot, 'rot')
    const blob = store.blobPath('1.0.0')
    // Bit rot (or a hand edit) of the running version's blob.
    const damaged = Buffer.from(v1.bytes)
    damaged[1000] = (damaged[1000] ?? 0) ^ 0xff
    await chmod(blob, 0o644)
    await writeFile(blob, damaged)
    const folder = await stat(store.versionDir('1.0.0'))

    // Following the channel stays cheap: nothing is re-hashed, as before.
    expect(await installArtifact(config, { name: 'rot' })).toMatchObject({ alreadyCurrent: true })
    // Naming the version is the way to repair it.
    const repaired = await installArtifact(config, { name: 'rot', target: '1.0.0' })
    expect(repaired).toMatchObject({ version: '1.0.0', alreadyCurrent: false, previous: null })
    expect(repaired.bytesDownloaded).toBeGreaterThan(0)
    expectSameBytes(await readFile(join(store.currentLink, 'blob')), v1.bytes)
    // Replaced inside the folder `current` names: the folder itself was never removed.
    expect((await stat(store.versionDir('1.0.0'))).ino).toBe(folder.ino)
    expect(await store.state()).toMatchObject({ current: '1.0.0', previous: null })
    // Intact now: naming it again is already current.
    expect(await installArtifact(config, { name: 'rot', target: '1.0.0' })).toMatchObject({
      alreadyCurrent: true,
    })
  })
})
