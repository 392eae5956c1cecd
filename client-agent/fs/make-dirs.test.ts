import { spawnSync } from 'node:child_process'
import { mkdir, mkdtemp, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { makeDirs } from './make-dirs.ts'

const root = await mkdtemp(join(tmpdir(), 'deltaport-make-dirs-'))
const readOnly = join(root, 'ro')
await mkdir(readOnly)
/** A read-only file system needs root to mount; the test is skipped otherwise. */
const mounted =
  process.platform === 'linux' &&
  process.getuid?.() === 0 &&
  spawnSync('mount', ['-t', 'tmpfs', '-o', 'ro,size=1m', 'tmpfs', readOnly]).status === 0

afterAll(async () => {
  if (mounted) spawnSync('umount', ['-l', readOnly])
  await rm(root, { recursive: true, force: true })
})

describe('makeDirs', () => {
  it('creates every missing folder of a path, and accepts one that exists', async () => {
    const path = join(root, 'a', 'b', 'c')
    await makeDirs(path)
    await makeDirs(path)
    expect((await stat(path)).isDirectory()).toBe(true)
  })

  it.skipIf(!mounted)('reports a read-only file system as EROFS, where Node says ENOENT', async () => {
    await expect(mkdir(join(readOnly, 'x', 'y'), { recursive: true })).rejects.toMatchObject({
      code: 'ENOENT',
    })
    await expect(makeDirs(join(readOnly, 'x', 'y'))).rejects.toMatchObject({
      code: 'EROFS',
      path: join(readOnly, 'x'),
    })
  })
})
