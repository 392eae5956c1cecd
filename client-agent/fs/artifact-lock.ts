import { randomBytes } from 'node:crypto'
import { link, mkdir, readFile, rename, rm, stat } from 'node:fs/promises'
import { uptime } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { z } from 'zod'
import { AgentError } from '../errors.ts'
import { tempPathFor, writeFileAtomic } from './atomic.ts'
import { unlessMissing } from './missing.ts'

/**
 * Who holds an artifact's lock. The lock file is created whole (written to a temp file, then hard-linked
 * into place, which fails if a lock exists), so a reader never sees it half written.
 */
const LockOwner = z.object({
  pid: z.number().int().positive(),
  /** When the holder's machine booted (ms since the epoch): a lock from before a reboot is dead. */
  bootedAt: z.number(),
  since: z.string().max(64),
  command: z.string().max(200),
  /** Random per acquisition: release removes the lock only if it is still this one. */
  token: z.string().max(64),
})
type LockOwner = z.infer<typeof LockOwner>

export interface LockWait {
  /** How long to wait for another process to finish with the artifact; 0 = fail at once. */
  timeoutMs: number
  signal?: AbortSignal
  /** Told once, when the lock is held by someone else, so a CLI can say what it waits for. */
  onWait?: (holder: string) => void
}

export interface ArtifactLock {
  release(): Promise<void>
}

const POLL_MS = 100
/** A lock file that cannot be parsed is someone's half-finished acquisition only this long. */
const UNREADABLE_GRACE_MS = 5_000
/** Boot times computed from uptime drift by the clock's adjustments; a reboot moves it by far more. */
const BOOT_TOLERANCE_MS = 120_000

/**
 * Serialises the processes that change one artifact's store (an `update` from cron, a manual `update`,
 * `run`'s swap-triggered update, a `rollback`): they share `partial/` work files and switch `current`,
 * so two at once would corrupt each other's downloads or undo each other's switch.
 *
 * The lock is `<dir>/lock`, naming its holder. A holder that died (its pid is gone, or the machine
 * rebooted since) leaves a stale lock that the next process removes at once; a live holder is waited
 * for up to `timeoutMs`, then the caller gets a `busy` error naming it. Why not a lock library: see
 * docs/decisions/0021-artifact-lock.md.
 */
export async function lockArtifact(dir: string, wait: LockWait): Promise<ArtifactLock> {
  await mkdir(dir, { recursive: true })
  const path = join(dir, 'lock')
  const owner: LockOwner = {
    pid: process.pid,
    bootedAt: bootedAt(),
    since: new Date().toISOString(),
    command: process.argv.slice(2).join(' ').slice(0, 200),
    token: randomBytes(12).toString('hex'),
  }
  const deadline = performance.now() + wait.timeoutMs
  let told = false
  for (;;) {
    if (await tryCreate(path, owner)) return { release: () => release(path, owner.token) }
    const holder = await readHolder(path)
    if (holder === 'gone') continue
    if (holder !== 'unreadable' && !isAlive(holder)) {
      await removeIfStill(path, holder)
      continue
    }
    if (holder === 'unreadable' && (await ageMs(path)) > UNREADABLE_GRACE_MS) {
      await removeIfStill(path, null)
      continue
    }
    const who = describe(holder)
    if (performance.now() >= deadline)
      throw new AgentError('busy', `another deltaport process is changing this artifact: ${who}`, {
        lock: path,
        ...(holder === 'unreadable' ? {} : { pid: holder.pid, since: holder.since }),
      })
    if (!told) wait.onWait?.(who)
    told = true
    await sleep(Math.min(POLL_MS, Math.max(1, deadline - performance.now())), undefined, {
      ...(wait.signal ? { signal: wait.signal } : {}),
    })
  }
}

/** Runs `work` holding the artifact's lock; released however `work` ends. */
export async function withArtifactLock<T>(dir: string, wait: LockWait, work: () => Promise<T>): Promise<T> {
  const lock = await lockArtifact(dir, wait)
  try {
    return await work()
  } finally {
    await lock.release()
  }
}

async function tryCreate(path: string, owner: LockOwner): Promise<boolean> {
  const temp = tempPathFor(path)
  await writeFileAtomic(temp, JSON.stringify(owner))
  try {
    await link(temp, path)
    return true
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false
    throw error
  } finally {
    await rm(temp, { force: true })
  }
}

async function readHolder(path: string): Promise<LockOwner | 'gone' | 'unreadable'> {
  const text = await unlessMissing(readFile(path, 'utf8'), null)
  if (text === null) return 'gone'
  try {
    return LockOwner.parse(JSON.parse(text))
  } catch {
    return 'unreadable'
  }
}

/**
 * Removes a dead holder's lock, but only that one: two waiters may judge it stale at once, and the
 * faster one may already have taken the lock again. The lock is first moved aside (only one mover
 * wins), then checked; a live lock moved by mistake is linked back (which fails only if yet another
 * process got the lock meanwhile, and then that one holds it).
 */
async function removeIfStill(path: string, stale: LockOwner | null): Promise<void> {
  const aside = tempPathFor(path)
  const moved = await unlessMissing(
    rename(path, aside).then(() => true),
    false,
  )
  if (!moved) return
  const taken = await readHolder(aside)
  const wasStale =
    stale === null
      ? taken === 'unreadable'
      : taken !== 'gone' && taken !== 'unreadable' && taken.token === stale.token
  if (!wasStale) await link(aside, path).catch(() => undefined)
  await rm(aside, { force: true })
}

async function release(path: string, token: string): Promise<void> {
  const holder = await readHolder(path)
  if (holder !== 'gone' && holder !== 'unreadable' && holder.token === token) await rm(path, { force: true })
}

function isAlive(owner: LockOwner): boolean {
  if (Math.abs(owner.bootedAt - bootedAt()) > BOOT_TOLERANCE_MS) return false
  try {
    process.kill(owner.pid, 0)
    return true
  } catch (error) {
    // EPERM: the process exists but belongs to another user.
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
}

function bootedAt(): number {
  return Date.now() - uptime() * 1000
}

async function ageMs(path: string): Promise<number> {
  const info = await unlessMissing(stat(path), null)
  return info ? Date.now() - info.mtimeMs : 0
}

function describe(holder: LockOwner | 'unreadable'): string {
  return holder === 'unreadable'
    ? 'a lock being written right now'
    : `pid ${holder.pid} (deltaport ${holder.command || '…'}) since ${holder.since}`
}
