import { spawnSync } from 'node:child_process'
import { mkdtemp, open, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { expect } from 'vitest'

/**
 * A real small disk for full-disk tests: a tmpfs of `size` on a fresh folder, which only root can mount
 * (`mounted` false otherwise: skip the suite). No fault injection: ENOSPC comes from the kernel.
 * `remove` unmounts it and deletes the folder.
 */
export async function mountTmpfs(
  prefix: string,
  size = '4m',
): Promise<{ mountPoint: string; mounted: boolean; remove: () => Promise<void> }> {
  const mountPoint = await mkdtemp(join(tmpdir(), prefix))
  const mounted =
    process.platform === 'linux' &&
    process.getuid?.() === 0 &&
    spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', mountPoint]).status === 0
  return {
    mountPoint,
    mounted,
    remove: () => {
      if (mounted) spawnSync('umount', ['-l', mountPoint])
      return rm(mountPoint, { recursive: true, force: true })
    },
  }
}

/** Writes a filler file (`<dir>/filler`) until the disk refuses more (ENOSPC). */
export async function fillDisk(dir: string): Promise<void> {
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
