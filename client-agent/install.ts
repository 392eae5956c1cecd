import { join } from 'node:path'
import { gt, lt } from 'semver'
import { type ArtifactIndex, channelHead, versionEntry, type YankNote } from '../schemas/artifact-index.ts'
import type { ArtifactManifest, SignedManifest } from '../schemas/manifest.ts'
import { deviceArchiveLimits } from './codec/archive-budget.ts'
import type { AgentConfig } from './config.ts'
import { StagingArea } from './daemon/staging.ts'
import {
  checkDependents,
  checkDependentsOfRollback,
  type DependencyOutcome,
  ensureDependencies,
  type InstallDependency,
} from './dependencies.ts'
import {
  discardNeverInstalled,
  finishInterruptedSwitch,
  finishSwitchesNaming,
  type StagedSwitch,
  SwitchPlan,
  switchTogether,
} from './dependency-switch.ts'
import type { DownloadProgress } from './download.ts'
import { downloadVerified, fileHasBytes } from './download.ts'
import { deviceEdgeOptions, EdgeClient } from './edge-client.ts'
import { AgentError } from './errors.ts'
import { type LockSet, type LockWait, withOrderedLocks } from './fs/artifact-lock.ts'
import { DEFAULT_MIN_FREE_BYTES, ensureFreeSpace, sizeIfPresent } from './fs/free-space.ts'
import { makeDirs } from './fs/make-dirs.ts'
import { type MaintainerTrustsNow, maintainerTrustsNow, refreshRootTrust } from './root-trust.ts'
import { ArtifactStore } from './store.ts'
import { type FailedVersion, RunFiles } from './swap/run-files.ts'
import { TelemetryQueue } from './telemetry/queue.ts'
import type { Explanation } from './transfer/controller.ts'
import { transferBoundOf } from './transfer/deadline.ts'
import { LinkMemory } from './transfer/link-memory.ts'
import { distrustedSigners, signatureShortfall, verifyManifest } from './trust.ts'
import { noPlan, type PlanOutcome, updateViaPlan } from './update/plan-update.ts'
import { noteSignedRestore, planYankRetreat, type Retreat } from './yank-retreat.ts'

export interface InstallRequest {
  name: string
  /** A version, a channel name, or nothing for the configured channel. */
  target?: string
  /**
   * The channel a version `target` was chosen for (a rollout names the version of a channel); a channel
   * `target` is its own. The version's signed manifest must list it (see assertSignedForChannel).
   */
  channel?: string
  allowDowngrade?: boolean
  /** Install a version its maintainer yanked (`--allow-yanked`); only a pinned version can be one. */
  allowYanked?: boolean
  signal?: AbortSignal
  onProgress?: (progress: DownloadProgress) => void
  fetchImpl?: typeof fetch
  now?: Date
  /** Skip the planner and download the whole artifact (`--full`). */
  fullOnly?: boolean
  /** How long to wait for another deltaport process changing this artifact (default 10 minutes). */
  lockWaitMs?: number
  /** Told once when another process holds the artifact, naming it. */
  onLockWait?: (holder: string) => void
  /** Switch even if installed artifacts need another range of this one (`--ignore-dependents`). */
  ignoreDependents?: boolean
  /** Artifacts whose install is installing this one as a dependency, outermost first (cycle guard). */
  resolving?: readonly string[]
  /**
   * Set when this install stages a dependency of an update: the version is downloaded, verified and
   * committed, and added to the plan instead of switched to; the outermost install switches them all.
   */
  switchPlan?: SwitchPlan
  /**
   * The locks of the outermost install, which a dependency install takes its lock into (set by
   * installArtifact: every lock of an update is held until it ends, taken in one order).
   */
  locks?: LockSet
  /**
   * A version that failed a swap on this device (`deltaport run` rolled it back; swap/run-files.ts):
   * `skip` stays on the current version when the target resolves to it (`update`, `install` of a
   * channel, a version a rollout chose); `retry` installs it and forgets the record (the owner named
   * the version or passed `--retry-failed`). Unset: the record is not consulted (`run` has its own).
   */
  recordedFailures?: 'skip' | 'retry'
}

/**
 * How long a rollback waits for each answer from the edge (newer roots before, the rollout's report
 * after). A rollback is what an owner reaches for when something is already wrong, often with the
 * network too: an edge that says nothing must not hold it for the usual 30 s a request, before it goes
 * by the roots it knows or after it has switched.
 */
