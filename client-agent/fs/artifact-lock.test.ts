import { type ChildProcess, spawn } from 'node:child_process'
import { once } from 'node:events'
import { lstat, mkdir, mkdtemp, readFile, readlink, rm, symlink, utimes, writeFile } from 'node:fs/promises'
import { tmpdir, uptime } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { AgentError } from '../errors.ts'
import { agentFailure } from '../test/fixtures.ts'
import { lockArtifact, withArtifactLock, withOrderedLocks } from './artifact-lock.ts'

let dir: string
const children: ChildProcess[] = []

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'dp-lock-'))
})

afterEach(async () => {
  for (const child of children.splice(0)) child.kill('SIGKILL')
  await rm(dir, { recursive: true, force: true })
})

async function busyError(promise: Promise<unknown>): Promise<AgentError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(error).toBeInstanceOf(AgentError)
  expect((error as AgentError).code).toBe('busy')
  return error as AgentError
}

/** A lock file as an older agent process would have left it (JSON, ADR 0021 before links). */
async function writeLock(owner: { pid: number; bootedAt?: number }) {
  // Replacing (not writing through) a lock link this process may hold, as a breaker would.
  await rm(join(dir, 'lock'), { force: true })
  // A release leaves no empty folder: the older agent's lock is in its artifact's folder.
  await mkdir(dir, { recursive: true })
  await writeFile(
    join(dir, 'lock'),
    JSON.stringify({
      pid: owner.pid,
      bootedAt: owner.bootedAt ?? Date.now() - uptime() * 1000,
      since: new Date().toISOString(),
      command: 'update app',
      token: 'theirs',
    }),
  )
}

/** The pid of a process that has exited (and been reaped), so nobody holds it. */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', ''])
  await once(child, 'exit')
  if (child.pid === undefined) throw new Error('no pid')
  return child.pid
}

