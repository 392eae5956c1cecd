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

const StagedEntry = z.object({
  name: ArtifactName,
  version: Version,
  size: ByteSize,
  sha256: Sha256Hex,
  stagedAt: z.number().int().nonnegative(),
  /** Last time the item was staged, re-recommended by the edge, or looked up: the LRU key. */
  lastAccess: z.number().int().nonnegative(),
})
export type StagedEntry = z.infer<typeof StagedEntry>

const StagingIndex = z.object({ items: z.array(StagedEntry).max(4096) })

/**
 * Prefetched, verified artifacts waiting to be installed:
 *   <installRoot>/.staging/<encoded name>/<version>/{blob,manifest.json}  complete or absent (dir rename)
 *   <installRoot>/.staging/.partial/<encoded name>@<version>.part          downloads in progress (resumable)
 *   <installRoot>/.staging/index.json                                     sizes + last access (LRU)
 * The directories are the truth; the index is reconciled against them on every load, so a crash between
 * a rename and an index write, or two processes writing the index, costs at most an LRU timestamp.
 */
export class StagingArea {
  readonly root: string

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

  /** Every complete staged item, oldest access first. */
  async list(): Promise<StagedEntry[]> {
    const indexed = await this.readIndex()
    const byKey = new Map(indexed.map((e) => [key(e.name, e.version), e]))
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
    return found.sort((a, b) => a.lastAccess - b.lastAccess)
  }

  async totalBytes(): Promise<number> {
    return (await this.list()).reduce((sum, e) => sum + e.size, 0)
  }

  async find(name: string, version: string): Promise<StagedEntry | undefined> {
    return (await this.list()).find((e) => e.name === name && e.version === version)
  }

  /** Marks items as recently wanted so LRU eviction keeps them. */
  async touch(items: ReadonlyArray<{ name: string; version: string }>, now = Date.now()): Promise<void> {
    const wanted = new Set(items.map((i) => key(i.name, i.version)))
    const entries = await this.list()
    if (!entries.some((e) => wanted.has(key(e.name, e.version)))) return
    await this.writeIndex(
      entries.map((e) => (wanted.has(key(e.name, e.version)) ? { ...e, lastAccess: now } : e)),
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
    await mkdir(temp)
    try {
      await renameDurably(verifiedBlob, join(temp, 'blob'))
      await writeFileAtomic(join(temp, 'manifest.json'), JSON.stringify(envelope))
      await rm(final, { recursive: true, force: true })
      await rename(temp, final)
    } catch (error) {
      // A full disk mid-assembly: the temp item holds the whole blob and nothing would list it.
      await rm(temp, { recursive: true, force: true }).catch(() => undefined)
      throw error
    }
    await fsyncDir(join(final, '..'))
    const entry: StagedEntry = { name, version, size, sha256, stagedAt: now, lastAccess: now }
    const rest = (await this.list()).filter((e) => !(e.name === name && e.version === version))
    await this.writeIndex([...rest, entry])
    return entry
  }

  async remove(name: string, version: string): Promise<void> {
    await rm(this.itemDir(name, version), { recursive: true, force: true })
    // Fails while other versions of the artifact are staged, which is fine.
    await rmdir(join(this.root, artifactFolder(name))).catch(() => undefined)
    const entries = await this.list()
    await this.writeIndex(entries)
  }

  /**
   * Removes every staged copy and partial download of `name` (uninstall: bytes prefetched for an
   * artifact the device no longer has would otherwise sit there until the LRU evicts them), and the
   * daemon's claims on it, so an item it is fetching right now is dropped, not put in. Call with the
   * artifact's lock held. Returns the versions whose staged copies were removed.
   */
  async removeArtifact(name: string): Promise<string[]> {
    const entries = await this.list()
    const staged = entries.filter((e) => e.name === name).map((e) => e.version)
    if (staged.length > 0) {
      await rm(join(this.root, artifactFolder(name)), { recursive: true, force: true })
      await this.writeIndex(entries.filter((e) => e.name !== name))
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

  /** Evicts least recently used items (never those in `keep`) until the total fits `budgetBytes`. */
  async evictTo(
    budgetBytes: number,
    keep: ReadonlySet<string> = new Set(),
  ): Promise<{ evicted: StagedEntry[]; totalBytes: number }> {
    const entries = await this.list()
    let total = entries.reduce((sum, e) => sum + e.size, 0)
    const evicted: StagedEntry[] = []
    for (const e of entries) {
      if (total <= budgetBytes) break
      if (keep.has(key(e.name, e.version))) continue
      await rm(this.itemDir(e.name, e.version), { recursive: true, force: true })
      total -= e.size
      evicted.push(e)
    }
    if (evicted.length > 0) await this.writeIndex(await this.list())
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
      }
    } catch {
      return null
    }
  }

  private async readIndex(): Promise<StagedEntry[]> {
    try {
      const parsed = StagingIndex.safeParse(JSON.parse(await readFile(this.indexPath, 'utf8')))
      return parsed.success ? parsed.data.items : []
    } catch {
      return []
    }
  }

  /**
   * Writes the index; on a full disk (no-space) leaves it as it was. It only records sizes and LRU
   * times (the directories are the truth, and list() reconciles them), and failing for it failed the
   * daemon's whole cycle on a disk that filled up, every cycle until it had room again, before any
   * eviction could give bytes back (and an uninstall removing staged copies the same way).
   */
  private async writeIndex(items: StagedEntry[]): Promise<void> {
    await makeDirs(this.root)
    await writeFileAtomic(this.indexPath, JSON.stringify({ items })).catch((error: unknown) => {
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
