import { mkdir, stat } from 'node:fs/promises'
import { dirname } from 'node:path'

/**
 * `mkdir -p` that reports why it failed. Node's recursive mkdir answers ENOENT when a folder cannot be
 * created inside an existing one for another reason (a read-only file system, no permission: measured
 * on Node 22 with a read-only tmpfs), which sends the owner looking for a missing folder. On ENOENT this
 * creates the first missing folder below the deepest existing one without `recursive`, which fails
 * with the real error; if that works after all (a race, or the path is now complete), it carries on.
 */
export async function makeDirs(path: string, mode?: number): Promise<void> {
  const options = { recursive: true, ...(mode === undefined ? {} : { mode }) }
  try {
    await mkdir(path, options)
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error
    await mkdir(await firstMissing(path), mode)
    await mkdir(path, options)
  }
}

async function firstMissing(path: string): Promise<string> {
  let missing = path
  for (let parent = dirname(path); parent !== missing; parent = dirname(parent)) {
    if (
      await stat(parent).then(
        () => true,
        () => false,
      )
    )
      return missing
    missing = parent
  }
  return missing
}
