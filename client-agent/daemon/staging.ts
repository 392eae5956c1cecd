import { mkdir, readdir, readFile, rename, rm, rmdir, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { z } from 'zod'
import { ArtifactName, ByteSize, Sha256Hex, Version } from '../../schemas/common.ts'
import { type ArtifactManifest, SignedManifest } from '../../schemas/manifest.ts'
import { fileHasBytes } from '../download.ts'
import { AgentError } from '../errors.ts'
import { artifactFolder, artifactOfFolder } from '../fs/artifact-folder.ts'
import {
  fsyncDir,
  isTempOf,
  removeStaleTemps,
  renameDurably,
  tempPathFor,
  writeFileAtomic,
} from '../fs/atomic.ts'
import { makeDirs } from '../fs/make-dirs.ts'
import { unlessMissing } from '../fs/missing.ts'

/**
 * Most items the staging area keeps, whatever their bytes: part of the staging budget, so the index,
 * each listing and each eviction stay bounded in memory (a budget of gigabytes of tiny artifacts could
 * otherwise stage without end). Eviction (evictTo) enforces it, least recently used first, as it does
 * `stagingBudgetBytes`.
 */
export const MAX_STAGED_ITEMS = 16_384

/**
 * Entries the index records: the item cap plus what one cycle may put in before its closing eviction
 * (a prefetch queue holds at most 256 items). An index beyond it keeps its most recently used entries;
 * the rest still sort by the access number each item's folder records (ACCESS_FILE).
 */
const MAX_INDEX_ITEMS = MAX_STAGED_ITEMS + 256

/** Bound on the index file read back: MAX_INDEX_ITEMS entries of at most ~450 bytes each. */
const MAX_INDEX_BYTES = MAX_INDEX_ITEMS * 512

/** In each item's folder: the access number put() gave it, for an item the index does not list. */
const ACCESS_FILE = 'access.json'

const Access = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER)

const StagedEntry = z.object({
  name: ArtifactName,
  version: Version,
  size: ByteSize,
  sha256: Sha256Hex,
  /** Wall-clock time the item was staged (informational: never an ordering key). */
  stagedAt: z.number().int().nonnegative(),
  /** Wall-clock time of its last access (informational: never an ordering key). */
  lastAccess: z.number().int().nonnegative(),
  /**
   * The LRU key: a number the staging area counts up on every put and touch (persisted in the index
   * as `seq`), so a clock stepped back or forward (NTP, a dead RTC battery) never reorders eviction.
   */
  access: Access,
})
export type StagedEntry = z.infer<typeof StagedEntry>

/** Indexes written before the access number ordered by `lastAccess` alone: read as that order. */
const StoredEntry = StagedEntry.extend({ access: Access.optional() })

const StagingIndex = z.object({
  /** The highest access number handed out. */
  seq: Access.optional(),
  items: z.array(StoredEntry).max(MAX_INDEX_ITEMS),
})

interface IndexState {
  seq: number
  items: StagedEntry[]
}

/**
 * Prefetched, verified artifacts waiting to be installed:
 *   <installRoot>/.staging/<encoded name>/<version>/{blob,manifest.json,access.json}  complete or absent (dir rename)
 *   <installRoot>/.staging/.partial/<encoded name>@<version>.part          downloads in progress (resumable)
 *   <installRoot>/.staging/index.json                                     sizes + access numbers (LRU)
 * The directories are the truth; the index is reconciled against them on every load, so a crash between
 * a rename and an index write, or two processes writing the index, costs at most an item's last touch
 * (an item the index lacks sorts by the access number its put recorded in its folder).
 */
export class StagingArea {
  readonly root: string
  /**
   * The daemon's in-memory index of one cycle (refresh()): find() answers from it, after checking the
   * item is still on disk, instead of listing the whole area for each queue item.
   */
  private known: Map<string, StagedEntry> | null = null

  constructor(installRoot: string) {
    this.root = join(installRoot, '.staging')
  }

  itemDir(name: string, version: string): string {
    return join(this.root, artifactFolder(name), version)
  }

