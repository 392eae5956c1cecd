import { mkdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { AgentConfig } from '../config.ts'
import { writeFileAtomic } from '../fs/atomic.ts'
import { installArtifact, rollbackArtifact } from '../install.ts'
import { ArtifactStore } from '../store.ts'
import { uninstallArtifact } from '../uninstall.ts'
import { agentFailure, writeArtifact } from './fixtures.ts'
import { useEdgeWorkspace } from './local-edge.ts'
import { fillDisk, mountTmpfs } from './tmpfs.ts'

/**
 * A real full disk: a 4 MiB tmpfs, which only root can mount (the test is skipped otherwise; CI
 * containers usually run as root). No fault injection: ENOSPC comes from the kernel.
 */
const { mountPoint, mounted, remove } = await mountTmpfs('deltaport-full-disk-')

describe.skipIf(!mounted)('a full disk (tmpfs)', () => {
  const suite = useEdgeWorkspace()
  let device: AgentConfig
  let store: ArtifactStore

  beforeAll(async () => {
    for (const version of ['1.0.0', '1.1.0', '1.2.0']) {
      const art = await writeArtifact(suite.ws.dir, `full-${version}.bin`, 300_000)
      await suite.publish(art.path, 'full', version)
    }
    device = { ...suite.ws.config, installRoot: join(mountPoint, 'store'), minFreeBytes: 0 }
    await mkdir(device.installRoot)
    await installArtifact(device, { name: 'full', target: '1.0.0' })
    await installArtifact(device, { name: 'full', target: '1.1.0' })
    store = new ArtifactStore(device.installRoot, 'full')
    await fillDisk(mountPoint)
  })
  afterAll(remove)

  it('is no-space (exit 13) naming the file a write failed on', async () => {
    const target = join(mountPoint, 'settings.json')
    const error = await agentFailure(writeFileAtomic(target, JSON.stringify({ some: 'state' })))
    expect(error).toMatchObject({ code: 'no-space', exitCode: 13, details: { path: target } })
    expect(error.message).toContain(`cannot write ${target}: no space left on device; free space`)
  })

  it('refuses an update before writing anything, naming the disk, and keeps the running version', async () => {
    const error = await agentFailure(installArtifact(device, { name: 'full', target: '1.2.0' }))
    expect(error).toMatchObject({ code: 'no-space', exitCode: 13 })
    expect(error.message).toContain(store.dir)
    expect((await store.state()).current).toBe('1.1.0')
  })

  it('still rolls back: the lock and the switch need no data blocks', async () => {
    expect(await rollbackArtifact(device, 'full')).toEqual({ name: 'full', from: '1.1.0', to: '1.0.0' })
    expect(await store.state()).toMatchObject({ current: '1.0.0', previous: '1.1.0' })
  })

  it('still uninstalls, which frees the disk, and then records the serial high-water mark', async () => {
    const result = await uninstallArtifact(device, { name: 'full' })
    expect(result.removed[0]?.versions.sort()).toEqual(['1.0.0', '1.1.0'])
    const state = JSON.parse(await readFile(join(store.dir, 'state.json'), 'utf8'))
    expect(state).toMatchObject({ current: null, previous: null, lastSerial: 2 })
  })
})
