import { stat, statfs } from 'node:fs/promises'
import { dirname, resolve } from 'node:path'
import { AgentError } from '../errors.ts'
import { formatBytes } from '../output.ts'
import { unlessMissing } from './missing.ts'

/** What installs leave free on the install root's filesystem unless the config says otherwise. */
export const DEFAULT_MIN_FREE_BYTES = 64 * 1024 ** 2

/**
 * Bytes an unprivileged process can still write on the filesystem that holds `path`, or would hold it
 * (a folder not created yet is asked about through its nearest existing parent).
 */
export async function freeBytes(path: string): Promise<number> {
  for (let at = resolve(path); ; at = dirname(at)) {
    const fs = await unlessMissing(statfs(at), null)
    if (fs) return fs.bavail * fs.bsize
    if (dirname(at) === at) throw new AgentError('io', `cannot find the disk of ${path}`)
  }
}

/** The size of a file that may not exist (a resumable partial download), 0 if it does not. */
export async function sizeIfPresent(path: string): Promise<number> {
  return (await unlessMissing(stat(path), null))?.size ?? 0
}

/**
 * Refuses to start writing `needBytes` under `dir` unless `keepFreeBytes` stay free afterwards. Why up
 * front: a disk that fills in the middle of an update fails it late (after the download), and a full
 * disk is what stops the running service from writing its own data.
 */
export async function ensureFreeSpace(
  dir: string,
  needBytes: number,
  keepFreeBytes: number,
  what: string,
): Promise<void> {
  const free = await freeBytes(dir)
  if (free - needBytes >= keepFreeBytes) return
  throw new AgentError(
    'no-space',
    `${what} needs ${formatBytes(needBytes)} on the disk of ${dir} and keeps ${formatBytes(keepFreeBytes)} free (minFreeBytes), but only ${formatBytes(free)} are free`,
    { dir, needBytes, keepFreeBytes, freeBytes: free },
  )
}