  blobPath(name: string, version: string): string {
    return join(this.itemDir(name, version), 'blob')
  }

  partialPath(name: string, version: string): string {
    return join(this.partialDir, `${partialPrefix(name, version)}part`)
  }

  /** Scratch files of a plan followed to stage `name@version` (delta payloads, rebuilt outputs). */
  workPath(name: string, version: string, file: string): string {
    return join(this.partialDir, `${partialPrefix(name, version)}${file}`)
  }

  get partialDir(): string {
    return join(this.root, '.partial')
  }

  /**
   * The daemon's mark that it is staging `name@version`, written and checked under the artifact's
   * lock (daemon.ts). Named like the item's work files, so `removeArtifact` (uninstall, holding that
   * lock) removes it with them, and the daemon, finding it gone when it comes to put the item in,
   * knows the artifact was uninstalled meanwhile and drops what it fetched.
   */
  private claimPath(name: string, version: string): string {
    return this.workPath(name, version, 'claim')
  }

  async claim(name: string, version: string): Promise<void> {
    await this.prepare()
    await writeFile(this.claimPath(name, version), '')
  }

  async isClaimed(name: string, version: string): Promise<boolean> {
    return (await unlessMissing(stat(this.claimPath(name, version)), null)) !== null
  }

  async unclaim(name: string, version: string): Promise<void> {
    await rm(this.claimPath(name, version), { force: true })
  }

  /** Deletes the work files of staging `name@version` (download, plan scratch files, claim). */
  async removeWork(name: string, version: string): Promise<void> {
    const prefix = partialPrefix(name, version)
    for (const file of await fileNames(this.partialDir))
      if (file.startsWith(prefix)) await rm(join(this.partialDir, file), { force: true })
  }

  /** Whether anything of `name` is here: a staged copy, or a download or claim of the daemon's. */
  async holds(name: string): Promise<boolean> {
    if ((await this.list()).some((e) => e.name === name)) return true
    const prefix = `${artifactFolder(name)}@`
    return (await fileNames(this.partialDir)).some((file) => file.startsWith(prefix))
  }

  private get indexPath(): string {
    return join(this.root, 'index.json')
  }

  async prepare(): Promise<void> {
    await makeDirs(this.partialDir)
  }

  /** Every complete staged item, least recently used first. */
  async list(): Promise<StagedEntry[]> {
    return (await this.load()).items
  }

  /** list() with the highest access number handed out (the index's `seq`, or above any item's). */
  private async load(): Promise<IndexState> {
    const index = await this.readIndex()
    const byKey = new Map(index.items.map((e) => [key(e.name, e.version), e]))
    const found: StagedEntry[] = []
    for (const folder of await dirNames(this.root)) {
      const name = artifactOfFolder(folder)
      if (name === null) continue
      for (const version of await dirNames(join(this.root, folder))) {
        if (!Version.safeParse(version).success) continue
        const known = byKey.get(key(name, version))
        if (known) {
          found.push(known)
          continue
        }
        // On disk but not indexed (crash after the rename): rebuild the entry from the files.
        const entry = await this.entryFromDisk(name, version)
        if (entry) found.push(entry)
      }
    }
    const seq = found.reduce((max, e) => Math.max(max, e.access), index.seq)
    return { seq, items: found.sort(lruOrder) }
  }

  async totalBytes(): Promise<number> {
    return (await this.list()).reduce((sum, e) => sum + e.size, 0)
  }

  /**
   * The staged item `name@version`. After refresh(), from the cycle's in-memory index (one listing per
   * cycle, not one per queue item), checked against the disk: an item taken by an install or removed
   * by an uninstall since is not found (and leaves the index).
   */
  async find(name: string, version: string): Promise<StagedEntry | undefined> {
    if (this.known === null) return (await this.list()).find((e) => e.name === name && e.version === version)
    const k = key(name, version)
    const entry = this.known.get(k)
    if (entry === undefined) return undefined
    // take() renames the blob out first, so its absence is what marks an item gone.
    if ((await unlessMissing(stat(this.blobPath(name, version)), null)) === null) {
      this.known.delete(k)
      return undefined
    }
    return entry
  }

