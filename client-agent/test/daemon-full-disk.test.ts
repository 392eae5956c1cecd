import { mkdir, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { runDaemonCycle } from '../daemon/daemon.ts'
import { StagingArea } from '../daemon/staging.ts'
import { freeBytes } from '../fs/free-space.ts'
import { installArtifact } from '../install.ts'
import { uninstallArtifact } from '../uninstall.ts'
import { writeArtifact } from './fixtures.ts'
import { useEdgeWorkspace } from './local-edge.ts'
import { fillDisk, mountTmpfs } from './tmpfs.ts'

/**
 * The daemon on a disk that filled up while it ran: a real 4 MiB tmpfs (root only; skipped
 * otherwise), ENOSPC from the kernel. The staging index only records LRU times (the directories are
 * the truth), so a write of it that finds no room must not fail the cycle.
 */
const { mountPoint, mounted, remove } = await mountTmpfs('deltaport-daemon-full-')

describe.skipIf(!mounted)('the daemon on a disk that filled up while it ran (tmpfs)', () => {
  const suite = useEdgeWorkspace()
  afterAll(remove)

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

  it('counts the bytes of a download already begun when judging the room the rest needs', async () => {
    const device = { ...suite.ws.config, installRoot: join(mountPoint, 'store-kept') }
    await mkdir(device.installRoot)
    const v1 = await writeArtifact(suite.ws.dir, 'dkept-1.bin', 100_000)
    const v2 = await writeArtifact(suite.ws.dir, 'dkept-2.bin', 200_000)
    await suite.publish(v1.path, 'dkept', '1.0.0')
    await installArtifact({ ...device, minFreeBytes: 0 }, { name: 'dkept' })
    await suite.publish(v2.path, 'dkept', '1.1.0')
    // A cut cycle's download: the first 150 kB of 1.1.0 are on the disk already.
    const staging = new StagingArea(device.installRoot)
    await staging.prepare()
    await writeFile(staging.partialPath('dkept', '1.1.0'), v2.bytes.subarray(0, 150_000))
    // Twice the floor is 75 kB short of room for the whole artifact, 75 kB under room for the rest.
    const free = await freeBytes(device.installRoot)
    const minFreeBytes = Math.floor((free - 200_000 + 75_000) / 2)
    const cycle = await runDaemonCycle({ ...device, minFreeBytes }, { loadSampler: () => 0 })
    expect(cycle.deferred).toEqual([])
    expect(cycle.staged).toContainEqual(
      expect.objectContaining({ name: 'dkept', version: '1.1.0', resumedFrom: 150_000, fetched: 50_000 }),
    )
  })
})
