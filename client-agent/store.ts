import { lstat, readdir, readFile, readlink, rename, rm, rmdir, symlink } from 'node:fs/promises'
import { join } from 'node:path'
import { gt } from 'semver'
import { z } from 'zod'
import { IsoDateTime, Sha256Hex, Version } from '../schemas/common.ts'
import { type ArtifactManifest, SignedManifest } from '../schemas/manifest.ts'
import { meetsThreshold, type TrustedKey } from '../schemas/signed-envelope.ts'
import { AgentError, fromFileSystemError, namingPath, systemError } from './errors.ts'
import { artifactFolder } from './fs/artifact-folder.ts'
import { type LockWait, withArtifactLock } from './fs/artifact-lock.ts'
import {
  fsyncDir,
  isTempOf,
  removeStaleTemps,
  renameDurably,
  tempPathFor,
  writeFileAtomic,
} from './fs/atomic.ts'
import { makeDirs } from './fs/make-dirs.ts'
import { unlessMissing } from './fs/missing.ts'
import { removeTree } from './fs/remove-tree.ts'
import { type MaintainerTrust, maintainerFingerprint, trustFingerprint } from './trust.ts'

const StoreState = z.object({
  /** Highest manifest serial accepted for this artifact (rollback protection survives restarts). */
  lastSerial: z.number().int().nonnegative(),
  /**
   * maintainerFingerprint of the trust that raised lastSerial (ADR 0037). Under other keys the mark
   * stands only as far as installed manifests those keys accept; absent in stores written before.
   */
  serialTrust: Sha256Hex.optional(),
  current: Version.nullable(),
  previous: Version.nullable(),
  /**
   * Per version, when the newest signed yank or restore this device has acted on was signed: each
   * statement moves a device back at most once, and an older one replayed later is ignored (ADR 0025).
   */
  yankSeen: z.record(Version, IsoDateTime).optional(),
})
export type StoreState = z.infer<typeof StoreState>

/** What the `current` link names and what state.json says (undefined when missing or unreadable). */
interface Recorded {
  linked: string | null
  stored: StoreState | undefined
}

/**
 * index-seen.json: the highest index serial this device verified for the artifact (ADR 0032), and the
 * trustFingerprint of the index keys it verified it with (ADR 0037).
 */
const IndexSeen = z.object({ latestSerial: z.number().int().nonnegative(), keys: Sha256Hex.optional() })

/**
 * The device's versioned store, one folder per artifact:
 *   <root>/<name>/versions/<version>/{blob,manifest.json}  immutable once renamed into place
 *   <root>/<name>/current -> versions/<version>            swapped by atomic symlink rename
 *   <root>/<name>/state.json                               serial high-water mark, current, previous
 *   <root>/<name>/index-seen.json                          highest serial of a verified index (ADR 0032)
 *   <root>/<name>/partial/                                 downloads in progress (resumable)
 *   <root>/<name>/lock                                     the one process changing it (fs/artifact-lock.ts)
 */
export class ArtifactStore {
  readonly dir: string
  readonly name: string

  constructor(root: string, name: string) {
    this.name = name
    this.dir = join(root, artifactFolder(name))
  }

  versionDir(version: string): string {
    return join(this.dir, 'versions', version)
  }

  blobPath(version: string): string {
    return join(this.versionDir(version), 'blob')
  }

  partialPath(version: string): string {
    return join(this.dir, 'partial', `${version}.part`)
  }

  /** What partial/ holds: downloads and scratch files of updates in progress, or of killed ones. */
  async unfinishedWork(): Promise<string[]> {
    return unlessMissing(readdir(join(this.dir, 'partial')), [])
  }

  /** Scratch files of an update in progress (delta payloads, rebuilt outputs); same filesystem as versions/. */
  workPath(file: string): string {
    return join(this.dir, 'partial', file)
  }

  get currentLink(): string {
    return join(this.dir, 'current')
  }