  /**
   * Lists the area once into the in-memory index find() answers from until the next refresh (the
   * daemon, once per cycle). This process's put, remove and evictions keep it current; other processes
   * only take items out (install, uninstall), and find() checks each item on disk.
   */
  async refresh(): Promise<void> {
    this.known = byKeyOf(await this.list())
  }

  /** Marks items as recently wanted so LRU eviction keeps them. */
  async touch(items: ReadonlyArray<{ name: string; version: string }>, now = Date.now()): Promise<void> {
    const wanted = new Set(items.map((i) => key(i.name, i.version)))
    const { seq, items: entries } = await this.load()
    if (!entries.some((e) => wanted.has(key(e.name, e.version)))) return
    // One number for the whole batch: the queue's order among them is the daemon's `keep` set's job.
    const access = seq + 1
    await this.writeIndex(
      access,
      entries.map((e) => (wanted.has(key(e.name, e.version)) ? { ...e, lastAccess: now, access } : e)),
    )
  }

  /**
   * Moves a verified, fsynced blob and its verified envelope into place: assembled under a temp name,
   * then one directory rename, so a staged item is either complete or absent.
   */
  async put(verifiedBlob: string, envelope: SignedManifest, now = Date.now()): Promise<StagedEntry> {
    const { name, version, size, sha256 } = envelope.signed
    const final = this.itemDir(name, version)
    await makeDirs(join(final, '..'))
    const temp = tempPathFor(final)
    const before = await this.load()
    const access = before.seq + 1
    await mkdir(temp)
    try {
      await renameDurably(verifiedBlob, join(temp, 'blob'))
      await writeFileAtomic(join(temp, 'manifest.json'), JSON.stringify(envelope))
      await writeFileAtomic(join(temp, ACCESS_FILE), JSON.stringify({ access }))
      await rm(final, { recursive: true, force: true })
      await rename(temp, final)
    } catch (error) {
      // A full disk mid-assembly: the temp item holds the whole blob and nothing would list it.
      await rm(temp, { recursive: true, force: true }).catch(() => undefined)
      throw error
    }
    await fsyncDir(join(final, '..'))
    const entry: StagedEntry = { name, version, size, sha256, stagedAt: now, lastAccess: now, access }
    const rest = before.items.filter((e) => !(e.name === name && e.version === version))
    await this.writeIndex(access, [...rest, entry])
    this.known?.set(key(name, version), entry)
    return entry
  }

  async remove(name: string, version: string): Promise<void> {
    await rm(this.itemDir(name, version), { recursive: true, force: true })
    this.known?.delete(key(name, version))
    // Fails while other versions of the artifact are staged, which is fine.
    await rmdir(join(this.root, artifactFolder(name))).catch(() => undefined)
    const { seq, items } = await this.load()
    await this.writeIndex(seq, items)
  }

  /**
   * Removes every staged copy and partial download of `name` (uninstall: bytes prefetched for an
   * artifact the device no longer has would otherwise sit there until the LRU evicts them), and the
   * daemon's claims on it, so an item it is fetching right now is dropped, not put in. Call with the
   * artifact's lock held. Returns the versions whose staged copies were removed.
   */
  async removeArtifact(name: string): Promise<string[]> {
    const { seq, items: entries } = await this.load()
    const staged = entries.filter((e) => e.name === name).map((e) => e.version)
    if (staged.length > 0) {
      await rm(join(this.root, artifactFolder(name)), { recursive: true, force: true })
      for (const version of staged) this.known?.delete(key(name, version))
      await this.writeIndex(
        seq,
        entries.filter((e) => e.name !== name),
      )
    }
    const prefix = `${artifactFolder(name)}@`
    for (const file of await fileNames(this.partialDir))
      if (file.startsWith(prefix)) await rm(join(this.partialDir, file), { force: true })
    return staged
  }

