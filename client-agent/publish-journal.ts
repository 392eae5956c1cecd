import { createHash } from 'node:crypto'
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { hostname } from 'node:os'
import { join } from 'node:path'
import { z } from 'zod'
import { ArtifactName, Sha256Hex, Version } from '../schemas/common.ts'

/**
 * The publish attempts this machine staged at an edge whose fate the edge has not been told (ADR 0022,
 * amended 2026-11-26). A run that cannot give its attempt up (killed with SIGKILL, crashed, or stopped
 * while the edge was out of reach) leaves the version held at the edge for 30 minutes, and only the
 * attempt's name (the sha256 of the envelope it staged, never served) can free it sooner. So the name
 * is written here before the envelope is sent and removed once the edge has heard of the attempt (it
 * published, refused or gave it up); running the same publish again on this machine gives up what an
 * earlier run left, then publishes.
 *
 * One file per run (`<key>-<pid>.json`): two terminals publishing the same version never overwrite each
 * other's entry, and an entry is acted on only when its run is gone (same host, pid no longer alive),
 * so a publish still under way in another terminal is never given up by this one (its 409 stands).
 */
const Entry = z.strictObject({
  edgeUrl: z.string().max(2048),
  name: ArtifactName,
  version: Version,
  attempt: Sha256Hex,
  pid: z.number().int().positive(),
  host: z.string().max(255),
})
export type JournalEntry = z.infer<typeof Entry>

/** At most this many bytes of an entry are read: anything longer is not one of ours. */
const MAX_ENTRY_BYTES = 4096

export class AttemptJournal {
  private readonly dir: string
  private readonly edgeUrl: string
  private readonly name: string
  private readonly version: string
  private readonly prefix: string
  private readonly own: string

  constructor(dir: string, edgeUrl: string, name: string, version: string) {
    this.dir = dir
    this.edgeUrl = edgeUrl
    this.name = name
    this.version = version
    this.prefix = createHash('sha256')
      .update(JSON.stringify([edgeUrl, name, version]))
      .digest('hex')
      .slice(0, 32)
    this.own = join(dir, `${this.prefix}-${process.pid}.json`)
  }

  /** Notes `attempt` as this run's, before its envelope is sent (replacing an earlier attempt of the run). */
  async record(attempt: string): Promise<void> {
    const entry: JournalEntry = {
      edgeUrl: this.edgeUrl,
      name: this.name,
      version: this.version,
      attempt,
      pid: process.pid,
      host: hostname(),
    }
    await mkdir(this.dir, { recursive: true })
    const temp = `${this.own}.tmp`
    await writeFile(temp, JSON.stringify(entry), { mode: 0o600 })
    await rename(temp, this.own)
  }

  /** This run's attempt is settled at the edge: nothing left to give up. */
  async clear(): Promise<void> {
    await rm(this.own, { force: true })
  }

  /**
   * Attempts of this edge, name and version that earlier runs on this host left unsettled and whose
   * process is gone. Files that are not entries (or not of this publish) are removed; entries of runs
   * still alive, or of another host sharing the directory, are left alone.
   */
  async leftovers(): Promise<{ entry: JournalEntry; remove(): Promise<void> }[]> {
    let files: string[]
    try {
      files = await readdir(this.dir)
    } catch {
      return []
    }
    const found: { entry: JournalEntry; remove(): Promise<void> }[] = []
    for (const file of files) {
      if (!file.startsWith(`${this.prefix}-`) || !file.endsWith('.json')) continue
      const path = join(this.dir, file)
      if (path === this.own) continue
      const remove = () => rm(path, { force: true }).catch(() => undefined)
      const entry = await readEntry(path)
      const mine =
        entry !== null &&
        entry.edgeUrl === this.edgeUrl &&
        entry.name === this.name &&
        entry.version === this.version
      if (!mine) {
        await remove()
        continue
      }
      if (entry.host !== hostname() || processAlive(entry.pid)) continue
      found.push({ entry, remove })
    }
    return found
  }
}

async function readEntry(path: string): Promise<JournalEntry | null> {
  try {
    const text = await readFile(path, 'utf8')
    if (text.length > MAX_ENTRY_BYTES) return null
    const parsed = Entry.safeParse(JSON.parse(text))
    return parsed.success ? parsed.data : null
  } catch {
    return null
  }
}

/** Whether a process with `pid` runs on this host (EPERM: it does, as another user's). */
function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
}