  /**
   * The store's state, with the `current` link as the truth: a switch renames the link first and writes
   * state.json second, so a kill in between leaves state.json one switch behind. Reading it as is would
   * make a later rollback "return" to the version already current (or to one since deleted).
   *
   * state.json is only ever replaced atomically, so a missing or unreadable one means someone removed or
   * edited it. Its serial high-water mark is then rebuilt from the installed versions' manifests (each
   * verified when it was installed) rather than restarting at 0, which would let a replayed older
   * manifest back in.
   */
  async state(): Promise<StoreState> {
    return this.stateOf(await this.recorded())
  }

  /** state() from what the link and state.json say (read once by the caller). */
  private async stateOf({ linked, stored }: Recorded): Promise<StoreState> {
    if (!stored) return { lastSerial: await this.highestInstalledSerial(), current: linked, previous: null }
    if (linked === null || linked === stored.current) return stored
    return {
      ...stored,
      lastSerial: Math.max(stored.lastSerial, await this.serialOf(linked)),
      current: linked,
      previous: stored.current,
    }
  }

  /**
   * The serial below which a manifest is a rollback, for a device that now trusts `trust`. lastSerial
   * holds while the keys that raised it are the ones trusted. After a rotation it may be a floor only the
   * old keys vouched for: a stolen key's one manifest with a huge serial would otherwise refuse every
   * honest release forever (TUF's fast-forward attack; ADR 0037). Then the floor is the highest serial
   * among installed manifests the new trust accepts, and activate records it with the new fingerprint.
   * A state.json without a fingerprint (lost, or written before) is rebuilt the same way.
   */
  async serialFloor(trust: MaintainerTrust): Promise<number> {
    const recorded = await this.recorded()
    return this.floorUnder(trust, recorded.stored, await this.stateOf(recorded))
  }

  /** serialFloor, given state.json as stored and the state() it makes. */
  private floorUnder(
    trust: MaintainerTrust,
    stored: StoreState | undefined,
    state: StoreState,
  ): Promise<number> {
    if (stored?.serialTrust === maintainerFingerprint(trust)) return Promise.resolve(state.lastSerial)
    return this.highestSerialAcceptedBy(trust)
  }

  /**
   * The highest `latestSerial` of a signed index this device verified for the artifact with `indexKeys`,
   * 0 when none: once it has seen a release, an older index replayed to it is refused even before it
   * installs it. A serial seen under other keys (rotated since, maybe stolen: ADR 0037), or with no keys
   * recorded, counts as none. Unreadable means 0 (the installed serial still holds), never an error that
   * would stop updates.
   */
  async indexSerialSeen(indexKeys: readonly TrustedKey[]): Promise<number> {
    const text = await unlessMissing(readFile(join(this.dir, 'index-seen.json'), 'utf8'), null)
    if (text === null) return 0
    try {
      const seen = IndexSeen.parse(JSON.parse(text))
      return seen.keys === trustFingerprint(indexKeys, 1) ? seen.latestSerial : 0
    } catch {
      return 0
    }
  }

  /**
   * Records `serial`, verified with `indexKeys`, as indexSerialSeen; the caller (index-trust.ts) has just
   * read a lower one. Kept apart from state.json and written without the artifact's lock (indexes are
   * read outside installs): two writers racing can at worst leave the lower of two serials both seen,
   * never touch `current`. A store that does not exist yet records nothing, so reading an index never
   * creates its folder.
   */
  async recordIndexSerial(serial: number, indexKeys: readonly TrustedKey[]): Promise<void> {
    const seen: z.infer<typeof IndexSeen> = { latestSerial: serial, keys: trustFingerprint(indexKeys, 1) }
    await unlessMissing(writeFileAtomic(join(this.dir, 'index-seen.json'), JSON.stringify(seen)), undefined)
  }

  /** Versions under versions/; none yet is an empty store, a root that cannot be read is an error. */
  async installedVersions(): Promise<string[]> {
    const entries = await unlessMissing(readdir(join(this.dir, 'versions')), [])
    return entries.filter((v) => Version.safeParse(v).success)
  }