  /**
   * Takes the staged copy of exactly `target` (same name, version and sha256) out of the staging area:
   * renamed to `dest` first (so a concurrent eviction cannot pull it away mid-check), then hashed.
   * Returns false, leaving nothing behind at `dest`, when there is no such item or its bytes do not verify.
   */
  async take(target: ArtifactManifest, dest: string): Promise<boolean> {
    const dir = this.itemDir(target.name, target.version)
    let staged: SignedManifest
    try {
      staged = SignedManifest.parse(JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')))
    } catch {
      return false
    }
    if (staged.signed.sha256 !== target.sha256 || staged.signed.size !== target.size) return false
    try {
      await rename(join(dir, 'blob'), dest)
    } catch {
      return false
    }
    const ok = await fileHasBytes(dest, target)
    if (!ok) await rm(dest, { force: true })
    await this.remove(target.name, target.version)
    return ok
  }

  /**
   * Evicts least recently used items (never those in `keep`) until the total fits `budgetBytes` and
   * at most `maxItems` (MAX_STAGED_ITEMS) are left.
   */
  async evictTo(
    budgetBytes: number,
    keep: ReadonlySet<string> = new Set(),
    maxItems = MAX_STAGED_ITEMS,
  ): Promise<{ evicted: StagedEntry[]; totalBytes: number }> {
    const entries = await this.list()
    let total = entries.reduce((sum, e) => sum + e.size, 0)
    let count = entries.length
    const evicted: StagedEntry[] = []
    for (const e of entries) {
      if (total <= budgetBytes && count <= maxItems) break
      if (keep.has(key(e.name, e.version))) continue
      await rm(this.itemDir(e.name, e.version), { recursive: true, force: true })
      this.known?.delete(key(e.name, e.version))
      total -= e.size
      count -= 1
      evicted.push(e)
    }
    if (evicted.length > 0) {
      const { seq, items } = await this.load()
      await this.writeIndex(seq, items)
    }
    return { evicted, totalBytes: total }
  }

  /**
   * Deletes what a daemon killed mid-write left: an item assembled under a temp name that put() never
   * renamed into place (a whole artifact's bytes, which list() never shows, so neither the budget nor
   * eviction ever saw it) and an index write never renamed. Call with the daemon lock held, between
   * cycles (no put() of this process in flight): only a daemon puts items, so every temp item is then a
   * dead one's, whatever its time (one written while the clock ran fast is dated after this process started). Index writes also
   * come from installs taking a staged copy, so only those changed before `before` go, or those
   * unchanged for an hour by `now` (ABANDONED_TEMP_MS: a write lives milliseconds; a daemon running for
   * weeks otherwise kept those of installs killed during its life). Returns how many went.
   */
  async sweepLeftovers(before = performance.timeOrigin, now = Date.now()): Promise<number> {
    const temps = (dir: string, names: string[]) =>
      names.filter((entry) => isTempOf(entry, () => true)).map((entry) => join(dir, entry))
    const items: string[] = []
    for (const folder of await dirNames(this.root)) {
      if (artifactOfFolder(folder) === null) continue
      items.push(...temps(join(this.root, folder), await dirNames(join(this.root, folder))))
    }
    const indexWrites = temps(this.root, await entryNames(this.root))
    return (
      (await removeStaleTemps(items, Number.POSITIVE_INFINITY)) +
      (await removeStaleTemps(indexWrites, before, now))
    )
  }

  /** Deletes partial downloads of items no longer wanted (so abandoned partials do not pile up). */
  async prunePartials(wanted: ReadonlyArray<{ name: string; version: string }>): Promise<void> {
    // A wanted item's files all start with its prefix: the full download's .part, and the payloads,
    // journals and rebuilt outputs of a delta or chunk-sync plan (workPath).
    const keep = wanted.map((w) => partialPrefix(w.name, w.version))
    for (const file of await fileNames(this.partialDir)) {
      if (!keep.some((prefix) => file.startsWith(prefix)))
        await rm(join(this.partialDir, file), { force: true })
    }
  }

  private async entryFromDisk(name: string, version: string): Promise<StagedEntry | null> {
    try {
      const dir = this.itemDir(name, version)
      const envelope = SignedManifest.parse(JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')))
      const info = await stat(join(dir, 'blob'))
      if (envelope.signed.name !== name || envelope.signed.version !== version) return null
      const at = Math.floor(info.mtimeMs)
      return {
        name,
        version,
        size: info.size,
        sha256: envelope.signed.sha256,
        stagedAt: at,
        lastAccess: at,
        // The number its put gave it; 0 (least recent) for one staged before access numbers existed.
        access: await this.accessFromDisk(dir),
      }
    } catch {
      return null
    }
  }

  private async accessFromDisk(dir: string): Promise<number> {
    try {
      const parsed = z
        .object({ access: Access })
        .safeParse(JSON.parse(await readFile(join(dir, ACCESS_FILE), 'utf8')))
      return parsed.success ? parsed.data.access : 0
    } catch {
      return 0
    }
  }

  /**
   * The index as last written; empty (every item then rebuilt from its folder) when it is missing,
   * larger than MAX_INDEX_BYTES or malformed. An index from before access numbers gets them in its
   * `lastAccess` order.
   */
  private async readIndex(): Promise<IndexState> {
    try {
      const info = await stat(this.indexPath)
      if (info.size > MAX_INDEX_BYTES) return { seq: 0, items: [] }
      const parsed = StagingIndex.safeParse(JSON.parse(await readFile(this.indexPath, 'utf8')))
      if (!parsed.success) return { seq: 0, items: [] }
      const { seq, items } = parsed.data
      if (items.every((e) => e.access !== undefined)) {
        const entries = items.map((e) => ({ ...e, access: e.access ?? 0 }))
        return { seq: entries.reduce((max, e) => Math.max(max, e.access), seq ?? 0), items: entries }
      }
      const legacy = [...items].sort((a, b) => a.lastAccess - b.lastAccess)
      return { seq: legacy.length, items: legacy.map((e, i) => ({ ...e, access: i + 1 })) }
    } catch {
      return { seq: 0, items: [] }
    }
  }

  /**
   * Writes the index; on a full disk (no-space) leaves it as it was. It only records sizes and LRU
   * times (the directories are the truth, and list() reconciles them), and failing for it failed the
   * daemon's whole cycle on a disk that filled up, every cycle until it had room again, before any
   * eviction could give bytes back (and an uninstall removing staged copies the same way).
   */
  private async writeIndex(seq: number, items: StagedEntry[]): Promise<void> {
    await makeDirs(this.root)
    // Past MAX_INDEX_ITEMS (only between a cycle's puts and its closing eviction) the least recently
    // used entries go: their folders still record the access number their put gave them.
    const kept = [...items].sort(lruOrder).slice(-MAX_INDEX_ITEMS)
    await writeFileAtomic(this.indexPath, JSON.stringify({ seq, items: kept })).catch((error: unknown) => {
      if (!(error instanceof AgentError && error.code === 'no-space')) throw error
    })
  }
}

export function stagingKey(name: string, version: string): string {
  return key(name, version)
}

function key(name: string, version: string): string {
  return `${name}\u0000${version}`
}

function byKeyOf(entries: StagedEntry[]): Map<string, StagedEntry> {
  return new Map(entries.map((e) => [key(e.name, e.version), e]))
}

/** Least recently used first: by access number; ties (one touch, items from before numbers) by name. */
function lruOrder(a: StagedEntry, b: StagedEntry): number {
  if (a.access !== b.access) return a.access - b.access
  const ka = key(a.name, a.version)
  const kb = key(b.name, b.version)
  return ka < kb ? -1 : ka > kb ? 1 : 0
}

async function dirNames(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir, { withFileTypes: true })).filter((d) => d.isDirectory()).map((d) => d.name)
  } catch {
    return []
  }
}

async function entryNames(dir: string): Promise<string[]> {
  return readdir(dir).catch(() => [])
}

async function fileNames(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir, { withFileTypes: true })).filter((d) => d.isFile()).map((d) => d.name)
  } catch {
    return []
  }
}

/**
 * Every scratch file of a staged item starts with this (versions contain no `@`, and
 * encodeURIComponent escapes a scope's, so `<encoded name>@` alone marks one artifact's files).
 */
function partialPrefix(name: string, version: string): string {
  return `${artifactFolder(name)}@${version}.`
}
