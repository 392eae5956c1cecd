import { spawnSync } from 'node:child_process'
import { mkdir, mkdtemp, open, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { runDaemonCycle } from '../daemon/daemon.ts'
import { StagingArea } from '../daemon/staging.ts'
import { installArtifact } from '../install.ts'
import { uninstallArtifact } from '../uninstall.ts'
import { writeArtifact } from './fixtures.ts'
import { useEdgeWorkspace } from './local-edge.ts'

/**
 * The daemon on a disk that filled up while it ran: a real 4 MiB tmpfs (root only; skipped
 * otherwise), ENOSPC from the kernel. The staging index only records LRU times (the directories are
 * the truth), so a write of it that finds no room must not fail the cycle.
 */
const mountPoint = await mkdtemp(join(tmpdir(), 'deltaport-daemon-full-'))
const mounted =
  process.platform === 'linux' &&
  process.getuid?.() === 0 &&
  spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', mountPoint]).status === 0

async function fillDisk(dir: string): Promise<void> {
  const file = await open(join(dir, 'filler'), 'a')
  const chunk = Buffer.alloc(64 * 1024, 1)
  try {
    for (;;) await file.write(chunk)
  } catch (error) {
    expect((error as NodeJS.ErrnoException).code).toBe('ENOSPC')
  } finally {
    await file.close()
  }
}

describe.skipIf(!mounted)('the daemon on a disk that filled up while it ran (tmpfs)', () => {
  const suite = useEdgeWorkspace()
  afterAll(() => {
    if (mounted) spawnSync('umount', ['-l', mountPoint])
    return rm(mountPoint, { recursive: true, force: true })
  })

  it('keeps cycling: what is staged stays usable, nothing more is fetched, no index write fails it', async () => {
    const device = { ...suite.ws.config, installRoot: join(mountPoint, 'store'), minFreeBytes: 0 }
    await mkdir(device.installRoot)
    const v1 = await writeArtifact(suite.ws.dir, 'dfull-1.bin', 300_000)
    const v2 = await writeArtifact(suite.ws.dir, 'dfull-2.bin', 301_000)
    await suite.publish(v1.path, 'dfull', '1.0.0')
    await installArtifact(device, { name: 'dfull' })
    await suite.publish(v2.path, 'dfull', '1.1.0')
    const first = await runDaemonCycle(device, { loadSampler: () => 0 })
    expect(first.staged.map((s) => `${s.name}@${s.version}`)).toContain('dfull@1.1.0')

    await fillDisk(mountPoint)
    // The queue still names the staged copy: its LRU time is written, and finds no room.
    const full = await runDaemonCycle(device, { loadSampler: () => 0 })
    expect(full.alreadyStaged).toContainEqual({ name: 'dfull', version: '1.1.0' })
    expect(full.failures).toEqual([])
    expect(await new StagingArea(device.installRoot).find('dfull', '1.1.0')).toBeDefined()

    // Uninstall, the way to free that disk, still removes the staged copy with the versions.
    const removed = await uninstallArtifact(device, { name: 'dfull' })
    expect(removed.removed[0]?.versions).toEqual(['1.0.0'])
    expect(await new StagingArea(device.installRoot).list()).toEqual([])
    await rm(join(mountPoint, 'filler'))
  })
})