  /**
   * Whether the artifact has a folder in the store at all: nothing was ever installed (or begun)
   * otherwise. Asked before taking the lock by commands that only change what is there: for an
   * artifact without one they have nothing to wait for (the lock would make the folder, and its
   * release remove it again).
   */
  async exists(): Promise<boolean> {
    return (await unlessMissing(lstat(this.dir), null)) !== null
  }

  async has(version: string): Promise<boolean> {
    return (await this.installedVersions()).includes(version)
  }

  /**
   * The signed manifest an installed version was verified against. A missing, unparsable or
   * malformed one (edited, or a damaged disk) is an `io` error naming the file and the way out.
   */
  async manifestOf(version: string): Promise<SignedManifest> {
    const path = join(this.versionDir(version), 'manifest.json')
    const text = await unlessMissing(readFile(path, 'utf8'), null)
    let why = 'is missing'
    if (text !== null) {
      try {
        const parsed = SignedManifest.safeParse(JSON.parse(text))
        if (parsed.success) return parsed.data
        why = 'does not match the manifest schema'
      } catch {
        why = 'is not valid JSON'
      }
    }
    throw new AgentError(
      'io',
      `the installed manifest of ${this.name}@${version} (${path}) ${why}: run "deltaport uninstall ${this.name}" and install it again`,
      { path },
    )
  }

  /** manifestOf, or null when it cannot be read (for listings that must not stop at one damaged version). */
  manifestOrNull(version: string): Promise<SignedManifest | null> {
    return this.manifestOf(version).catch((error: unknown) => {
      if (error instanceof AgentError) return null
      throw error
    })
  }

  async prepare(): Promise<void> {
    await makeDirs(join(this.dir, 'partial'))
    await makeDirs(join(this.dir, 'versions'))
  }

  /**
   * Moves a verified, fsynced blob into an immutable version folder. The folder is assembled under a
   * temp name and renamed in one step, so `versions/<v>` is either complete or absent.
   */
  async commitVersion(verifiedBlob: string, envelope: SignedManifest): Promise<void> {
    const version = envelope.signed.version
    const final = this.versionDir(version)
    if ((await unlessMissing(lstat(final), null))?.isDirectory()) {
      // Installed again over a damaged copy, maybe the one `current` names: its manifest and blob are
      // each replaced by an atomic rename, so the folder is never absent (removing it first left
      // `current` dangling until the new one was renamed in, for good if killed in between).
      await writeFileAtomic(join(final, 'manifest.json'), JSON.stringify(envelope))
      await renameDurably(verifiedBlob, join(final, 'blob'))
      return
    }
    const staging = tempPathFor(final)
    await makeDirs(staging)
    await renameDurably(verifiedBlob, join(staging, 'blob'))
    await writeFileAtomic(join(staging, 'manifest.json'), JSON.stringify(envelope))
    await rm(final, { recursive: true, force: true })
    await rename(staging, final)
    await fsyncDir(join(this.dir, 'versions'))
  }

  /**
   * Points `current` at an installed version: a new symlink renamed over the old one (atomic).
   * `trust`: the keys the manifest was just verified with; the serial floor is raised under them
   * (serialFloor) and recorded with their fingerprint. Without it (switching back to a version installed
   * earlier) the floor stays as it was. `yankSeen` is written in the same state change when a signed
   * yank is the reason (yank-retreat.ts).
   */
  async activate(
    manifest: ArtifactManifest,
    change: { trust?: MaintainerTrust; yankSeen?: StoreState['yankSeen'] } = {},
  ): Promise<StoreState> {
    const { trust, yankSeen } = change
    const recorded = await this.recorded()
    const before = await this.stateOf(recorded)
    const floor = trust
      ? {
          lastSerial: await this.floorUnder(trust, recorded.stored, before),
          serialTrust: maintainerFingerprint(trust),
        }
      : { lastSerial: before.lastSerial }
    await this.pointCurrentAt(manifest.version)
    const after: StoreState = {
      ...before,
      ...(yankSeen ? { yankSeen } : {}),
      ...floor,
      lastSerial: Math.max(floor.lastSerial, manifest.serial),
      current: manifest.version,
      previous: before.current && before.current !== manifest.version ? before.current : before.previous,
    }
    await this.recordSwitch(after, yankSeen !== undefined)
    return after
  }

