import { readFile, rename, rm, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { RunChildren, RunDeferrals, RunState } from '../../schemas/swap.ts'
import { AgentError, systemError } from '../errors.ts'
import { withArtifactLock } from '../fs/artifact-lock.ts'
import { writeFileAtomic } from '../fs/atomic.ts'
import { unlessMissing } from '../fs/missing.ts'
import { printable } from '../output.ts'
import { TAG_ENV } from './service-process.ts'

/** state.json is changed in milliseconds: a holder this much slower is reported (`busy`), not waited on. */
const STATE_LOCK_WAIT = { timeoutMs: 30_000 }

/** A version that failed a swap on this device; `at` and `reason` are null when recorded before they were. */
export interface FailedVersion {
  version: string
  at: string | null
  reason: string | null
}

/**
 * The supervisor's small files in `<installRoot>/<name>/run/`: the swap journal, versions that failed a
 * swap, swaps deferred and when they are retried, and the pids of the service processes it started (to reap after the agent itself was killed).
 */
export class RunFiles {
  readonly dir: string
  /** Told when a garbled state.json was set aside (its new name in the message); stderr by default. */
  private readonly onWarning: (message: string) => void

  constructor(dir: string, onWarning: (message: string) => void = warnOnStderr) {
    this.dir = dir
    this.onWarning = onWarning
  }

  get journalPath(): string {
    return join(this.dir, 'swap.journal')
  }

  async failedVersions(): Promise<Set<string>> {
    return new Set((await this.state()).failedVersions)
  }

  /**
   * Versions that failed a swap on this device, oldest first, with when and why (null for those
   * recorded before the file said it).
   */
  async failures(): Promise<FailedVersion[]> {
    const { failedVersions, failures } = await this.state()
    return failedVersions.map(
      (version) => failures.find((f) => f.version === version) ?? { version, at: null, reason: null },
    )
  }

  /** Records that `version` failed a swap (`reason`: the swap's detail); kept until `uninstall` or a retry. */
  async addFailed(version: string, reason = 'failed a swap', at = new Date()): Promise<void> {
    await this.changeState(({ failedVersions, failures }) => ({
      failedVersions: [...failedVersions.filter((v) => v !== version), version],
      failures: [
        ...failures.filter((f) => f.version !== version),
        { version, at: at.toISOString(), reason: reason.slice(0, 200) },
      ],
    }))
  }

  /** Forgets a recorded failure (the owner installed the version again on purpose). */
  async forgetFailed(version: string): Promise<boolean> {
    let forgot = false
    await this.changeState(({ failedVersions, failures }) => {
      forgot = failedVersions.includes(version)
      if (!forgot) return null
      return {
        failedVersions: failedVersions.filter((v) => v !== version),
        failures: failures.filter((f) => f.version !== version),
      }
    })
    return forgot
  }

  /** Forgets every recorded failure (`uninstall`). */
  async clearFailures(): Promise<void> {
    // Nothing recorded: no lock either (it would make run/, and the artifact's folder, for nothing).
    if (
      !(await unlessMissing(
        stat(join(this.dir, 'state.json')).then(() => true),
        false,
      ))
    )
      return
    await withArtifactLock(this.dir, STATE_LOCK_WAIT, () => rm(join(this.dir, 'state.json'), { force: true }))
  }

  /**
   * state.json as last recorded; nothing failed when it is missing. One that does not parse (RunState:
   * a torn write by hand, a disk error, another version's format) was read as "nothing recorded" and
   * then overwritten by the next record, the failures it held lost without a word: it is now renamed
   * aside (`state.json.corrupt-<timestamp>`, under run/lock) and the owner warned once, naming it, and
   * the record starts empty. `locked`: the caller holds run/lock already (changeState).
   */
  private async state(locked = false): Promise<RunState> {
    const path = join(this.dir, 'state.json')
    if (locked) return this.readOrSetAside(path)
    return (
      (await readRunState(path)) ??
      withArtifactLock(this.dir, STATE_LOCK_WAIT, () => this.readOrSetAside(path))
    )
  }

  /**
   * Under run/lock: state.json, or when it is (still) garbled, moves it aside (one rename: the file is
   * either where it was or under its new name) and warns; another process may have set it aside, or
   * recorded anew, since an unlocked read, and then what is there now counts.
   */
  private async readOrSetAside(path: string): Promise<RunState> {
    const parsed = await readRunState(path)
    if (parsed !== null) return parsed
    const aside = `${path}.corrupt-${new Date().toISOString().replace(/[:.]/g, '-')}`
    await rename(path, aside)
    this.onWarning(
      `${path} could not be read as a record of failed versions; it was moved to ${aside} and the record starts empty (versions that failed a swap here before may be tried again)`,
    )
    return emptyState()
  }

  /**
   * Reads, changes (null: leaves as it is) and writes state.json under `run/lock`: `run`'s supervisor
   * records a failure while an `install` of a named version forgets another, each in its own process,
   * and two unserialised read-modify-writes lost one of them. Bounded like the schema: the newest 1000
   * versions, details only for those.
   */
  private async changeState(change: (state: RunState) => RunState | null): Promise<void> {
    await withArtifactLock(this.dir, STATE_LOCK_WAIT, async () => {
      const next = change(await this.state(true))
      if (next === null) return
      const kept = next.failedVersions.slice(-1000)
      await writeFileAtomic(
        join(this.dir, 'state.json'),
        JSON.stringify({
          failedVersions: kept,
          failures: next.failures.filter((f) => kept.includes(f.version)).slice(-1000),
        } satisfies RunState),
      )
    })
  }

  /** Deferred swaps as last recorded; none when the file is missing or unreadable. */
  async deferrals(): Promise<RunDeferrals['deferred']> {
    try {
      return RunDeferrals.parse(JSON.parse(await readFile(join(this.dir, 'deferred.json'), 'utf8'))).deferred
    } catch {
      return []
    }
  }

  async recordDeferrals(deferred: RunDeferrals['deferred']): Promise<void> {
    await writeFileAtomic(join(this.dir, 'deferred.json'), JSON.stringify({ deferred: deferred.slice(-64) }))
  }

  async recordChildren(pids: readonly number[], versions: readonly string[] = []): Promise<void> {
    await writeFileAtomic(
      join(this.dir, 'children.json'),
      JSON.stringify({ pids: pids.slice(0, 64), versions: [...new Set(versions)].slice(0, 64) }),
    )
  }

  /**
   * The recorded service processes that are still alive: a `deltaport run` serving the artifact now
   * (or its orphans). A recycled pid counts too, which errs on the side of keeping the artifact.
   */
  async livePids(): Promise<number[]> {
    return (await this.children()).pids.filter((pid) => {
      try {
        process.kill(pid, 0)
        return true
      } catch (error) {
        // EPERM: alive, but someone else's.
        return (error as NodeJS.ErrnoException).code === 'EPERM'
      }
    })
  }

  /** Versions the service processes run (or ran, if the agent was killed since): kept by the store. */
  async versionsInUse(): Promise<string[]> {
    return (await this.children()).versions
  }

  /** children.json as last recorded; none when it is missing or unreadable. */
  private async children(): Promise<RunChildren> {
    try {
      return RunChildren.parse(JSON.parse(await readFile(join(this.dir, 'children.json'), 'utf8')))
    } catch {
      return { pids: [], versions: [] }
    }
  }

  /**
   * Kills service processes a previous (crashed) agent left running. A pid is only killed when its
   * environment carries our supervisor tag, so a recycled pid of someone else's process is left alone.
   */
  async reapOrphans(tag: string): Promise<number[]> {
    const reaped: number[] = []
    for (const pid of (await this.children()).pids) {
      let environ: string
      try {
        environ = await readFile(`/proc/${pid}/environ`, 'latin1')
      } catch {
        continue
      }
      if (!environ.split('\0').includes(`${TAG_ENV}=${tag}`)) continue
      try {
        process.kill(pid, 'SIGKILL')
        reaped.push(pid)
      } catch {
        // Already gone.
      }
    }
    for (const pid of reaped) await waitGone(pid)
    await this.recordChildren([])
    return reaped
  }
}

const emptyState = (): RunState => ({ failedVersions: [], failures: [] })

/**
 * state.json as RunState (empty when missing), or null when it is no JSON or not of that shape. One
 * that is there but cannot be read (EACCES after a restore or a change of the service's user, EISDIR,
 * an I/O error) is no empty record and no garbled one: which versions failed here is unknown, so an
 * `io` error names the file and the way out. Nothing that reads it goes on: `run` reports its update
 * check as failed and keeps serving the version it runs, `install`/`update` exit 10, the daemon stages
 * nothing of that artifact; nothing is set aside or overwritten either (the failures in it still hold).
 */
async function readRunState(path: string): Promise<RunState | null> {
  const text = await unlessMissing(readFile(path, 'utf8'), null).catch((error: unknown) => {
    const system = systemError(error)
    throw new AgentError(
      'io',
      `cannot read ${path}, the record of versions that failed a swap on this device (${system?.reason ?? String(error)}); no update of this artifact is tried until it can be read: make it readable by the user deltaport runs as, or delete it to forget those failures`,
      { path, ...(system ? { errno: system.code } : {}) },
    )
  })
  if (text === null) return emptyState()
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    return null
  }
  const parsed = RunState.safeParse(json)
  return parsed.success ? parsed.data : null
}

function warnOnStderr(message: string): void {
  process.stderr.write(`deltaport: warning: ${printable(message)}\n`)
}

async function waitGone(pid: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    try {
      process.kill(pid, 0)
    } catch {
      return
    }
    // A killed child of a dead parent is reaped by init; until then it shows as a zombie.
    try {
      const stat = await readFile(`/proc/${pid}/stat`, 'latin1')
      if (/\) Z /.test(stat)) return
    } catch {
      return
    }
    await new Promise((r) => setTimeout(r, 10))
  }
}
