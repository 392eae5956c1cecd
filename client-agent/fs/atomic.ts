import { randomBytes } from 'node:crypto'
import { rmSync } from 'node:fs'
import { type FileHandle, lstat, open, rename, rm, stat } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { AgentError, namingPath } from '../errors.ts'
import { removeTree } from './remove-tree.ts'

/** A sibling temp path, so the final rename never crosses a filesystem. */
export function tempPathFor(target: string): string {
  return join(dirname(target), `.${basename(target)}.${randomBytes(6).toString('hex')}.tmp`)
}

/** Whether `entry` is a tempPathFor name (`.<base>.<12 hex>.tmp`) of a `base` that `accepts` takes. */
export function isTempOf(entry: string, accepts: (base: string) => boolean): boolean {
  const match = /^\.(.+)\.[0-9a-f]{12}\.tmp$/.exec(entry)
  return match !== null && accepts(match[1] as string)
}

/**
 * How long a temp entry must have gone unchanged before it counts as abandoned, whenever the process
 * that sweeps it started: a writer changes its temp as it works (a rebuild writes as it goes; every other
 * temp lives the milliseconds between its creation and its rename), so one untouched for an hour has no
 * writer left. Judged by the wall clock (a file's mtime is one): a clock stepped forward by more than
 * this between a live writer's last write and a sweep could make its temp look abandoned, which is why
 * sweeps run only where no other writer may be (under the artifact's lock, the daemon's lock) and
 * never touch a temp this process still has open.
 */
export const ABANDONED_TEMP_MS = 3_600_000

/**
 * Deletes the entries of `paths` (tempPathFor names a killed or failed process left) last changed
 * before `before` (ms since the epoch), or, given `now`, unchanged for ABANDONED_TEMP_MS by then: with
 * only `before` (the sweeper's start), a process running for weeks left every temp of the commands
 * that failed during its life until it restarted. A temp this process still has open (openTempFor) is
 * never one of them. Best effort: what cannot be deleted now is tried again next time rather than
 * failing the caller. Returns how many were deleted.
 */
export async function removeStaleTemps(
  paths: readonly string[],
  before: number,
  now?: number,
): Promise<number> {
  let removed = 0
  for (const path of paths) {
    if (openTemps.has(path)) continue
    const info = await lstat(path).catch(() => null)
    if (!info) continue
    const stale = info.mtimeMs < before || (now !== undefined && now - info.mtimeMs >= ABANDONED_TEMP_MS)
    if (
      stale &&
      (await removeTree(path).then(
        () => true,
        () => false,
      ))
    )
      removed++
  }
  return removed
}

/**
 * Temp files this process created and has not yet renamed into place or removed: what a command stopped
 * by a signal removes on its way out (removeOpenTempsSync), so no `.out.<hex>.tmp` outlives it.
 */
const openTemps = new Set<string>()

/** The temp was renamed into place or removed: nothing to clean up for it any more. */
export function forgetTemp(temp: string): void {
  openTemps.delete(temp)
}

/** Removes every temp still open (synchronously: called from a signal handler right before exit). */
export function removeOpenTempsSync(): void {
  for (const temp of openTemps) rmSync(temp, { force: true })
  openTemps.clear()
}

/** openTempFor calls under way: a temp they create is not in openTemps until its open has returned. */
let opening = 0
/** Set by stopRemovingTemps: the exit a signal asked for, taken once no temp is being opened. */
let stopping: { code: number; exit: (code: number) => void } | null = null

/**
 * A stop signal's end of the process (fs/stop-signals.ts): removes every temp still open and exits
 * with `code`, or, while a temp is being opened, once that open has returned and its temp is removed
 * too. Exiting at once left that temp behind: a signal that waited out a long synchronous step (an
 * in-memory `delta make`) was handled in the same turn of the event loop as the output's open, which
 * had created the file in the thread pool but not yet reported it. `exit` is for tests.
 */
export function stopRemovingTemps(code: number, exit: (code: number) => void = (c) => process.exit(c)): void {
  stopping = { code, exit }
  removeOpenTempsSync()
  if (opening === 0) exit(code)
}

/**
 * Creates `target`'s sibling temp file. A failure here is about the target's directory (missing, not
 * writable, full), so the error names the target rather than a temp name the user never chose.
 */
export async function openTempFor(target: string): Promise<{ temp: string; handle: FileHandle }> {
  opening++
  const settled = await createTemp(target).then(
    (opened) => ({ opened, error: null }),
    (error: unknown) => ({ opened: null, error }),
  )
  opening--
  if (stopping) {
    if (settled.opened) {
      await settled.opened.handle.close().catch(() => undefined)
      rmSync(settled.opened.temp, { force: true })
    }
    if (opening === 0) stopping.exit(stopping.code)
    // Only reached with a test's exit (or while another open is under way, which then exits).
    throw new AgentError('io', `stopped by a signal before ${target} was written`, { path: target })
  }
  if (!settled.opened) throw settled.error
  openTemps.add(settled.opened.temp)
  return settled.opened
}

async function createTemp(target: string): Promise<{ temp: string; handle: FileHandle }> {
  // The final rename would fail only after all the work; a directory in the way is known now.
  if ((await stat(target).catch(() => null))?.isDirectory())
    throw new AgentError('io', `${target} is a directory`, { path: target })
  const temp = tempPathFor(target)
  const handle = await open(temp, 'wx', 0o644).catch((error: NodeJS.ErrnoException) => {
    error.path = target
    throw error
  })
  return { temp, handle }
}

/** Flushes a directory entry so a rename inside it survives power loss. */
export async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r')
  try {
    await handle.sync()
  } finally {
    await handle.close()
  }
}

/** Write temp, fsync, rename, fsync the directory: readers see the old file or the new one, never half. */
export async function writeFileAtomic(target: string, data: string | Uint8Array): Promise<void> {
  const { temp, handle } = await openTempFor(target)
  try {
    // Errors on the handle carry no path: a full disk here must name the file it was writing.
    await namingPath(target, handle.writeFile(data))
    await namingPath(target, handle.sync())
  } catch (error) {
    await handle.close()
    await rm(temp, { force: true })
    forgetTemp(temp)
    throw error
  }
  await handle.close()
  // A rename can still fail (a trailing slash on a missing folder, a folder put there meanwhile): the
  // temp is then only litter beside the target.
  await namingPath(target, rename(temp, target)).catch(async (error: unknown) => {
    await rm(temp, { force: true })
    forgetTemp(temp)
    throw error
  })
  forgetTemp(temp)
  await fsyncDir(dirname(target))
}

/** Moves an already-synced file into place atomically. */
export async function renameDurably(from: string, to: string): Promise<void> {
  await rename(from, to)
  await fsyncDir(dirname(to))
}