  /**
   * Switches back to the previous version, which stays installed for exactly this. `yankSeen` is
   * written in the same state change when a signed yank is the reason (yank-retreat.ts).
   */
  async rollback(yankSeen?: StoreState['yankSeen']): Promise<StoreState> {
    const state = await this.state()
    if (!state.previous || !(await this.has(state.previous))) return state
    await this.pointCurrentAt(state.previous)
    const after: StoreState = {
      ...state,
      ...(yankSeen ? { yankSeen } : {}),
      current: state.previous,
      previous: state.current,
    }
    await this.recordSwitch(after, yankSeen !== undefined)
    return after
  }

  /**
   * Deletes `version`, staged for an update that failed, if the artifact still has no current version
   * (nothing ever ran it; see discardNeverInstalled). Call with the artifact's lock held. Returns
   * whether it was deleted.
   */
  async discardStaged(version: string): Promise<boolean> {
    if ((await this.state()).current !== null || !(await this.has(version))) return false
    await this.deleteVersion(version)
    await fsyncDir(join(this.dir, 'versions'))
    return true
  }

  /**
   * Points `current` at versions/<version>: a new link renamed over the old one (atomic). Something
   * else at `current` (a folder put there by hand or by a restored backup) makes the rename fail: that
   * is reported as `io` (exit 10) naming the path and the way out, not as the raw EISDIR, and the temp
   * link is removed, so a failed switch leaves the store exactly as it was.
   */
  private async pointCurrentAt(version: string): Promise<void> {
    const temp = tempPathFor(this.currentLink)
    try {
      await symlink(join('versions', version), temp)
      await rename(temp, this.currentLink)
    } catch (error) {
      await rm(temp, { force: true }).catch(() => undefined)
      throw this.switchFailed(version, error)
    }
    await namingPath(this.dir, fsyncDir(this.dir))
  }

  /** A failed switch of `current` to `version` as the typed error a user can act on. */
  private switchFailed(version: string, error: unknown): unknown {
    const system = fromFileSystemError(error, this.currentLink)
    if (!system) return error
    const what = `cannot switch ${this.name} to ${version}`
    const inTheWay = ['EISDIR', 'ENOTEMPTY', 'EEXIST'].includes(String(system.details.errno))
    return new AgentError(
      system.code,
      inTheWay
        ? `${what}: ${this.currentLink} is a directory, not the link deltaport switches; nothing was switched. Move it out of the way and run the command again`
        : `${what} (nothing was switched): ${system.message}`,
      system.details,
    )
  }

  /**
   * Writes state.json after `current` was switched. On a full disk the switch still stands when the
   * state holds nothing the link does not: state() reads current, previous and the serial high-water
   * mark from the link and the state before it, and the next write catches up. Reporting the switch
   * as failed would be false (the new version already runs). A yank record (ADR 0025) lives only in
   * state.json, so a switch made for one must write it and fails with no-space otherwise.
   */
  private async recordSwitch(after: StoreState, hasYankRecord: boolean): Promise<void> {
    await writeFileAtomic(join(this.dir, 'state.json'), JSON.stringify(after)).catch((error: unknown) => {
      if (hasYankRecord || !(error instanceof AgentError && error.code === 'no-space')) throw error
    })
  }

  /** Records the signed yank statements acted on or seen, with nothing else changed. */
  async noteYankSeen(yankSeen: NonNullable<StoreState['yankSeen']>): Promise<void> {
    const state = await this.state()
    await writeFileAtomic(join(this.dir, 'state.json'), JSON.stringify({ ...state, yankSeen }))
  }

