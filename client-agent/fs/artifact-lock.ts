import { randomBytes } from 'node:crypto'
import { link, lstat, readFile, readlink, rename, rm, symlink } from 'node:fs/promises'
import { uptime } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { z } from 'zod'
import { AgentError, fromFileSystemError, namingPath } from '../errors.ts'
import { tempPathFor } from './atomic.ts'
import { makeDirs } from './make-dirs.ts'
import { unlessMissing } from './missing.ts'

/**
 * Who holds an artifact's lock. The lock is a symbolic link whose target names the holder
 * (`deltaport-lock:<pid>:<boot time>:<token>`), the way Emacs marks a file being edited. Why a link and
 * not a file of JSON: `symlink` creates it whole in one step (it fails with EEXIST if a lock exists, so
 * no reader ever sees it half written), and a target this short (under 60 bytes) is kept in the inode
 * itself on ext4, xfs, btrfs and tmpfs, so taking the lock needs no data block. On a full disk a
 * written lock file failed every command with ENOSPC, `uninstall` included, the one that frees space.
 */
interface LockOwner {
  pid: number
  /** When the holder's machine booted (ms since the epoch): a lock from before a reboot is dead. */
  bootedAt: number
  /** Random per acquisition: release removes the lock only if it is still this one. */
  token: string
  /** When it was taken (the link's mtime), for the waiting message. */
  since: string
  /** The holder's command line, when it can be read (the waiting message says what is waited for). */
  command?: string
}

const LINK_PREFIX = 'deltaport-lock'
const LINK_TARGET = new RegExp(`^${LINK_PREFIX}:(\\d{1,10}):(\\d{1,16}):([0-9a-f]{16})$`)

/**
 * A lock file of JSON, as agents before the link lock wrote it: an older agent still running during an
 * upgrade may hold one, so it is read (and judged stale) the same way.
 */
const LegacyLockOwner = z.object({
  pid: z.number().int().positive(),
  bootedAt: z.number(),
  since: z.string().max(64),
  command: z.string().max(200),
  token: z.string().max(64),
})

export interface LockWait {
  /** How long to wait for another process to finish with the artifact; 0 = fail at once. */
  timeoutMs: number
  signal?: AbortSignal
  /** Told once, when the lock is held by someone else, so a CLI can say what it waits for. */
  onWait?: (holder: string) => void
  /** What the `busy` error says is going on (default: a process changing this artifact). */
  busyMessage?: (holder: string) => string
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
  const path = join(dir, 'lock')
  await namingPath(dir, makeDirs(dir))
  const token = `${PROCESS_NONCE}${randomBytes(4).toString('hex')}`
  const target = `${LINK_PREFIX}:${process.pid}:${Math.round(bootedAt())}:${token}`
  const deadline = performance.now() + wait.timeoutMs
  let told = false
  for (;;) {
    if (await tryCreate(path, target)) return { release: () => release(path, token) }
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
      throw new AgentError('busy', (wait.busyMessage ?? changingThisArtifact)(who), {
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

const changingThisArtifact = (holder: string) =>
  `another deltaport process is changing this artifact: ${holder}`

/** Runs `work` holding the artifact's lock; released however `work` ends. */
export async function withArtifactLock<T>(dir: string, wait: LockWait, work: () => Promise<T>): Promise<T> {
  const lock = await lockArtifact(dir, wait)
  try {
    return await work()
  } finally {
    await lock.release()
  }
}

/** Takes the lock if nobody holds it; any failure but "held" names the lock's path (and a full disk is no-space). */
async function tryCreate(path: string, target: string): Promise<boolean> {
  try {
    await symlink(target, path)
    return true
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false
    throw fromFileSystemError(error, path) ?? error
  }
}

async function readHolder(path: string): Promise<LockOwner | 'gone' | 'unreadable'> {
  const info = await unlessMissing(lstat(path), null)
  if (info === null) return 'gone'
  if (!info.isSymbolicLink()) return readLegacyHolder(path)
  const target = await unlessMissing(readlink(path), null)
  if (target === null) return 'gone'
  const match = LINK_TARGET.exec(target)
  if (!match) return 'unreadable'
  const pid = Number(match[1])
  if (pid < 1) return 'unreadable'
  const command = await commandOf(pid)
  return {
    pid,
    bootedAt: Number(match[2]),
    token: match[3] as string,
    since: info.mtime.toISOString(),
    ...(command ? { command } : {}),
  }
}

async function readLegacyHolder(path: string): Promise<LockOwner | 'gone' | 'unreadable'> {
  const text = await unlessMissing(readFile(path, 'utf8'), null)
  if (text === null) return 'gone'
  try {
    return LegacyLockOwner.parse(JSON.parse(text))
  } catch {
    return 'unreadable'
  }
}

/** The deltaport arguments of a running process, from Linux's /proc (none elsewhere or if it is gone). */
async function commandOf(pid: number): Promise<string | undefined> {
  const raw = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')
  // node, the CLI script, then what the user typed (as the holder would have seen process.argv).
  const args = raw.split('\0').filter((arg) => arg.length > 0)
  return args.length > 2 ? args.slice(2).join(' ').slice(0, 200) : undefined
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

/**
 * The first half of every token this process writes (the second is per lock). A lock naming this
 * process's pid with another prefix was left by an earlier process that had the same pid: in a
 * container the agent is pid 1 (or another fixed pid) on every run, so after one run was killed holding
 * the lock, kill(pid, 0) found the next run itself alive and it waited for itself until `--wait` ran
 * out, on every run after. A lock with this prefix is one of this process's own tasks (held, being
 * taken, or released since it was read): never stale, so it is waited for and read again, not removed.
 */
const PROCESS_NONCE = randomBytes(4).toString('hex')

function isAlive(owner: LockOwner): boolean {
  if (owner.pid === process.pid) return owner.token.startsWith(PROCESS_NONCE)
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
  const info = await unlessMissing(lstat(path), null)
  return info ? Date.now() - info.mtimeMs : 0
}

function describe(holder: LockOwner | 'unreadable'): string {
  return holder === 'unreadable'
    ? 'a lock being written right now'
    : `pid ${holder.pid}${holder.command ? ` (deltaport ${holder.command})` : ''} since ${holder.since}`
}
