import { randomBytes } from 'node:crypto'
import { link, lstat, readFile, readlink, rename, rm, rmdir, symlink } from 'node:fs/promises'
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
 * (`deltaport-lock:<pid>:<boot time>:<token>`), the way Emacs marks a file being edited. On Linux the
 * boot time is written with a leading zero and the token carries the holder's start time (see
 * `lockTarget`); agents before that read the same number and a token like any other. Why a link and
 * not a file of JSON: `symlink` creates it whole in one step (it fails with EEXIST if a lock exists, so
 * no reader ever sees it half written), and a target this short (under 60 bytes) is kept in the inode
 * itself on ext4, xfs, btrfs and tmpfs, so taking the lock needs no data block. On a full disk a
 * written lock file failed every command with ENOSPC, `uninstall` included, the one that frees space.
 */
interface LockOwner {
  pid: number
  /** When the holder's machine booted (ms since the epoch): a lock from before a reboot is dead. */
  bootedAt: number
  /**
   * The token's start-time digits (hex, the holder's start in clock ticks since boot, mod 2^32), when
   * the holder wrote them: the holder is then the process with that pid *and* that start time.
   */
  startTicks?: string
  /** With `startTicks`: the boot the holder ran in (bootTag), so a lock from before a reboot is dead. */
  bootTag?: string
  /**
   * Names the holding process (its nonce, and on Linux its start time and boot; elsewhere random digits
   * per acquisition too): release removes the lock only if it is still this process's.
   */
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
  /**
   * The locks of the command this is part of (withOrderedLocks): a lock is taken into the set and
   * held until the command ends, and one the set holds already is not taken again.
   */
  locks?: LockSet
}

export interface ArtifactLock {
  release(): Promise<void>
}

const POLL_MS = 100
/**
 * Times the folder is made again when it vanished before the lock was taken in it (another holder's
 * release removed it empty): a race lost that often is a file system that does not keep it.
 */
