import { join } from 'node:path'
import { artifactFolder } from '../fs/artifact-folder.ts'
import { type ArtifactLock, lockArtifact } from '../fs/artifact-lock.ts'

/**
 * One `deltaport run` per artifact and store, held from before its first install until it has stopped
 * its service. A second one shares the first's run files: starting, it reaped the service processes
 * recorded in children.json (the first agent's, which then rolled back a healthy version as crashed),
 * reopened its swap journal, and on stopping recorded no service at all, so `uninstall` no longer saw
 * the first one serving. The lock is the artifact lock's (a link naming the holder, stale once its
 * process is gone, so a killed agent's is taken over and its orphans still reaped) in a folder of the
 * install root that no artifact name can take (names never start with a dot): kept out of the
 * artifact's own folder, so a `run` whose first install fails leaves no folder for the artifact.
 */
export function lockRun(installRoot: string, name: string): Promise<ArtifactLock> {
  return lockArtifact(join(installRoot, '.run', artifactFolder(name)), {
    timeoutMs: 0,
    busyMessage: (holder) =>
      `another \`deltaport run\` already serves ${name} from ${installRoot}: ${holder}; stop it first (one \`deltaport run\` per artifact)`,
  })
}
