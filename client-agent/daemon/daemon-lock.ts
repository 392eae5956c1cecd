import { join } from 'node:path'
import { AgentError } from '../errors.ts'
import { type ArtifactLock, lockArtifact } from '../fs/artifact-lock.ts'

/**
 * One prefetching daemon per store. Two would fetch the same queue into the same partial files
 * (`.staging/.partial/…`), each truncating and renaming the other's, and download every byte twice.
 * The lock is the artifact lock's (a link naming the holder, stale when its process is gone) on a
 * folder of the staging area that no artifact name can take (names never start with a dot).
 */
export async function lockDaemon(installRoot: string): Promise<ArtifactLock> {
  try {
    return await lockArtifact(join(installRoot, '.staging', '.daemon'), {
      timeoutMs: 0,
      busyMessage: (holder) =>
        `another deltaport daemon is already prefetching into ${installRoot}: ${holder}; stop it first (one daemon per store)`,
    })
  } catch (error) {
    // A store the lock cannot even be made in (read-only, full) cannot be staged into either: the
    // cycles report that, and keep trying until the owner fixes the disk, as without the lock.
    if (error instanceof AgentError && error.code !== 'busy') return { release: async () => undefined }
    throw error
  }
}