export const ROLLBACK_EDGE_STALL_MS = 5_000

/** Long enough for another process's full download on a slow link; bounded so a stuck one is reported. */
export const DEFAULT_LOCK_WAIT_MS = 10 * 60_000

export interface InstallResult {
  name: string
  version: string
  previous: string | null
  /** `staged`: the daemon had already prefetched and staged exactly this version (zero bytes now). */
  method: 'full' | 'local' | 'delta' | 'chain' | 'chunk-sync' | 'staged'
  bytesDownloaded: number
  /** Cheaper plans that failed (why, in order) before the one that worked, the full download included. */
  fallbacks: string[]
  /**
   * Why the edge's update plan could not be used (a 5xx, a malformed answer, the request not getting
   * through), so the whole artifact was downloaded instead (ADR 0033).
   */
  planFailed?: string
  /** The range controller's last choice and its reasons, when a delta stream was fetched. */
  transfer?: Explanation
  /**
   * Its first plan on the first stream: phase `probe` with the estimates it started from when it was
   * warm-started from what the last transfer from this edge learnt (`<installRoot>/.transfer/links.json`),
   * `startup` when cold.
   */
  transferStart?: Explanation
  /** Older versions deleted after the switch (beyond the config's `keepVersions`). */
  pruned: string[]
  resumedFrom: number
  size: number
  alreadyCurrent: boolean
  /**
   * The installed version was yanked and the channel now points at an older one: nothing was changed
   * (moving back is the owner's call, see `holdOnYanked`), and this says why and what to run.
   */
  yankedCurrent?: YankedCurrent
  /** The installed version's dependencies, each current in a version its range allows. */
  dependencies?: DependencyOutcome[]
  /** The installed version was yanked with its maintainer's signature, so the device moved off it. */
  retreated?: Retreated
  /**
   * The target resolved to a version that failed a swap on this device (`recordedFailures: 'skip'`):
   * nothing changed, `version` is the current one.
   */
  skippedFailed?: FailedVersion
  /** A recorded failure of the installed version was forgotten (`recordedFailures: 'retry'`). */
  retriedFailed?: FailedVersion
}

export interface YankedCurrent extends YankNote {
  version: string
  /** Where the channel points now. */
  head: string
  /** Why the device did not move off it (an unsigned yank, no older version it ran, …). */
  stayed?: string
}

/** The yanked version the device moved off, and the maintainer's signed reason. */
export interface Retreated {
  from: string
  reason: string
  at: string
  /** The destination is a head an unsigned index named (no `indexKeys`; yank-retreat.ts Retreat). */
  unverifiedHead?: true
}

/**
 * Resolves the target, verifies its signed manifest, downloads (resuming) and verifies the bytes,
 * installs them as an immutable version and only then switches `current`. Any failure before the
 * switch leaves the running version exactly as it was. One process at a time per artifact: the store's
 * state is read only once the artifact's lock is held, so a second `update` waiting for a first one
 * finds its result (already current) instead of redoing or racing it. The locks of the dependencies
 * are taken into the same set as the artifact's and held to the end, in one order across processes
 * (withOrderedLocks): two updates each needing the other's artifact never wait on each other; the
 * one that meets the other's lock out of order starts again, waits in order, and finds the work done.
 */
export async function installArtifact(config: AgentConfig, request: InstallRequest): Promise<InstallResult> {
  const store = new ArtifactStore(config.installRoot, request.name)
  if (!request.locks)
    return withOrderedLocks([store.dir], lockWaitOf(request), (locks) =>
      installArtifact(config, { ...request, locks }),
    )
  if (request.switchPlan && request.target !== undefined)
    await stageDependenciesFirst(config, { ...request, target: request.target }, request.switchPlan)
  return store.withLock(lockWaitOf(request), async () => {
    // An update of this artifact and its dependencies was killed while switching them: finish it first
    // (everything was verified and committed before the first switch), before anything reads `current`.
    if (!request.switchPlan) await finishInterruptedSwitch(config, store, lockWaitOf(request))
    // A root rotated or revoked a key since the config was loaded (ADR 0035): trust what it says now.
    const trusted = await refreshRootTrust(config, {
      ...fetchOf(request),
      ...(request.now ? { now: request.now } : {}),
    })
    const plan = request.switchPlan ?? new SwitchPlan()
    try {
      const result = await installLocked(trusted.config, request, store, plan)
      return request.recordedFailures === 'retry' && !result.skippedFailed
        ? await forgetRecordedFailure(store, result)
        : result
    } catch (error) {
      // The outermost install failed: what it staged of dependencies the device never had goes.
      if (!request.switchPlan) await discardNeverInstalled(plan, request.locks)
      throw error
    }
  })
}