  /**
   * Removes installed versions beyond `keep` (counting `current` and `previous`, what rollback returns
   * to, which always stay), keeping the newest releases by manifest serial; versions in `inUse` (a
   * service still runs them) stay on top of that.
   * Call with the artifact's lock held. Each version folder is renamed aside before it is deleted, so a
   * crash mid-delete never leaves a half version that `has` would report installed; leftovers of such
   * crashes (and of interrupted commits) are swept here too. Returns the versions removed.
   */
  async prune(keep: number, inUse: Iterable<string> = []): Promise<string[]> {
    const state = await this.state()
    const installed = await this.installedVersions()
    const switchable = [state.current, state.previous].filter((v) => v !== null && installed.includes(v))
    const kept = new Set([...switchable, ...inUse])
    const candidates = await Promise.all(
      installed
        .filter((version) => !kept.has(version))
        .map(async (version) => ({ version, serial: await this.serialOf(version) })),
    )
    // Versions in use are kept on top of `keep`, not counted in it.
    const room = Math.max(0, keep - switchable.length)
    const doomed = candidates
      .sort((a, b) => b.serial - a.serial)
      .slice(room)
      .map((c) => c.version)
    for (const version of doomed) await this.deleteVersion(version)
    // The lock is held and this install is done: every temp entry is a leftover now, this process's too.
    const swept = await this.sweepLeftovers(Number.POSITIVE_INFINITY)
    if (state.current !== null) await this.dropStaleWork(state.current)
    if (doomed.length > 0 || swept > 0) await fsyncDir(join(this.dir, 'versions'))
    return doomed
  }

  /**
   * Deletes what earlier updates left in partial/ that no later one can use, now that `current` was
   * switched (lock held): delta payloads, their journals and rebuilt outputs start from a base that is
   * no longer current, and a download of a version at or below `current` will not be resumed. Killed
   * or abandoned updates otherwise left them there for good, each up to an artifact's size. A download
   * of a newer version stays for the update that resumes it. Best effort, like sweepLeftovers.
   */
  private async dropStaleWork(current: string): Promise<void> {
    const partial = join(this.dir, 'partial')
    for (const file of await unlessMissing(readdir(partial), [])) {
      const downloading = /^(.+)\.part$/.exec(file)?.[1]
      if (downloading && Version.safeParse(downloading).success && gt(downloading, current)) continue
      await removeTree(join(partial, file)).catch(() => undefined)
    }
  }

  /**
   * Removes every installed version and download in progress. state.json stays with no current version
   * but its serial high-water mark and yank records: a reinstall must not accept a manifest older than
   * this device already saw (none is written for an artifact that never had one: nothing was seen). Order for crashes: state.json first (while the link still names the
   * version, the link wins and the artifact is still installed), then the link, then each version
   * folder renamed aside and deleted, so no link ever names a half-deleted version. Call with the
   * artifact's lock held. Returns the versions removed.
   */
  async uninstall(): Promise<string[]> {
    const recorded = await this.recorded()
    const before = await this.stateOf(recorded)
    const statePath = join(this.dir, 'state.json')
    const cleared = JSON.stringify({ ...before, current: null, previous: null } satisfies StoreState)
    // Nothing of it ever installed (only a killed first download, or a prefetched copy): no serial to
    // keep, and a state.json would be all that is left of an artifact the device never had.
    const remember = recorded.stored !== undefined || before.current !== null || before.lastSerial > 0
    // On a full disk this first write fails, and uninstall is how the owner frees the disk. The order
    // that matters is link before versions (no link ever names a half-deleted version), so then the
    // link goes first and the state is written once the versions' space is free (at the end).
    const stateWritten = !remember
      ? true
      : await writeFileAtomic(statePath, cleared).then(
          () => true,
          (error: unknown) => {
            if (error instanceof AgentError && error.code === 'no-space') return false
            throw error
          },
        )
    await rm(this.currentLink, { force: true })
    await fsyncDir(this.dir)
    const removed = await this.installedVersions()
    for (const version of removed) await this.deleteVersion(version)
    await rm(join(this.dir, 'versions'), { recursive: true, force: true })
    await rm(join(this.dir, 'partial'), { recursive: true, force: true })
    await fsyncDir(this.dir)
    if (!stateWritten) await writeFileAtomic(statePath, cleared)
    return removed
  }

