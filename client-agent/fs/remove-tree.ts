import { chmod, lstat, readdir, rm } from 'node:fs/promises'
import { join } from 'node:path'

/**
 * `rm -rf` that also gets through folders made read-only (`chmod a-w` by hand, or an archive's own
 * modes): their owner may make them writable again, which is what a user would do by hand. Only for
 * trees the caller owns outright, such as a version folder already renamed aside for deletion.
 * Anything else (a mount point, a file of another user) still fails, with the system's error.
 */
export async function removeTree(path: string): Promise<void> {
  try {
    await rm(path, { recursive: true, force: true })
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    if (code !== 'EACCES' && code !== 'EPERM') throw error
    await makeWritable(path)
    await rm(path, { recursive: true, force: true })
  }
}

async function makeWritable(path: string): Promise<void> {
  const info = await lstat(path).catch(() => null)
  if (!info?.isDirectory()) return
  await chmod(path, info.mode | 0o700).catch(() => undefined)
  for (const entry of await readdir(path).catch(() => [])) await makeWritable(join(path, entry))
}