/** How an install stages one of its dependencies: installArtifact of the version chosen, in `plan`. */
function stageDependency(config: AgentConfig, request: InstallRequest, plan: SwitchPlan): InstallDependency {
  const resolving = request.resolving ?? []
  return (dep, depVersion) =>
    installArtifact(config, {
      name: dep.name,
      target: depVersion,
      // The signed manifest of what is being installed asks for this range, maybe below the current.
      allowDowngrade: true,
      resolving: [...resolving, request.name],
      switchPlan: plan,
      ...(request.locks ? { locks: request.locks } : {}),
      ...(request.fetchImpl ? { fetchImpl: request.fetchImpl } : {}),
      ...(request.signal ? { signal: request.signal } : {}),
      ...(request.now ? { now: request.now } : {}),
      ...(request.lockWaitMs !== undefined ? { lockWaitMs: request.lockWaitMs } : {}),
      ...(request.onLockWait ? { onLockWait: request.onLockWait } : {}),
    })
}

/**
 * Before a dependency's lock is taken, stages its own dependencies (each under its own lock, taken
 * and released): inside the lock, ensureDependencies then finds them staged and takes no other lock.
 * Why: staging them inside it nested the locks in dependency order (libhttp's held while waiting for
 * libc), while a concurrent update's switch takes them in name order (libc's held while waiting for
 * libhttp): the two waited on each other until the lock wait ran out (busy, nothing switched). The
 * update's locks are now all kept in one ordered set (withOrderedLocks), which alone rules that out;
 * staging leaves first still means a dependency's lock is taken after those of its own dependencies,
 * the order in which they are switched. The signed manifest is fetched and verified here only to read what it depends on;
 * the locked install verifies it again against the state it then reads.
 */
async function stageDependenciesFirst(
  config: AgentConfig,
  request: InstallRequest & { target: string },
  plan: SwitchPlan,
): Promise<void> {
  const trusted = (
    await refreshRootTrust(config, { ...fetchOf(request), ...(request.now ? { now: request.now } : {}) })
  ).config
  const store = new ArtifactStore(trusted.installRoot, request.name)
  const edge = new EdgeClient(trusted.edgeUrl, request.fetchImpl, deviceEdgeOptions(trusted, request.now))
  const version = request.target
  const manifest = await verifyManifest(
    await edge.manifest(request.name, version),
    { name: request.name, version },
    {
      trustedKeys: trusted.trustedKeys,
      threshold: trusted.maintainerThreshold,
      lastSerial: await store.serialFloor(trusted),
      now: request.now ?? new Date(),
      allowDowngrade: true,
    },
  )
  if (manifest.dependencies.length === 0) return
  await ensureDependencies(
    trusted,
    manifest,
    request.resolving ?? [],
    stageDependency(trusted, request, plan),
    plan,
    request.fetchImpl,
  )
}

function fetchOf(request: InstallRequest): { fetchImpl?: typeof fetch } {
  return request.fetchImpl ? { fetchImpl: request.fetchImpl } : {}
}