  /**
   * Renames a version folder aside, then deletes it: a crash or failure mid-delete never leaves a half
   * version that `has` would call installed. A delete that fails even after making the folder writable
   * again (removeTree) leaves the aside name for sweepLeftovers, and says so naming it.
   */
  private async deleteVersion(version: string): Promise<void> {
    const aside = tempPathFor(this.versionDir(version))
    await rename(this.versionDir(version), aside)
    try {
      await removeTree(aside)
    } catch (error) {
      const reason = systemError(error)?.reason ?? String(error)
      throw new AgentError(
        'io',
        `${this.name}@${version} is no longer installed, but its folder could not be deleted (${aside}: ${reason}); the next deltaport command on ${this.name} retries, or delete it by hand`,
        { path: aside },
      )
    }
  }

  /**
   * Runs `work` holding the artifact's lock (fs/artifact-lock.ts), after sweeping what a failed or
   * killed earlier holder left behind: every command that changes the store goes through here.
   */
  async withLock<T>(wait: LockWait, work: () => Promise<T>): Promise<T> {
    return withArtifactLock(this.dir, wait, async () => {
      await this.sweepLeftovers()
      try {
        return await work()
      } finally {
        await this.removeEmptyWorkFolders()
      }
    })
  }

  /**
   * With no version installed, removes versions/ and partial/ if they are empty (rmdir: a download
   * kept to be resumed keeps partial/). A first install that failed after preparing them (bytes that
   * did not verify, a full disk) would otherwise leave them, and so the artifact's folder, which the
   * lock's release removes only when empty. Lock held: every writer of these folders holds it and makes
   * them first. Best effort.
   *
   * An artifact never installed (no state.json either: an uninstall keeps that, with its serials) also
   * loses its index-seen.json. Only a command holding the lock has the folder in which an index read
   * records its serial (recordIndexSerial writes nothing without it), so a failed first install with
   * indexKeys left a record no other read of that index would have made: a folder no command removes
   * (`uninstall` and `status` call the artifact not installed), holding a later first install to the
   * serial this one saw (ADR 0032, amended 2026-11-26).
   */
  private async removeEmptyWorkFolders(): Promise<void> {
    const installed = await this.installedVersions().catch(() => null)
    if (installed === null || installed.length > 0) return
    for (const folder of ['versions', 'partial']) await rmdir(join(this.dir, folder)).catch(() => undefined)
    const recorded = await this.recorded().catch(() => null)
    if (recorded && recorded.linked === null && recorded.stored === undefined && !(await this.hasStateFile()))
      await rm(join(this.dir, 'index-seen.json'), { force: true }).catch(() => undefined)
  }

  /** Whether state.json exists at all (readable or not: one that is garbled still says it was installed). */
  private async hasStateFile(): Promise<boolean> {
    return (await unlessMissing(lstat(join(this.dir, 'state.json')), null)) !== null
  }

  /**
   * Deletes temp entries an earlier lock holder left (a version folder renamed aside whose delete
   * failed or was killed, an interrupted commit's folder, a temp link or state file, an unfinished
   * output in partial/): only tempPathFor's
   * `.<name>.<hex>.tmp` names, and only those older than this process or unchanged for an hour by `now`
   * (ABANDONED_TEMP_MS: a long-running `run` or daemon otherwise kept the temps of every command that
   * failed during its life), never one this process has open, so nothing of the current holder's and
   * never a live `versions/<v>`. Best effort: what cannot be deleted now stays hidden and is tried
   * again by the next command, rather than failing this one. `before`: entries changed before this
   * time (ms since the epoch) count whatever their age. Call with the lock held (the daemon sweeps
   * each artifact it can lock, every cycle). Returns how many were deleted.
   */
  async sweepLeftovers(before = performance.timeOrigin, now = Date.now()): Promise<number> {
    return removeStaleTemps(await this.tempEntries(), before, now)
  }