/** Another Node process holding the lock until it is killed. */
async function holdInChild(): Promise<ChildProcess> {
  const module = join(import.meta.dirname, 'artifact-lock.ts')
  const child = spawn(
    process.execPath,
    [
      '--input-type=module',
      '-e',
      `const { lockArtifact } = await import(${JSON.stringify(module)})
       await lockArtifact(${JSON.stringify(dir)}, { timeoutMs: 0 })
       process.stdout.write('held\\n')
       setInterval(() => {}, 1000)`,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  )
  children.push(child)
  const [chunk] = (await once(child.stdout ?? child, 'data')) as [Buffer]
  expect(chunk.toString()).toBe('held\n')
  return child
}

describe('the artifact lock', () => {
  it('lets one holder in at a time; the next waits for the release', async () => {
    let inside = 0
    let most = 0
    const order: number[] = []
    await Promise.all(
      Array.from({ length: 6 }, (_, i) =>
        withArtifactLock(dir, { timeoutMs: 30_000 }, async () => {
          inside += 1
          most = Math.max(most, inside)
          await new Promise((resolve) => setTimeout(resolve, 20))
          order.push(i)
          inside -= 1
        }),
      ),
    )
    expect(most).toBe(1)
    expect(order.sort()).toEqual([0, 1, 2, 3, 4, 5])
  })

  it('names a live holder and fails when the wait runs out; tells the waiter once', async () => {
    const held = await lockArtifact(dir, { timeoutMs: 0 })
    const told: string[] = []
    const error = await busyError(lockArtifact(dir, { timeoutMs: 250, onWait: (who) => told.push(who) }))
    expect(error.message).toContain(`pid ${process.pid}`)
    expect(error.exitCode).toBe(11)
    expect(told).toEqual([expect.stringContaining(`pid ${process.pid}`)])
    await held.release()
    const next = await lockArtifact(dir, { timeoutMs: 0 })
    await next.release()
  })

  it('leaves no empty folder behind, and a waiter takes the lock after the folder went', async () => {
    // Taking the lock makes the folder; a command that changed nothing (a claim on an artifact never
    // installed, a failed first install) must not leave it, empty, to read as an artifact.
    const folder = join(dir, 'app')
    const held = await lockArtifact(folder, { timeoutMs: 0 })
    let waits: () => void = () => undefined
    const told = new Promise<void>((resolve) => {
      waits = resolve
    })
    const waiting = lockArtifact(folder, { timeoutMs: 20_000, onWait: () => waits() })
    await told
    // The waiter made the folder and found it held; the release removes the folder under it.
    await held.release()
    expect(await lstat(folder).catch(() => null)).toBeNull()
    const lock = await waiting
    expect(await readlink(join(folder, 'lock'))).toMatch(new RegExp(`^deltaport-lock:${process.pid}:`))
    await lock.release()
    expect(await lstat(folder).catch(() => null)).toBeNull()
    // A folder with anything in it stays.
    await withArtifactLock(folder, { timeoutMs: 0 }, () => writeFile(join(folder, 'state.json'), '{}'))
    expect(await readFile(join(folder, 'state.json'), 'utf8')).toBe('{}')
  })

  it('waits for another process and takes over at once when it is killed', async () => {
    const child = await holdInChild()
    await busyError(lockArtifact(dir, { timeoutMs: 0 }))
    const waiting = lockArtifact(dir, { timeoutMs: 20_000 })
    child.kill('SIGKILL')
    await once(child, 'exit')
    const lock = await waiting
    expect(await readlink(join(dir, 'lock'))).toMatch(new RegExp(`^deltaport-lock:${process.pid}:`))
    await lock.release()
  })

  it('is a symbolic link naming its holder, short enough to need no data block', async () => {
    const lock = await lockArtifact(dir, { timeoutMs: 0 })
    const path = join(dir, 'lock')
    expect((await lstat(path)).isSymbolicLink()).toBe(true)
    // ext4 keeps a link target under 60 bytes in the inode: taking the lock works on a full disk.
    const target = await readlink(path)
    expect(target).toMatch(/^deltaport-lock:\d+:\d+:[0-9a-f]{16}$/)
    expect(Buffer.byteLength(target)).toBeLessThan(60)
    await lock.release()
    expect(await lstat(path).catch(() => null)).toBeNull()
  })

  it('honours a lock file of JSON, as older agents wrote it, while its holder lives', async () => {
    // The older agent is another process (this one's own pid names only locks this process holds).
    const older = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'])
    children.push(older)
    await once(older, 'spawn')
    await writeLock({ pid: older.pid ?? 0 })
    const error = await busyError(lockArtifact(dir, { timeoutMs: 0 }))
    expect(error.message).toContain(`pid ${older.pid}`)
  })

  it('judges a holder by its start time and boot on Linux: a clock step is no reboot, a reused pid no holder', async () => {
    const child = await holdInChild()
    const path = join(dir, 'lock')
    const target = await readlink(path)
    const match = /^(deltaport-lock:\d+):0(\d{13}):([0-9a-f]{4})([0-9a-f]{8})([0-9a-f]{4})$/.exec(target)
    if (!match) throw new Error(`not a Linux lock target: ${target}`)
    const [, head, booted, nonce, ticks, boot] = match as unknown as string[]
    expect(boot).toBe((await readFile('/proc/sys/kernel/random/boot_id', 'utf8')).slice(0, 4))
    // The wall clock stepped an hour since the child took the lock (NTP's first sync on a device
    // without a battery-backed clock): its boot time reads an hour off, yet the holder lives.
    await rm(path)
    await symlink(`${head}:0${Number(booted) - 3_600_000}:${nonce}${ticks}${boot}`, path)
    await busyError(lockArtifact(dir, { timeoutMs: 0 }))
    // The same pid with another start time is another process: the holder is gone.
    const otherTicks = ((Number.parseInt(ticks ?? '', 16) + 1) % 2 ** 32).toString(16).padStart(8, '0')
    await rm(path)
    await symlink(`${head}:0${booted}:${nonce}${otherTicks}${boot}`, path)
    const lock = await lockArtifact(dir, { timeoutMs: 0 })
    await lock.release()
    // The same pid and start tick in another boot (a device that boots the same way every time): gone.
    const otherBoot = ((Number.parseInt(boot ?? '', 16) + 1) % 0x10000).toString(16).padStart(4, '0')
    await mkdir(dir, { recursive: true })
    await symlink(`${head}:0${booted}:${nonce}${ticks}${otherBoot}`, path)
    await (await lockArtifact(dir, { timeoutMs: 0 })).release()
    child.kill('SIGKILL')
  })

  it('knows a holder by its start time when it took the lock on a clock still at 1970', async () => {
    const child = await holdInChild()
    const path = join(dir, 'lock')
    const match = /^(deltaport-lock:\d+):0\d{13}:([0-9a-f]{16})$/.exec(await readlink(path))
    if (!match) throw new Error('not a Linux lock target')
    const [, head, token] = match as unknown as string[]
    // A device without a battery-backed clock boots at the epoch: its boot time reads 5 s after 1970
    // (zero-led, four digits) until NTP steps the clock decades ahead, while the child holds the lock.
    await rm(path)
    await symlink(`${head}:05000:${token}`, path)
    await busyError(lockArtifact(dir, { timeoutMs: 0 }))
    child.kill('SIGKILL')
  })

  it('names the lock it could not take', async () => {
    await writeFile(join(dir, 'store-is-a-file'), '')
    const error = await agentFailure(lockArtifact(join(dir, 'store-is-a-file', 'app'), { timeoutMs: 0 }))
    expect(error).toMatchObject({ code: 'io', details: { path: join(dir, 'store-is-a-file', 'app') } })
  })

  it('removes a lock whose process is gone or whose machine has rebooted since', async () => {
    await writeLock({ pid: await deadPid() })
    const first = await lockArtifact(dir, { timeoutMs: 0 })
    await first.release()
    // A live pid from before a reboot is some other process now.
    await writeLock({ pid: process.pid, bootedAt: Date.now() - 30 * 86_400_000 })
    const second = await lockArtifact(dir, { timeoutMs: 0 })
    await second.release()
  })

  it("takes over a lock left by an earlier process with this one's pid, still waiting for its own", async () => {
    // A container's agent is pid 1 on every run: one killed holding the lock left it naming pid 1, the
    // pid the next run has. kill(pid, 0) then finds the next run itself alive, and it waited for itself.
    const booted = Math.round(Date.now() - uptime() * 1000)
    await symlink(`deltaport-lock:${process.pid}:${booted}:${'0'.repeat(16)}`, join(dir, 'lock'))
    const lock = await lockArtifact(dir, { timeoutMs: 0 })
    // A lock this process does hold (another task of it, as `deltaport run`'s swap and poll) is waited for.
    await busyError(lockArtifact(dir, { timeoutMs: 0 }))
    await lock.release()
    await (await lockArtifact(dir, { timeoutMs: 0 })).release()
  })

  it("never removes a lock of this process's own tasks as stale, even one released since it was read", async () => {
    // A waiter reads the holder, the holder releases, another task takes the lock: judging the holder
    // read earlier as stale (its lock no longer held) made the waiter move the new holder's lock aside,
    // and a third task could take it before the waiter put it back: two holders at once.
    const first = await lockArtifact(dir, { timeoutMs: 0 })
    const target = await readlink(join(dir, 'lock'))
    await first.release()
    // The link as that waiter read it: this process's, no longer held by any task (in the folder the
    // release removed, empty, and the new holder made again).
    await mkdir(dir, { recursive: true })
    await symlink(target, join(dir, 'lock'))
    await busyError(lockArtifact(dir, { timeoutMs: 0 }))
    expect(await readlink(join(dir, 'lock'))).toBe(target)
    await rm(join(dir, 'lock'))
  })

  it('treats an unreadable lock as being written for a few seconds, then as dead', async () => {
    await writeFile(join(dir, 'lock'), '{"pid": 4')
    const error = await busyError(lockArtifact(dir, { timeoutMs: 0 }))
    expect(error.message).toContain('being written')
    const aMinuteAgo = new Date(Date.now() - 60_000)
    await utimes(join(dir, 'lock'), aMinuteAgo, aMinuteAgo)
    const lock = await lockArtifact(dir, { timeoutMs: 0 })
    await lock.release()
  })

  it('releases only its own lock, not one taken after its own was broken', async () => {
    const mine = await lockArtifact(dir, { timeoutMs: 0 })
    await writeLock({ pid: process.pid })
    await mine.release()
    expect(JSON.parse(await readFile(join(dir, 'lock'), 'utf8'))).toMatchObject({ token: 'theirs' })
  })

  it('stops waiting when the caller aborts', async () => {
    const held = await lockArtifact(dir, { timeoutMs: 0 })
    const controller = new AbortController()
    const waiting = lockArtifact(dir, { timeoutMs: 60_000, signal: controller.signal })
    setTimeout(() => controller.abort(), 50)
    await expect(waiting).rejects.toMatchObject({ name: 'AbortError' })
    await held.release()
  })
})

describe('withOrderedLocks', () => {
  it("lets two commands that each need the other one's lock both finish: the one out of order starts again in order", async () => {
    const a = join(dir, 'a')
    const b = join(dir, 'b')
    const wait = { timeoutMs: 5_000 }
    let aHeld = () => {}
    const aTaken = new Promise<void>((resolve) => {
      aHeld = resolve
    })
    let bHeld = () => {}
    const bTaken = new Promise<void>((resolve) => {
      bHeld = resolve
    })
    const done: string[] = []
    let attempts = 0
    // First holds a and then needs b (in order: it waits); second holds b and then needs a (out of
    // order: it only tries, and starts again taking a, then b). Each waiting for the other, as plain
    // nested locks did, ends busy after the wait.
    const first = withOrderedLocks([a], wait, async (locks) => {
      aHeld()
      await bTaken
      await withArtifactLock(b, { ...wait, locks }, async () => undefined)
      done.push('first')
    })
    const second = withOrderedLocks([b], wait, async (locks) => {
      attempts++
      if (attempts === 1) {
        bHeld()
        await aTaken
      }
      await withArtifactLock(a, { ...wait, locks }, async () => undefined)
      done.push('second')
    })
    await Promise.all([first, second])
    expect(attempts).toBe(2)
    expect(done).toEqual(['first', 'second'])
    // Everything the sets took is released (and the folders, empty, with it).
    for (const folder of [a, b]) expect(await lstat(join(folder, 'lock')).catch(() => null)).toBeNull()
  })
})