async function installLocked(
  config: AgentConfig,
  request: InstallRequest,
  store: ArtifactStore,
  plan: SwitchPlan,
): Promise<InstallResult> {
  const edge = new EdgeClient(config.edgeUrl, request.fetchImpl, deviceEdgeOptions(config, request.now))
  const state = await store.state()
  const target = request.target ?? config.channel
  const { version, index } = await resolveTarget(edge, request.name, target, request.allowYanked ?? false)
  // Before the yank checks: moving onto a version known to fail here is no way off a yanked one either.
  if (request.recordedFailures === 'skip' && state.current !== null && version !== state.current) {
    const failed = (await runFilesOf(store).failures()).find((f) => f.version === version)
    if (failed && (await store.has(state.current)))
      return { ...(await onDisk(store, state.current, state.previous, true)), skippedFailed: failed }
  }
  const held = holdOnYanked(index, state.current, target, version)
  let retreat: Retreat | null = null
  if (held && index && state.current && (await store.has(state.current))) {
    const plan = await planYankRetreat(config, store, state, index, version, request.now ?? new Date())
    if ('stayed' in plan) {
      const stayed = await onDisk(store, state.current, state.previous, true)
      return { ...stayed, yankedCurrent: { ...held, stayed: plan.stayed } }
    }
    if (plan.kind === 'rollback') {
      await store.rollback(plan.yankSeen)
      await recordInstall(config, request.name, plan.to, plan.from)
      return { ...(await onDisk(store, plan.to, plan.from, false)), retreated: retreatedNote(plan) }
    }
    retreat = plan
  } else if (index) {
    await noteSignedRestore(config, store, state, index, request.now ?? new Date())
  }
  const envelope = await edge.manifest(request.name, version)
  const manifest = await verifyManifest(
    envelope,
    { name: request.name, version },
    {
      trustedKeys: config.trustedKeys,
      threshold: config.maintainerThreshold,
      lastSerial: await store.serialFloor(config),
      now: request.now ?? new Date(),
      // Moving off a version yanked by signature is the one downgrade the agent makes by itself. And
      // the version already running is no downgrade, as nothing switches: after such a retreat it sits
      // below the floor the yanked release raised, and every poll was refused as a rollback.
      allowDowngrade:
        (request.allowDowngrade ?? false) ||
        retreat !== null ||
        (version === state.current && (await store.has(version))),
    },
  )
  const channel = request.channel ?? (isVersionTarget(target) || target === 'latest' ? undefined : target)
  if (channel !== undefined) assertSignedForChannel(manifest, channel)
  const resolving = request.resolving ?? []
  // A dependency install was chosen against every dependent already (dependencies.ts).
  if (version !== state.current && resolving.length === 0 && !request.ignoreDependents) {
    await checkDependents(config.installRoot, request.name, version)
  }
  // A dependency's own dependencies were staged before its lock was taken (stageDependenciesFirst):
  // for one, this finds them in the plan and keeps them, taking no lock while holding this one.
  const dependencies = await ensureDependencies(
    config,
    manifest,
    resolving,
    stageDependency(config, request, plan),
    plan,
    request.fetchImpl,
  )
  const base = {
    name: manifest.name,
    version,
    // Installing the current version again (repairing it) switches nothing: the one before stays.
    previous: version === state.current ? state.previous : state.current,
    size: manifest.size,
    ...(retreat ? { retreated: retreatedNote(retreat) } : {}),
    ...(dependencies.length > 0 ? { dependencies } : {}),
  }
  /**
   * The switch every install ends with, together with the dependencies staged for it (switchTogether),
   * then the versions beyond `keepVersions` go. A dependency install stages its switch in the plan of
   * the install above it instead.
   */
  const switchTo = async (downloaded: boolean, prefetchHit = false): Promise<{ pruned: string[] }> => {
    const step: StagedSwitch = {
      store,
      manifest,
      from: state.current,
      downloaded,
      activate: async () => {
        await store.activate(manifest, { trust: config, ...(retreat ? { yankSeen: retreat.yankSeen } : {}) })
      },
      settle: async () => {
        await recordInstall(config, manifest.name, version, state.current, prefetchHit)
        // The outermost install prunes after the switch and reports it; a dependency here.
        if (request.switchPlan) await pruneOldVersions(config, store)
      },
    }
    if (request.switchPlan) {
      request.switchPlan.add(step)
      return { pruned: [] }
    }
    await switchTogether(store, plan, step, lockWaitOf(request))
    return { pruned: await pruneOldVersions(config, store) }
  }
  // The version the owner named (not a channel's head, a rollout's choice or a dependency's) is
  // re-hashed even when current: it is how a running version whose bytes changed on disk (bit rot, a
  // hand edit) is repaired, as for any other version still on disk below. Following a channel stays
  // free of hashing the running blob on every poll.
  const ownerNamed = isVersionTarget(target) && request.channel === undefined && !request.switchPlan
  if (
    state.current === version &&
    (await store.has(version)) &&
    !(ownerNamed && !(await intactOnDisk(store, version, manifest)))
  ) {
    // Nothing to switch here; the dependencies staged for it (one of them had moved) still are.
    if (request.switchPlan) request.switchPlan.drop(request.name)
    else await switchTogether(store, plan, null, lockWaitOf(request))
    return {
      ...base,
      // Nothing switched: the version before the running one is still state's previous, not itself.
      previous: state.previous,
      method: 'local',
      ...nothingFetched(),
      alreadyCurrent: true,
      pruned: [],
    }
  }
  // A version still on disk is switched back to only if its bytes are still the signed ones and its
  // manifest still reads (status, rollback, the next update and the serial floor read it); a damaged
  // copy is downloaded again below (the commit replaces its blob and manifest in place).
  if ((await store.has(version)) && (await intactOnDisk(store, version, manifest))) {
    const switched = await switchTo(false)
    return {
      ...base,
      method: 'local',
      ...nothingFetched(),
      alreadyCurrent: false,
      ...switched,
    }
  }
  await store.prepare()
  // A prefetched copy of exactly this version (same sha256, re-hashed) costs nothing to install.
  const stagedBlob = store.workPath(`${version}.staged`)
  if (await new StagingArea(config.installRoot).take(manifest, stagedBlob)) {
    await store.commitVersion(stagedBlob, envelope)
    const switched = await switchTo(true, true)
    return {
      ...base,
      method: 'staged',
      ...nothingFetched(),
      alreadyCurrent: false,
      ...switched,
    }
  }
  // Every path ends with the new version's blob on this disk; a resumed download already holds part.
  await ensureFreeSpace(
    store.dir,
    manifest.size - (await sizeIfPresent(store.partialPath(version))),
    config.minFreeBytes ?? DEFAULT_MIN_FREE_BYTES,
    `installing ${request.name}@${version}`,
  )
  const { planned, fallbacks, planFailed } = request.fullOnly
    ? noPlan()
    : await planCheaperUpdate(config, request, edge, store, manifest, state.current)
  if (planned) {
    await store.commitVersion(planned.blobPath, envelope)
    const switched = await switchTo(true)
    return {
      ...base,
      method:
        planned.strategy === 'chain' ? 'chain' : planned.strategy === 'chunk-sync' ? 'chunk-sync' : 'delta',
      bytesDownloaded: planned.wireBytes,
      resumedFrom: 0,
      alreadyCurrent: false,
      fallbacks,
      ...(planned.transfer ? { transfer: planned.transfer } : {}),
      ...(planned.transferStart ? { transferStart: planned.transferStart } : {}),
      ...switched,
    }
  }
  const partial = store.partialPath(version)
  await makeDirs(store.dir)
  const downloaded = await downloadVerified({
    url: edge.blobUrl(request.name, version),
    partialPath: partial,
    size: manifest.size,
    sha256: manifest.sha256,
    ...(request.fetchImpl ? { fetchImpl: request.fetchImpl } : {}),
    ...(request.signal ? { signal: request.signal } : {}),
    ...(request.onProgress ? { onProgress: request.onProgress } : {}),
    bandwidthCapBps: config.bandwidthCapBps,
    bound: transferBoundOf(config),
  })
  await store.commitVersion(partial, envelope)
  const switched = await switchTo(true)
  return {
    ...base,
    method: 'full',
    ...(planFailed === undefined ? {} : { planFailed }),
    bytesDownloaded: downloaded.fetched,
    resumedFrom: downloaded.resumedFrom,
    alreadyCurrent: false,
    fallbacks:
      downloaded.restartedAfter === undefined
        ? fallbacks
        : [
            ...fallbacks,
            `resume: the ${downloaded.restartedAfter} bytes kept from an earlier download did not verify; downloaded again from byte 0`,
          ],
    ...switched,
  }
}