const MAX_FOLDER_REMAKES = 10
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
  const { target, token } = await lockTarget()
  const deadline = performance.now() + wait.timeoutMs
  let told = false
  let remade = 0
  for (;;) {
    const taken = await tryCreate(path, target, remade < MAX_FOLDER_REMAKES)
    if (taken === 'no-folder') {
      // Another holder's release removed the folder, empty, since it was made above.
      remade++
      await namingPath(dir, makeDirs(dir))
      continue
    }
    if (taken) return { release: () => release(dir, path, token) }
    const holder = await readHolder(path)
    if (holder === 'gone') continue
    if (holder !== 'unreadable' && !(await isAlive(holder))) {
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

/**
 * Runs `work` holding the artifact's lock; released however `work` ends, unless it is taken into
 * `wait.locks` (then it is held until that set's command ends).
 */
export async function withArtifactLock<T>(dir: string, wait: LockWait, work: () => Promise<T>): Promise<T> {
  if (wait.locks) {
    await wait.locks.take(dir, wait)
    return work()
  }
  const lock = await lockArtifact(dir, wait)
  try {
    return await work()
  } finally {
    await lock.release()
  }
}

/**
 * The artifact locks one command holds together (an update, its dependencies and the switch of them
 * all), taken in one global order so that two such commands never wait on each other: every process
 * waits only for a lock whose folder sorts after every lock it holds (a cycle of waiters would need a
 * folder sorting after itself). A lock the command finds it needs out of that order (a dependency
 * sorting before its artifact, learnt only once the artifact's manifest was read under its lock) is
 * tried without waiting; if another process holds it, `LockOrderConflict` ends the attempt and
 * withOrderedLocks releases everything and starts again, taking that lock too, in order. Locks are
 * kept until the command ends (two-phase): what was checked under one stays as it was until the switch.
 */
export class LockSet {
  private readonly held = new Map<string, ArtifactLock>()

  holds(dir: string): boolean {
    return this.held.has(dir)
  }

  /** Takes `dir`'s lock into the set (nothing if held already): waiting in order, else only trying. */
  async take(dir: string, wait: LockWait): Promise<void> {
    if (this.held.has(dir)) return
    if ([...this.held.keys()].every((held) => held < dir)) {
      this.held.set(dir, await lockArtifact(dir, wait))
      return
    }
    try {
      this.held.set(dir, await lockArtifact(dir, { ...wait, timeoutMs: 0 }))
    } catch (error) {
      if (error instanceof AgentError && error.code === 'busy') throw new LockOrderConflict(dir, error)
      throw error
    }
  }

  /** Releases every lock of the set (each removes its artifact's folder if nothing is left in it). */
  async release(): Promise<void> {
    const locks = [...this.held.values()]
    this.held.clear()
    for (const lock of locks) await lock.release()
  }
}

/**
 * A lock needed out of order is held by another process: the attempt ends before anything is switched
 * (every lock is taken before a switch) and withOrderedLocks starts it again with this lock in order.
 */
export class LockOrderConflict extends Error {
  readonly dir: string
  /** What the attempt would have ended with had it waited (the busy naming the holder). */
  readonly busy: AgentError

  constructor(dir: string, busy: AgentError) {
    super(`lock ${dir} is held and sorts before a lock already held: start again taking it in order`)
    this.dir = dir
    this.busy = busy
  }
}

/** Attempts before an update that keeps finding new locks held out of order gives up (`busy`). */
const MAX_LOCK_ORDER_RESTARTS = 32

/**
 * Runs `work` holding the locks of `dirs`, taken in order, and whatever it takes into the LockSet it
 * is given (passed on as LockWait's `locks`), all released when it ends. When it meets a lock held by another
 * process out of order, everything it took is released and it runs again from the start, that lock
 * added to those taken first: a second run reads every state afresh under its locks (another update
 * may have done its work meanwhile). `work` must switch nothing before it has every lock it needs.
 */
export async function withOrderedLocks<T>(
  dirs: readonly string[],
  wait: LockWait,
  work: (locks: LockSet) => Promise<T>,
): Promise<T> {
  const first = new Set(dirs)
  for (let attempt = 1; ; attempt++) {
    const locks = new LockSet()
    try {
      for (const dir of [...first].sort()) await locks.take(dir, wait)
      return await work(locks)
    } catch (error) {
      if (!(error instanceof LockOrderConflict)) throw error
      if (attempt >= MAX_LOCK_ORDER_RESTARTS) throw error.busy
      first.add(error.dir)
    } finally {
      await locks.release()
    }
  }
}

/**
 * Takes the lock if nobody holds it (false: held; `no-folder`: the folder is gone, see release); any
 * other failure names the lock's path (and a full disk is no-space).
 */
async function tryCreate(path: string, target: string, mayRemake: boolean): Promise<boolean | 'no-folder'> {
  try {
    await symlink(target, path)
    return true
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    if (code === 'EEXIST') return false
    if (code === 'ENOENT' && mayRemake) return 'no-folder'
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
  const token = match[3] as string
  // Only this agent's Linux form starts the boot time with a zero (older agents wrote the plain number).
  // Not by its length: a device without a battery-backed clock boots at 1970, where the boot time has
  // fewer than 13 digits, and it is the NTP step that follows that the start time must survive.
  const bootField = match[2] as string
  const identified = bootField.length > 1 && bootField.startsWith('0')
  return {
    pid,
    bootedAt: Number(bootField),
    token,
    ...(identified
      ? { startTicks: token.slice(NONCE_DIGITS, NONCE_DIGITS + 8), bootTag: token.slice(NONCE_DIGITS + 8) }
      : {}),
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

/**
 * Removes the lock if it is still this holder's, then the folder if nothing is left in it. Taking the
 * lock makes the folder, so a command that only looked (a daemon's claim on a dependency never
 * installed, a first install that failed, an uninstall of what was only prefetched) would otherwise
 * leave an empty folder that reads as an artifact on the device. rmdir removes only an empty folder,
 * so a new holder's lock, or anything another process put there, keeps it; a process about to take
 * the lock in it makes it again (lockArtifact).
 */
async function release(dir: string, path: string, token: string): Promise<void> {
  const holder = await readHolder(path)
  if (holder !== 'gone' && holder !== 'unreadable' && holder.token === token) await rm(path, { force: true })
  await rmdir(dir).catch(() => undefined)
}

/**
 * The first digits of every token this process writes (then, on Linux, its start time and boot,
 * `processIdentity`; elsewhere random digits). A lock naming this process's pid with another prefix
 * was left by an earlier process that had the same pid: in a container the agent is pid 1 (or another fixed pid) on every run, so after one run was killed holding
 * the lock, kill(pid, 0) found the next run itself alive and it waited for itself until `--wait` ran
 * out, on every run after. A lock with this prefix is one of this process's own tasks (held, being
 * taken, or released since it was read): never stale, so it is waited for and read again, not removed.
 */
const PROCESS_NONCE = randomBytes(2).toString('hex')
const NONCE_DIGITS = PROCESS_NONCE.length

/**
 * This process's lock target and token. On Linux the token is the nonce, this process's start time
 * (clock ticks since boot from /proc/self/stat, 8 hex digits) and this boot's tag (4 digits), and the
 * boot time gets a leading zero to say so. Why: liveness by boot time compares wall-clock readings, and a clock
 * stepped by minutes while a lock is held (NTP's first sync on a device without a battery-backed clock,
 * an operator's `date -s`) looked like a reboot, so a second process took a live holder's lock. The
 * start time is on the boot clock, which no step moves, and it also tells a pid reused by another
 * process from the holder. Elsewhere the token is an 8-digit nonce and 8 random digits, as before.
 */
async function lockTarget(): Promise<{ target: string; token: string }> {
  const booted = Math.round(bootedAt())
  const own = await processIdentity()
  const token = `${own.prefix}${own.boot ?? randomBytes((16 - own.prefix.length) / 2).toString('hex')}`
  const bootField = own.boot !== null ? `0${booted}` : String(booted)
  return { target: `${LINK_PREFIX}:${process.pid}:${bootField}:${token}`, token }
}

interface OwnIdentity {
  /** What every token of this process starts with. */
  prefix: string
  /** Linux: the rest of the token, this boot's tag; null elsewhere (the rest is random per lock). */
  boot: string | null
}

let ownIdentity: Promise<OwnIdentity> | undefined

/**
 * This process as its locks name it: the nonce, then its start time and the boot's tag (Linux), or two
 * more random digits where /proc has neither, so the prefix is never weaker than the 32 random bits it was.
 */
function processIdentity(): Promise<OwnIdentity> {
  ownIdentity ??= Promise.all([startTicksOf('self'), bootTag()]).then(([ticks, boot]) =>
    ticks === null || boot === null
      ? { prefix: `${PROCESS_NONCE}${randomBytes(2).toString('hex')}`, boot: null }
      : { prefix: `${PROCESS_NONCE}${ticks}`, boot },
  )
  return ownIdentity
}

/**
 * The first 4 hex digits of this boot's id (/proc/sys/kernel/random/boot_id, random per boot): a start
 * time is only unique within one boot, and an embedded device that boots the same way each time may
 * give the same pid the same start tick again. Null where Linux does not say.
 */
async function bootTag(): Promise<string | null> {
  const id = await readFile('/proc/sys/kernel/random/boot_id', 'utf8').catch(() => '')
  const hex = id.replaceAll('-', '').trim()
  return /^[0-9a-f]{32}$/.test(hex) ? hex.slice(0, 4) : null
}

/** A process's start in clock ticks since boot, mod 2^32 as 8 hex digits; null where /proc cannot tell. */
async function startTicksOf(pid: number | 'self'): Promise<string | null> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => null)
  if (stat === null) return null
  // `pid (comm) state …`: comm may hold spaces and parentheses, so fields are counted after the last
  // `)`; starttime is field 22, the 20th after it.
  const ticks = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19])
  if (!Number.isSafeInteger(ticks) || ticks < 0) return null
  return (ticks % 2 ** 32).toString(16).padStart(8, '0')
}

async function isAlive(owner: LockOwner): Promise<boolean> {
  if (owner.pid === process.pid) return owner.token.startsWith((await processIdentity()).prefix)
  if (owner.startTicks !== undefined) {
    // Written in another boot: whatever runs under that pid now is not the holder.
    const boot = (await processIdentity()).boot
    if (boot !== null && owner.bootTag !== boot) return false
    const ticks = await startTicksOf(owner.pid)
    // Unreadable: gone, or /proc hides other users' processes (hidepid); kill(pid, 0) tells those apart.
    if (ticks !== null) return ticks === owner.startTicks
  }
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