  /** Whether the store holds any temp entry sweepLeftovers looks at (read without the lock). */
  async hasTempEntries(): Promise<boolean> {
    return (await this.tempEntries()).length > 0
  }

  /** The tempPathFor entries sweepLeftovers may delete: of versions, of `current` and state.json, in partial/. */
  private async tempEntries(): Promise<string[]> {
    const versions = join(this.dir, 'versions')
    const partial = join(this.dir, 'partial')
    return [
      ...(await unlessMissing(readdir(versions), []))
        .filter((entry) => isTempOf(entry, (base) => Version.safeParse(base).success))
        .map((entry) => join(versions, entry)),
      ...(await unlessMissing(readdir(this.dir), []))
        .filter((entry) => isTempOf(entry, (base) => base === 'current' || base === 'state.json'))
        .map((entry) => join(this.dir, entry)),
      // A killed update's unfinished outputs (a rebuild, a journal being rewritten): never resumed, and
      // an update killed on every try (out of memory mid-apply) would add one per try.
      ...(await unlessMissing(readdir(partial), []))
        .filter((entry) => isTempOf(entry, () => true))
        .map((entry) => join(partial, entry)),
    ]
  }

  /** The highest serial among installed manifests for this artifact that `trust` accepts (0 if none). */
  private async highestSerialAcceptedBy(trust: MaintainerTrust): Promise<number> {
    let highest = 0
    for (const version of await this.installedVersions()) {
      const envelope = await this.manifestOrNull(version)
      if (
        envelope?.signed.name === this.name &&
        envelope.signed.serial > highest &&
        (await meetsThreshold(envelope, trust.trustedKeys, trust.maintainerThreshold ?? 1))
      )
        highest = envelope.signed.serial
    }
    return highest
  }

  /** The highest serial among installed manifests that still parse (0 for an empty store). */
  private async highestInstalledSerial(): Promise<number> {
    let highest = 0
    for (const version of await this.installedVersions())
      highest = Math.max(highest, await this.serialOf(version))
    return highest
  }

  /** The serial of an installed version's manifest, 0 when it cannot be read. */
  private serialOf(version: string): Promise<number> {
    return this.manifestOf(version).then(
      (envelope) => envelope.signed.serial,
      () => 0,
    )
  }

  /**
   * Where the `current` link and state.json disagree (a kill between the two writes of a switch, a
   * hand edit), what each says; null when they agree or state.json is missing or unreadable (then only
   * the link speaks). The link is what runs: state() and `status` report it.
   */
  async linkDisagreement(): Promise<{ linked: string | null; recorded: string | null } | null> {
    const { linked, stored } = await this.recorded()
    return stored && stored.current !== linked ? { linked, recorded: stored.current } : null
  }

  /** What the `current` link names and what state.json says (undefined when missing or unreadable). */
  private async recorded(): Promise<Recorded> {
    const linked = await this.currentFromLink()
    const text = await unlessMissing(readFile(join(this.dir, 'state.json'), 'utf8'), null)
    return { linked, stored: text === null ? undefined : parseStoreState(text) }
  }

  /** The version `current` names; none when it is missing, or not a link (EINVAL), or names no version. */
  private async currentFromLink(): Promise<string | null> {
    const target = await unlessMissing(readlink(this.currentLink), null, ['EINVAL'])
    const version = target?.split('/').pop() ?? ''
    return Version.safeParse(version).success ? version : null
  }
}

function parseStoreState(text: string): StoreState | undefined {
  try {
    return StoreState.parse(JSON.parse(text))
  } catch {
    return undefined
  }
}