/** Whether installed `version` still has a readable manifest and the signed bytes. */
async function intactOnDisk(store: ArtifactStore, version: string, manifest: ArtifactManifest) {
  return (
    (await store.manifestOrNull(version)) !== null && (await fileHasBytes(store.blobPath(version), manifest))
  )
}

/** The supervisor's files of the artifact (`<installRoot>/<name>/run/`). */
export function runFilesOf(store: ArtifactStore): RunFiles {
  return new RunFiles(join(store.dir, 'run'))
}

/**
 * The owner installed a version that failed a swap here on purpose: the record goes, so `run` swaps to
 * it (and records it again if it fails again).
 */
async function forgetRecordedFailure(store: ArtifactStore, result: InstallResult): Promise<InstallResult> {
  const files = runFilesOf(store)
  const failed = (await files.failures()).find((f) => f.version === result.version)
  if (!failed) return result
  await files.forgetFailed(result.version)
  return { ...result, retriedFailed: failed }
}

/**
 * Deletes installed versions beyond the config's `keepVersions`, sparing those a `deltaport run` service
 * still runs. The install has already succeeded: a version that cannot be deleted now (a permission
 * changed by hand) is left for the next install to try again rather than failing this one.
 */
async function pruneOldVersions(config: AgentConfig, store: ArtifactStore): Promise<string[]> {
  const inUse = await runFilesOf(store).versionsInUse()
  return store.prune(config.keepVersions, inUse).catch(() => [])
}

/** What the daemon changes when it follows a plan to stage a version instead of installing it. */
export interface PlanPlace {
  workPath: (file: string) => string
  bandwidthCapBps: number
}

/**
 * The cheap path: a delta, a chain, or chunk-sync from the installed version, when the edge has one.
 * No plan means "download it whole" (nothing installed, nothing cheaper, or every cheaper plan failed;
 * the failures are in `fallbacks`). The daemon uses it too, with its own work files and rate cap.
 */
export async function planCheaperUpdate(
  config: AgentConfig,
  request: InstallRequest,
  edge: EdgeClient,
  store: ArtifactStore,
  target: ArtifactManifest,
  current: string | null,
  place: PlanPlace = { workPath: (file) => store.workPath(file), bandwidthCapBps: config.bandwidthCapBps },
): Promise<PlanOutcome> {
  const signed = current && (await store.has(current)) ? (await store.manifestOf(current)).signed : null
  const installed =
    current && signed
      ? { version: current, blobPath: store.blobPath(current), sha256: signed.sha256, size: signed.size }
      : null
  if (!installed) return noPlan()
  return updateViaPlan({
    edge,
    workPath: place.workPath,
    target,
    installed,
    manifestOf: async (version) =>
      verifyManifest(
        await edge.manifest(target.name, version),
        { name: target.name, version },
        // Intermediate versions of a chain are only a means to the target: their hashes are what matters.
        // An older release's manifest may have expired since; the target's own is checked for that.
        {
          trustedKeys: config.trustedKeys,
          threshold: config.maintainerThreshold,
          lastSerial: 0,
          now: request.now ?? new Date(),
          allowDowngrade: true,
          ignoreExpiry: true,
        },
      ),
    archiveLimits: deviceArchiveLimits(config.applyMemoryBytes),
    bandwidthCapBps: place.bandwidthCapBps,
    links: new LinkMemory(config.installRoot),
    bound: transferBoundOf(config),
    ...(request.fetchImpl ? { fetchImpl: request.fetchImpl } : {}),
    ...(request.signal ? { signal: request.signal } : {}),
    ...(request.onProgress
      ? {
          onProgress: (done: number, total: number) =>
            request.onProgress?.({ received: done, total, resumedFrom: 0 }),
        }
      : {}),
  })
}

/**
 * Channel heads and rollout versions come from the edge unsigned; which channels a version was
 * released to is in its signed manifest. Without this check an edge could point `stable` at a version
 * signed for `beta` only (TUF's mix-and-match), and every device following `stable` would take it.
 */
function assertSignedForChannel(manifest: ArtifactManifest, channel: string): void {
  if (manifest.channels.includes(channel)) return
  const listed = manifest.channels.length > 0 ? manifest.channels.join(', ') : 'none'
  throw new AgentError(
    'untrusted-manifest',
    `${manifest.name}@${manifest.version} was not signed for channel "${channel}" (its manifest lists: ${listed}); the edge pointed the channel at it`,
  )
}

/** A target that names a version (anything else is a channel). */
export const isVersionTarget = (target: string) => /^\d+\.\d+\.\d+/.test(target)

/** An install that stayed on, or went back to, a version on disk without asking the edge for it. */
async function onDisk(
  store: ArtifactStore,
  version: string,
  previous: string | null,
  alreadyCurrent: boolean,
): Promise<InstallResult> {
  const { name, size } = (await store.manifestOf(version)).signed
  return { name, version, previous, size, method: 'local', ...nothingFetched(), alreadyCurrent, pruned: [] }
}

/** The fields of an install that fetched nothing (the bytes were already on the device). */
function nothingFetched(): Pick<InstallResult, 'bytesDownloaded' | 'resumedFrom' | 'fallbacks'> {
  return { bytesDownloaded: 0, resumedFrom: 0, fallbacks: [] }
}

/**
 * The version `target` names and the index it was read from. A channel is its head (never a yanked
 * version: the edge moves heads off them), `latest` the highest version not yanked; a pinned version
 * that was yanked is refused unless `allowYanked`.
 */
async function resolveTarget(
  edge: EdgeClient,
  name: string,
  target: string,
  allowYanked: boolean,
): Promise<{ version: string; index: ArtifactIndex | null }> {
  if (isVersionTarget(target)) {
    // Only for the yank note: a pinned version needs nothing else from the index, and the note is
    // advisory (unsigned), so an index that cannot be read does not stop the install; the signed
    // manifest decides.
    const index = allowYanked ? null : await edge.index(name).catch(() => null)
    const yanked = index && versionEntry(index, target)?.yanked
    if (yanked && !allowYanked) {
      throw new AgentError(
        'yanked',
        `${name}@${target} was yanked on ${yanked.at} (${yanked.reason}); pass --allow-yanked to install it anyway`,
        { version: target, yanked },
      )
    }
    return { version: target, index }
  }
  const index = await edge.index(name)
  const version = channelHead(index, target) ?? (target === 'latest' ? newest(index) : undefined)
  if (!version) throw new AgentError('not-found', `${name} has no channel "${target}"`)
  return { version, index }
}

function newest(index: ArtifactIndex): string | undefined {
  return index.versions
    .filter((v) => !v.yanked)
    .map((v) => v.version)
    .reduce<string | undefined>((best, v) => (!best || gt(v, best) ? v : best), undefined)
}

/**
 * When the installed version was yanked and its channel fell back to an older release, the agent does
 * not simply follow. The index that says "yanked" is not signed, so following it down would let whoever
 * controls the edge roll devices back to any older signed release, which the serial check exists to
 * prevent. It moves only on the maintainer's signed statement (yank-retreat.ts); otherwise it stays
 * and says so, and `deltaport rollback` or a pinned `install --allow-downgrade` is the owner's call.
 */
function holdOnYanked(
  index: ArtifactIndex | null,
  current: string | null,
  target: string,
  version: string,
): YankedCurrent | null {
  if (!index || !current || isVersionTarget(target) || !lt(version, current)) return null
  const yanked = versionEntry(index, current)?.yanked
  return yanked ? { version: current, ...yanked, head: version } : null
}

function retreatedNote(retreat: Retreat): Retreated {
  const { from, reason, at, unverifiedHead } = retreat
  return { from, reason, at, ...(unverifiedHead ? { unverifiedHead } : {}) }
}

export interface RollbackOptions extends Pick<InstallRequest, 'lockWaitMs' | 'onLockWait' | 'signal'> {
  /**
   * Switch even when no key trusted now signed the previous version (`--allow-revoked`): the owner's
   * explicit word that bytes only a revoked key vouches for may run again.
   */
  allowRevoked?: boolean
  /** Switch even when installed artifacts need another range of this one (`--ignore-dependents`). */
  ignoreDependents?: boolean
  /** How the edge is asked for newer roots before the key check (tests put a network in between). */
  fetchImpl?: typeof fetch
}

export async function rollbackArtifact(config: AgentConfig, name: string, wait: RollbackOptions = {}) {
  const store = new ArtifactStore(config.installRoot, name)
  if (!(await store.exists())) throw new AgentError('not-found', `${name} is not installed`)
  // An update of it (or of an artifact it is a dependency of) was killed while switching: the set is
  // half switched, and rolling one artifact of it back would act on neither the old set nor the new.
  // Finish it first, as the next install would; the rollback then undoes the finished update.
  const finished = await finishSwitchesNaming(config, name, lockWaitOf(wait))
  return store.withLock(lockWaitOf(wait), async () => {
    const before = await store.state()
    // Nothing to switch back to is the version not being there (not-found), like an artifact never
    // installed; install-failed would say an install went wrong, and none was attempted.
    // Uninstalled since it was installed: what a never-installed artifact says.
    if (!before.current && !before.previous) throw new AgentError('not-found', `${name} is not installed`)
    if (!before.previous)
      throw new AgentError(
        'not-found',
        `${name} has no previous version to roll back to (${before.current} is current, and no version before it is kept)`,
        { current: before.current },
      )
    if (!(await store.has(before.previous)))
      throw new AgentError(
        'not-found',
        `${name}'s previous version ${before.previous} is no longer installed: install it with "deltaport install ${name}@${before.previous}${before.current && lt(before.previous, before.current) ? ' --allow-downgrade' : ''}"`,
        { current: before.current, previous: before.previous },
      )
    if (!wait.ignoreDependents)
      await checkDependentsOfRollback(config.installRoot, name, before.current, before.previous)
    const envelope = await store.manifestOf(before.previous)
    // Revocations published since the last poll count: the edge is asked for newer roots first.
    const known = wait.allowRevoked
      ? null
      : await maintainerTrustsNow(config, {
          stallMs: ROLLBACK_EDGE_STALL_MS,
          ...(wait.fetchImpl ? { fetchImpl: wait.fetchImpl } : {}),
        })
    if (known) await assertStillVouchedFor(name, before.previous, envelope, known)
    if (!(await fileHasBytes(store.blobPath(before.previous), envelope.signed)))
      throw new AgentError(
        'integrity-mismatch',
        `${name}@${before.previous} on disk no longer has the bytes its signed manifest names; nothing was switched. Install it again with "deltaport install ${name}@${before.previous}"`,
      )
    const after = await store.rollback()
    return {
      name,
      from: before.current,
      to: after.current,
      ...(finished.length > 0 ? { finished } : {}),
      ...(known?.unrefreshed ? { revocationsUnrefreshed: known.unrefreshed } : {}),
    }
  })
}

/**
 * Refuses a rollback to a version that only keys this device no longer trusts signed (revoked by a root
 * it has verified, or dropped from its config): a thief's release installed before the rotation must not
 * run again without the owner saying so. Checked against the newest roots the edge serves, or, when it
 * cannot be reached, against those this device verified before, and the caller says so
 * (maintainerTrustsNow, root-trust.ts).
 */
async function assertStillVouchedFor(
  name: string,
  version: string,
  envelope: SignedManifest,
  known: MaintainerTrustsNow,
): Promise<void> {
  const verdict = await distrustedSigners(envelope, known.trusts)
  if (verdict.met) return
  const by =
    verdict.untrusted.length > 0
      ? `; it is signed by ${verdict.untrusted.join(', ')}, no longer trusted (revoked by a newer root or dropped from the config)`
      : ''
  throw new AgentError(
    'untrusted-manifest',
    `${name}@${version} on disk has ${signatureShortfall(verdict.threshold)} now${by}; nothing was switched. Have the maintainers re-sign it (\`deltaport resign ${name}@${version}\`) and run \`deltaport install ${name}@${version} --allow-downgrade\`, or run it anyway with \`deltaport rollback ${name} --allow-revoked\``,
    { version, revokedKeys: verdict.untrusted, threshold: verdict.threshold },
  )
}

export function lockWaitOf(
  request: Pick<InstallRequest, 'lockWaitMs' | 'onLockWait' | 'signal' | 'locks'>,
): LockWait {
  return {
    timeoutMs: request.lockWaitMs ?? DEFAULT_LOCK_WAIT_MS,
    ...(request.locks ? { locks: request.locks } : {}),
    ...(request.signal ? { signal: request.signal } : {}),
    ...(request.onLockWait ? { onWait: request.onLockWait } : {}),
  }
}

/** Access metadata for the aggregation side; never blocks or fails an install. */
async function recordInstall(
  config: AgentConfig,
  name: string,
  version: string,
  previous: string | null,
  prefetchHit = false,
) {
  const kind = previous ? 'update' : 'install'
  const at = new Date().toISOString()
  await new TelemetryQueue(config.installRoot)
    .record([
      { artifact: name, version, at, count: 1, kind },
      ...(prefetchHit ? [{ artifact: name, version, at, count: 1, kind: 'prefetch-hit' as const }] : []),
    ])
    .catch(() => undefined)
}
