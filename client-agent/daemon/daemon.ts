import { readdir, rm } from 'node:fs/promises'
import { lt } from 'semver'
import { type ArtifactIndex, versionEntry } from '../../schemas/artifact-index.ts'
import type { SignedManifest } from '../../schemas/manifest.ts'
import type { PlanStrategy } from '../../schemas/plan.ts'
import { PrefetchQueue } from '../../schemas/prefetch.ts'
import { type AgentConfig, type DaemonSettings, daemonSettings } from '../config.ts'
import { deviceFetch } from '../devices/device-fetch.ts'
import { downloadVerified } from '../download.ts'
import { deviceEdgeOptions, EdgeClient } from '../edge-client.ts'
import { AgentError } from '../errors.ts'
import { artifactOfFolder } from '../fs/artifact-folder.ts'
import { type ArtifactLock, lockArtifact } from '../fs/artifact-lock.ts'
import { DEFAULT_MIN_FREE_BYTES, freeBytes, sizeIfPresent } from '../fs/free-space.ts'
import { verifyServedPrefetchQueue } from '../index-trust.ts'
import { planCheaperUpdate, runFilesOf } from '../install.ts'
import { agentClientId } from '../rollout/client-id.ts'
import { refreshRootTrust } from '../root-trust.ts'
import { ArtifactStore } from '../store.ts'
import { TelemetryQueue } from '../telemetry/queue.ts'
import { flushTelemetry, runTelemetryLoop } from '../telemetry/uploader.ts'
import { retryWaitMs } from '../transfer/backoff.ts'
import { transferBoundOf } from '../transfer/deadline.ts'
import { errorFromResponse, retryAfterMs } from '../transfer/error-response.ts'
import { linkSignal } from '../transfer/linked-signal.ts'
import { JSON_LIMITS, readJsonBounded } from '../transfer/read-json.ts'
import { verifyManifest } from '../trust.ts'
import { noPlan } from '../update/plan-update.ts'
import type { ConfigWatch } from './config-watch.ts'
import { lockDaemon } from './daemon-lock.ts'
import { type LoadSampler, type NotIdleReason, notIdleReason, osLoadPerCore } from './idle.ts'
import { installedSlices, mergeSliceQueues } from './installed-slices.ts'
import { StagingArea, stagingKey } from './staging.ts'
import { Wakeup } from './wakeup.ts'

/**
 * Longest wait the edge's `validUntil` can impose: the edge caches a queue for at most an hour. A later
 * time is a broken edge clock or a device clock far behind; honouring it would stop prefetching for good,
 * and past 2^31 - 1 ms Node fires the timer at once, which turned the daemon into a busy loop.
 */
const MAX_EDGE_WAIT_MS = 3_600_000

/**
 * Longest interval between polls, as `daemonIntervalSeconds` allows (a week). `--interval` takes up to
 * seven digits of seconds, and a timer past 2^31 - 1 ms (~24.8 days) would fire at once, every time.
 */
const MAX_INTERVAL_MS = 7 * 24 * 3_600_000

/** The longest wait between two polls while they keep failing: an edge back from an outage is noticed within it. */
const MAX_POLL_BACKOFF_MS = 3_600_000

/** ... and at most this many intervals (a short interval backs off to a short cap). */
const MAX_POLL_BACKOFF_INTERVALS = 8

/**
 * How long the daemon waits after `failures` failed polls in a row (1 for the first): the agent's one
 * back-off (retryWaitMs) on the interval's scale, 2 × the interval after the first failure, doubling,
 * jittered to 50–100 %, up to 8 intervals or an hour, whichever is less; never less than the interval
 * (so a week's interval is never cut short), nor than what the edge asked for (a 429's Retry-After, up
 * to MAX_EDGE_WAIT_MS). An edge that went away and came back is so polled again at most
 * max(interval, min(8 × interval, 1 h)) after it did (a Retry-After of up to an hour aside): with the
 * default 15 min interval, within an hour. A fixed interval had every device polling an edge that was
 * down (or turning them away) as often as one that was up, and all of them together when it returned.
 */
export function pollBackoffMs(
  failures: number,
  intervalMs: number,
  retryAfter = 0,
  random: () => number = Math.random,
): number {
  const capMs = Math.max(intervalMs, Math.min(MAX_POLL_BACKOFF_INTERVALS * intervalMs, MAX_POLL_BACKOFF_MS))
  const backoff = retryWaitMs(failures, 0, { baseMs: intervalMs, maxMs: capMs, random })
  return Math.max(intervalMs, backoff, Math.min(MAX_EDGE_WAIT_MS, retryAfter))
}

/** How long the edge asks the daemon to wait before polling again, bounded to [0, MAX_EDGE_WAIT_MS]. */
function edgeWaitMs(validUntil: string | null, now: number): number {
  const wait = validUntil === null ? 0 : Date.parse(validUntil) - now
  return Number.isFinite(wait) ? Math.min(MAX_EDGE_WAIT_MS, Math.max(0, wait)) : 0
}

export interface DaemonCycleOptions {
  /** Load average per core; the OS 1-minute load by default. */
  loadSampler?: LoadSampler
  fetchImpl?: typeof fetch
  /** Aborts in-flight downloads; their partial files stay and resume next time. */
  signal?: AbortSignal
  now?: () => Date
  /** Post queued telemetry during this cycle (the long-running daemon runs a telemetry loop instead). */
  flushTelemetry?: boolean
  onProgress?: (item: { name: string; version: string }, received: number, total: number) => void
}

export interface ItemRef {
  name: string
  version: string
}

export interface CycleResult {
  polledAt: string
  /** Why nothing was downloaded this cycle (no poll was made), or null. */
  skipped: NotIdleReason | null
  /** Items in the edge's prefetch queue. */
  queued: number
  /**
   * `via`: how the bytes came — the whole artifact, or the edge's plan from the installed version (a
   * delta suggestion is rebuilt into staging from a delta, a chain or chunk-sync); `fallbacks` says why
   * cheaper plans failed, when they did.
   */
  staged: (ItemRef & {
    size: number
    fetched: number
    resumedFrom: number
    via: 'full' | PlanStrategy
    fallbacks?: string[]
  })[]
  /** Queue items that were already staged (their LRU time is refreshed). */
  alreadyStaged: ItemRef[]
  /** Queue items whose version is already installed (kept by `keepVersions`, e.g. after a rollback): nothing to stage. */
  alreadyInstalled: ItemRef[]
  /**
   * Queue items whose version failed a swap on this device (`deltaport run` rolled it back): not
   * staged, as `update` would not install it (`--retry-failed` or naming the version does, and fetches it).
   */
  failedHere: ItemRef[]
  /**
   * Queue items left for later: they do not fit the budget, the host's load rose to
   * `idleLoadPerCore` (`high-load`), the disk is low, or another deltaport process is changing that
   * artifact (`updating`).
   */
  deferred: (ItemRef & { reason: 'over-budget' | 'high-load' | 'low-disk' | 'updating' })[]
  failures: (ItemRef & { code: string; message: string })[]
  evicted: (ItemRef & { size: number })[]
  /**
   * Staged items dropped because that version (or a newer one) is installed or because their
   * artifact's index now marks them yanked, and items fetched this cycle but not put in because their
   * artifact was uninstalled meanwhile (also when the uninstall broke the fetch by deleting its download).
   */
  dropped: ItemRef[]
  stagedCount: number
  stagedBytes: number
  /** The edge asks not to poll again before this. */
  validUntil: string | null
  telemetry: { events: number } | { error: string } | null
  aborted: boolean
}

/**
 * The items naming a version that failed a swap on this device (swap/run-files.ts, read once per
 * artifact), and those of artifacts whose record of failures cannot be read (`io`: which versions
 * failed there is unknown, so none of its items is staged; the other artifacts' cycle goes on).
 */
async function failedHereOf<T extends ItemRef>(
  installRoot: string,
  items: readonly T[],
): Promise<{ failed: T[]; unknown: (T & { error: AgentError })[] }> {
  const failed = new Map<string, Set<string> | AgentError>()
  const out: { failed: T[]; unknown: (T & { error: AgentError })[] } = { failed: [], unknown: [] }
  for (const item of items) {
    let versions = failed.get(item.name)
    if (versions === undefined) {
      versions = await runFilesOf(new ArtifactStore(installRoot, item.name))
        .failedVersions()
        .catch((error: unknown) => {
          if (error instanceof AgentError) return error
          throw error
        })
      failed.set(item.name, versions)
    }
    if (versions instanceof AgentError) out.unknown.push({ ...item, error: versions })
    else if (versions.has(item.version)) out.failed.push(item)
  }
  return out
}

/**
 * One prefetch cycle: housekeeping (drop staged versions already installed, stay within the budget),
 * then, if the device is idle, poll `/v1/prefetch`, drop staged versions their index now marks yanked
 * (dropYanked), and stage each item in queue order: signed manifest
 * verified first, bytes downloaded (resumable, sha256-checked, rate-capped) and renamed into
 * `.staging`. Per-item failures are reported and skipped; a failed poll throws.
 */
export async function runDaemonCycle(
  config: AgentConfig,
  options: DaemonCycleOptions = {},
): Promise<CycleResult> {
  const settings = daemonSettings(config)
  const now = options.now ?? (() => new Date())
  const sample = options.loadSampler ?? osLoadPerCore
  const staging = new StagingArea(config.installRoot)
  // Sends the device credential on prefetch polls (ADR 0026); other requests pass through untouched.
  const edge = new EdgeClient(config.edgeUrl, deviceFetch(config, options.fetchImpl))
  const telemetryQueue = new TelemetryQueue(config.installRoot)
  const result: CycleResult = {
    polledAt: now().toISOString(),
    skipped: null,
    queued: 0,
    staged: [],
    alreadyStaged: [],
    alreadyInstalled: [],
    failedHere: [],
    deferred: [],
    failures: [],
    evicted: [],
    dropped: [],
    stagedCount: 0,
    stagedBytes: 0,
    validUntil: null,
    telemetry: null,
    aborted: false,
  }

  const installed = await installedArtifacts(config.installRoot)
  // Every cycle, so a daemon running for weeks removes what commands that failed meanwhile left (ADR
  // 0021, amended 2026-11-26): the staging area's, and each artifact's that it can lock.
  await staging.sweepLeftovers(performance.timeOrigin, now().getTime())
  await sweepStores(config.installRoot, now().getTime())
  result.dropped = await dropInstalled(staging, installed)
  if (options.flushTelemetry) {
    result.telemetry = await flushTelemetry(telemetryQueue, config.edgeUrl, {
      fetchImpl: deviceFetch(config, options.fetchImpl),
      ...(options.signal ? { signal: options.signal } : {}),
    }).then(
      (flushed) => ({ events: flushed.events }),
      (error: Error) => ({ error: error.message }),
    )
  }

  result.skipped = notIdleReason(settings, sample)
  if (result.skipped !== null) {
    result.evicted = (await staging.evictTo(settings.stagingBudgetBytes)).evicted.map(sized)
    return finish(result, staging)
  }

  // Each poll follows the root chain first (ADR 0035): a key rotated or revoked meanwhile counts now.
  const trust = (
    await refreshRootTrust(config, {
      ...(options.fetchImpl ? { fetchImpl: options.fetchImpl } : {}),
      now: now(),
    })
  ).config
  const queue = await pollQueue(edge, await telemetryQueue.clientId(), installed, config, settings, {
    ...options,
    indexKeys: trust.indexKeys,
    now,
  })
  result.queued = queue.items.length
  result.validUntil = queue.validUntil
  const notInstalled = queue.items.filter((i) => !installed.get(i.name)?.versions.includes(i.version))
  result.alreadyInstalled = queue.items.filter((i) => !notInstalled.includes(i)).map(ref)
  const { failed, unknown } = await failedHereOf(config.installRoot, notInstalled)
  const items = notInstalled.filter((i) => !failed.includes(i) && !unknown.some((u) => u.name === i.name))
  result.failedHere = failed.map(ref)
  result.failures.push(...unknown.map((u) => ({ ...ref(u), code: u.error.code, message: u.error.message })))
  await staging.touch(items, now().getTime())
  await staging.prepare()

  const indexOf = indexesOfThisCycle(
    new EdgeClient(config.edgeUrl, deviceFetch(config, options.fetchImpl), deviceEdgeOptions(trust, now())),
  )
  // Before the queue's items: the budget a yanked copy held is theirs this cycle.
  result.dropped.push(...(await dropYanked(staging, indexOf)))
  const notYanked = yankGuard(indexOf)
  // One listing for the cycle: find() then answers each queue item from it (checked on disk).
  await staging.refresh()
  const higherPriority = new Set<string>()
  for (const [index, item] of items.entries()) {
    higherPriority.add(stagingKey(item.name, item.version))
    if (options.signal?.aborted) {
      result.aborted = true
      break
    }
    const already = await staging.find(item.name, item.version)
    // A full plan's sha256 is the artifact's; a delta plan's is its payload's (the staged copy was
    // checked against the signed manifest when it was staged, and install re-hashes it anyway).
    if (already && (item.plan.kind !== 'full' || already.sha256 === item.plan.sha256)) {
      result.alreadyStaged.push(ref(item))
      continue
    }
    const store = new ArtifactStore(config.installRoot, item.name)
    let claimed = false
    let unlink = () => {}
    try {
      if (await changedElsewhere(store)) {
        result.deferred.push({ ...ref(item), reason: 'updating' })
        continue
      }
      await notYanked(item)
      const envelope = await edge.manifest(item.name, item.version)
      const manifest = await verifyManifest(
        envelope,
        { name: item.name, version: item.version },
        {
          trustedKeys: trust.trustedKeys,
          threshold: trust.maintainerThreshold,
          lastSerial: await store.serialFloor(trust),
          now: now(),
          allowDowngrade: false,
        },
      )
      if (item.plan.kind === 'full' && item.plan.sha256 !== manifest.sha256) {
        throw new AgentError(
          'integrity-mismatch',
          `the prefetch plan for ${item.name}@${item.version} disagrees with its signed manifest`,
        )
      }
      if (manifest.size > settings.stagingBudgetBytes) {
        result.deferred.push({ ...ref(item), reason: 'over-budget' })
        continue
      }
      const room = await staging.evictTo(settings.stagingBudgetBytes - manifest.size, higherPriority)
      result.evicted.push(...room.evicted.map(sized))
      if (room.totalBytes + manifest.size > settings.stagingBudgetBytes) {
        result.deferred.push({ ...ref(item), reason: 'over-budget' })
        continue
      }
      if (notIdleReason(settings, sample) !== null) {
        result.deferred.push(...items.slice(index).map((i) => ({ ...ref(i), reason: 'high-load' as const })))
        break
      }
      // Prefetching is optional: it keeps twice the install floor free, so an update it did not
      // foresee (or the service's own data) still fits after it. The bytes of a download begun
      // earlier are on the disk already; without room for the rest they are given back, not kept
      // (resumable, up to the artifact's size) for as long as the disk stays low.
      const partial = staging.partialPath(item.name, item.version)
      const kept = Math.min(manifest.size, await sizeIfPresent(partial))
      if (!(await roomFor(config, manifest.size - kept))) {
        await staging.removeWork(item.name, item.version)
        result.deferred.push({ ...ref(item), reason: 'low-disk' })
        continue
      }
      if (!(await claimUnlessChanging(store, staging, item))) {
        result.deferred.push({ ...ref(item), reason: 'updating' })
        continue
      }
      claimed = true
      const claim = whileClaimed(staging, item, options)
      unlink = claim.release
      // A delta suggestion: follow the edge's plan from the installed version, so prefetching moves the
      // bytes the queue ranked the item by, not the whole artifact; in staging's own work files, so an
      // update running meanwhile never shares one.
      const byPlan =
        item.plan.kind === 'delta'
          ? await planCheaperUpdate(
              config,
              {
                name: item.name,
                now: now(),
                fetchImpl: claim.fetchImpl,
                signal: claim.signal,
                onProgress: (p) => options.onProgress?.(item, p.received, p.total),
              },
              new EdgeClient(config.edgeUrl, deviceFetch(config, claim.fetchImpl)),
              store,
              manifest,
              installed.get(item.name)?.current ?? null,
              {
                workPath: (file) => staging.workPath(item.name, item.version, file),
                bandwidthCapBps: settings.bandwidthCapBps,
              },
            )
          : noPlan()
      const fallbacks = byPlan.fallbacks.length > 0 ? { fallbacks: byPlan.fallbacks } : {}
      const putIn = async (blobPath: string): Promise<boolean> => {
        const outcome = await commitStaged(store, staging, item, blobPath, envelope, now().getTime())
        if (outcome === 'uninstalled') result.dropped.push(ref(item))
        if (outcome === 'locked') result.deferred.push({ ...ref(item), reason: 'updating' })
        return outcome === 'staged'
      }
      if (byPlan.planned) {
        if (!(await putIn(byPlan.planned.blobPath))) continue
        result.staged.push({
          ...ref(item),
          size: manifest.size,
          fetched: byPlan.planned.wireBytes,
          resumedFrom: 0,
          via: byPlan.planned.strategy,
          ...fallbacks,
        })
        continue
      }
      const downloaded = await downloadVerified({
        url: edge.blobUrl(item.name, item.version),
        partialPath: partial,
        size: manifest.size,
        sha256: manifest.sha256,
        bandwidthCapBps: settings.bandwidthCapBps,
        bound: transferBoundOf(config),
        fetchImpl: claim.fetchImpl,
        signal: claim.signal,
        ...(options.onProgress ? { onProgress: (p) => options.onProgress?.(item, p.received, p.total) } : {}),
      })
      if (!(await putIn(partial))) continue
      result.staged.push({ ...ref(item), size: manifest.size, ...downloaded, via: 'full', ...fallbacks })
    } catch (error) {
      if (options.signal?.aborted) {
        result.aborted = true
        break
      }
      // `deltaport uninstall` removed the item's download (and its claim) under the fetch, which then
      // failed: the uninstall won, and that is no failure of the daemon's.
      if (claimed && !(await staging.isClaimed(item.name, item.version))) {
        await dropUninstalled(store, staging, item)
        result.dropped.push(ref(item))
        continue
      }
      const e = error instanceof Error ? error : new Error(String(error))
      result.failures.push({
        ...ref(item),
        code: error instanceof AgentError ? error.code : 'internal',
        message: e.message,
      })
    } finally {
      unlink()
    }
  }

  if (!result.aborted) {
    // Partials of items the edge no longer suggests would otherwise stay forever.
    await staging.prunePartials(items)
    result.evicted.push(
      ...(await staging.evictTo(settings.stagingBudgetBytes, higherPriority)).evicted.map(sized),
    )
  }
  return finish(result, staging)
}

export interface DaemonOptions extends Omit<DaemonCycleOptions, 'signal' | 'flushTelemetry'> {
  signal: AbortSignal
  once?: boolean
  intervalSeconds?: number
  /** Called after every cycle with when the next one is due (null with `once`). */
  onCycle?: (result: CycleResult, nextPollAt: Date | null) => void
  /** A cycle that failed as a whole (the poll) or a telemetry flush that failed; the daemon carries on. */
  onError?: (error: Error, nextPollAt: Date | null) => void
  /** The config file, looked at before each cycle (not with `once`); a valid change is taken. */
  configWatch?: ConfigWatch
  /**
   * A change of the config file: taken (`reloaded`, the config now in force), or not (`error`: it does
   * not parse or validate, or names another installRoot), the last good config running on. Once per change.
   */
  onConfig?: (event: { path: string; reloaded: AgentConfig } | { path: string; error: AgentError }) => void
  /** Ends a wait between cycles early (SIGHUP): the config file is looked at and the edge polled at once. */
  wakeup?: Wakeup
}

/**
 * `deltaport daemon`: prefetch cycles every `intervalSeconds` (never before the queue's `validUntil`;
 * backing off while they fail) with a telemetry loop alongside, until `signal` aborts; with
 * `configWatch`, a config file changed meanwhile is taken before the next cycle (onConfig). With
 * `once`: one cycle, telemetry flushed in it, errors thrown.
 */
export async function runDaemon(config: AgentConfig, options: DaemonOptions): Promise<CycleResult | null> {
  const lock = await lockDaemon(config.installRoot)
  try {
    return await runDaemonLocked(config, options)
  } finally {
    await lock.release()
  }
}

async function runDaemonLocked(initial: AgentConfig, options: DaemonOptions): Promise<CycleResult | null> {
  const { once, intervalSeconds, onCycle, onError, configWatch, onConfig, wakeup, ...cycleOptions } = options
  if (once) {
    const result = await runDaemonCycle(initial, { ...cycleOptions, flushTelemetry: true })
    onCycle?.(result, null)
    return result
  }
  let config = initial
  // One way to wait between cycles, woken early or not (SIGHUP: commands/daemon.ts).
  const waits = wakeup ?? new Wakeup()
  const intervalOf = (c: AgentConfig) =>
    Math.min(MAX_INTERVAL_MS, (intervalSeconds ?? daemonSettings(c).intervalSeconds) * 1000)
  let intervalMs = intervalOf(config)
  /** The telemetry loop under the config in force; started again when a reload changes what it uses. */
  const telemetryOf = (c: AgentConfig, everyMs: number) => {
    const stop = linkSignal(options.signal)
    const done = runTelemetryLoop(new TelemetryQueue(c.installRoot), c.edgeUrl, {
      intervalMs: everyMs,
      signal: stop.signal,
      onError: (error) => onError?.(error, null),
      fetchImpl: deviceFetch(c, options.fetchImpl),
    }).finally(stop.release)
    return { stop, done, uses: telemetryUses(c, everyMs) }
  }
  let telemetry = telemetryOf(config, intervalMs)
  /** Loops stopped by a reload, still finishing a flush: awaited when the daemon stops. */
  const retired: Promise<void>[] = []
  let last: CycleResult | null = null
  /** Failed cycles in a row: the polls back off while the edge is away (pollBackoffMs). */
  let failures = 0
  while (!options.signal.aborted) {
    // Before each cycle: a changed config file is taken for this cycle on (ADR 0006, amended).
    const looked = configWatch ? await configWatch.check() : ({ kind: 'unchanged' } as const)
    if (configWatch && looked.kind === 'invalid') onConfig?.({ path: configWatch.path, error: looked.error })
    if (configWatch && looked.kind === 'changed') {
      const refused = unreloadable(config, looked.config, configWatch.path)
      if (refused) onConfig?.({ path: configWatch.path, error: refused })
      else {
        config = looked.config
        intervalMs = intervalOf(config)
        if (telemetryUses(config, intervalMs) !== telemetry.uses) {
          telemetry.stop.abort()
          retired.push(telemetry.done)
          telemetry = telemetryOf(config, intervalMs)
        }
        onConfig?.({ path: configWatch.path, reloaded: config })
      }
    }
    let waitMs = intervalMs
    try {
      last = await runDaemonCycle(config, cycleOptions)
      failures = 0
      waitMs = Math.max(intervalMs, edgeWaitMs(last.validUntil, Date.now()))
      if (!options.signal.aborted) onCycle?.(last, new Date(Date.now() + waitMs))
    } catch (error) {
      if (options.signal.aborted) break
      failures++
      // A rate-limited poll (429) says when the edge will plan for this client again.
      waitMs = pollBackoffMs(failures, intervalMs, retryAfterMs(error))
      onError?.(error instanceof Error ? error : new Error(String(error)), new Date(Date.now() + waitMs))
    }
    await waits.wait(waitMs, options.signal)
  }
  await Promise.all([telemetry.done, ...retired])
  return last
}

/** What the telemetry loop was started with: a reload that changes none of it leaves the loop (and its back-off) alone. */
function telemetryUses(config: AgentConfig, intervalMs: number): string {
  return JSON.stringify([config.edgeUrl, config.enrollmentCode ?? null, intervalMs])
}

/**
 * Why a valid new config cannot be taken while the daemon runs, or null. Its installRoot: the daemon
 * holds that store's daemon lock and works in its staging area, so another store needs a restart (the
 * new config is then not taken at all, rather than half of it).
 */
function unreloadable(running: AgentConfig, next: AgentConfig, path: string): AgentError | null {
  if (next.installRoot === running.installRoot) return null
  return new AgentError(
    'config',
    `${path} now names installRoot ${next.installRoot}; a running daemon keeps ${running.installRoot} (it holds that store's lock): restart it to use the new config`,
    { path },
  )
}

interface InstalledArtifact {
  current: string | null
  versions: string[]
}

/** Every artifact in the store with its current version and installed versions. */
async function installedArtifacts(installRoot: string): Promise<Map<string, InstalledArtifact>> {
  const out = new Map<string, InstalledArtifact>()
  let entries: string[]
  try {
    entries = (await readdir(installRoot, { withFileTypes: true }))
      .filter((d) => d.isDirectory())
      .map((d) => d.name)
  } catch {
    return out
  }
  for (const folder of entries) {
    const name = artifactOfFolder(folder)
    if (name === null) continue
    const store = new ArtifactStore(installRoot, name)
    const versions = await store.installedVersions()
    if (versions.length === 0) continue
    out.set(name, { current: (await store.state()).current, versions })
  }
  return out
}

/**
 * Sweeps each artifact's abandoned temp entries (ArtifactStore.sweepLeftovers: older than this daemon,
 * or unchanged for an hour by `now`) under its lock, taken only when it has some and nobody holds it:
 * a holder may be writing them, and is left to sweep them itself. Commands sweep on taking the lock
 * anyway; an artifact nothing changes for weeks otherwise kept what a killed command left there (a
 * version folder renamed aside, a half-rebuilt output in partial/, each up to an artifact's size).
 * Best effort: a store that cannot be read or locked is for the cycle's other steps to report.
 */
async function sweepStores(installRoot: string, now: number): Promise<void> {
  const folders = await readdir(installRoot, { withFileTypes: true }).catch(() => [])
  for (const folder of folders) {
    const name = folder.isDirectory() ? artifactOfFolder(folder.name) : null
    if (name === null) continue
    const store = new ArtifactStore(installRoot, name)
    if (!(await store.hasTempEntries().catch(() => false))) continue
    const lock = await lockUnlessBusy(store).catch(() => null)
    if (lock === null) continue
    try {
      await store.sweepLeftovers(performance.timeOrigin, now).catch(() => 0)
    } finally {
      await lock.release()
    }
  }
}

/** Staged versions that are installed, or older than what runs, will never be used: drop them. */
async function dropInstalled(
  staging: StagingArea,
  installed: Map<string, InstalledArtifact>,
): Promise<ItemRef[]> {
  const dropped: ItemRef[] = []
  for (const e of await staging.list()) {
    const have = installed.get(e.name)
    if (!have) continue
    if (have.versions.includes(e.version) || (have.current !== null && lt(e.version, have.current))) {
      await staging.remove(e.name, e.version)
      dropped.push(ref(e))
    }
  }
  return dropped
}

/**
 * The prefetch queue is verified only on devices that pin indexKeys (pollQueue), and even a signed one
 * may be up to an hour old (the edge's cache, the statement's lifetime): a queue from before a yank, or
 * on an unpinned device anything in the path, could name a version its maintainer has yanked. Its
 * bytes would verify (the manifest stays signed) and install would never take them (targets resolve through the index, which skips yanked versions),
 * but fetching them wastes the device's bandwidth and staging budget. So each artifact's index is read
 * once per cycle, as installs read it (a fresh signed statement when the device pins indexKeys), and an
 * item it marks yanked is refused before a byte of it moves. An index that cannot be read fails the item.
 */
function yankGuard(indexOf: IndexOf): (item: { name: string; version: string }) => Promise<void> {
  return async ({ name, version }) => {
    const yanked = versionEntry(await indexOf(name), version)?.yanked
    if (yanked)
      throw new AgentError(
        'yanked',
        `the prefetch queue names ${name}@${version}, which its index marks yanked (${yanked.reason}); not staged`,
      )
  }
}

/** An artifact's index, read at most once per cycle (a failed read stays failed for the cycle). */
type IndexOf = (name: string) => Promise<ArtifactIndex>

function indexesOfThisCycle(indexes: EdgeClient): IndexOf {
  const read = new Map<string, Promise<ArtifactIndex>>()
  return (name) => {
    let index = read.get(name)
    if (index === undefined) {
      index = indexes.index(name)
      // Awaited by each caller; a rejection nobody has awaited yet is not unhandled.
      index.catch(() => undefined)
      read.set(name, index)
    }
    return index
  }
}

/**
 * Staged versions their artifact's index (read as yankGuard reads it) now marks yanked. Install never
 * takes one (targets resolve through the index, which skips yanked versions; a pinned one with
 * `--allow-yanked` downloads it), so a copy staged before its yank only held the staging budget until
 * the LRU reached it, and the edge's queue, no longer naming it, never touched it. One index read per
 * staged artifact per cycle, only when the cycle polls (the device is idle). An index that cannot be
 * read (the edge out of reach, no fresh statement under indexKeys) drops nothing: a restored version's
 * copy is worth keeping, and LRU eviction still applies.
 */
async function dropYanked(staging: StagingArea, indexOf: IndexOf): Promise<ItemRef[]> {
  const dropped: ItemRef[] = []
  for (const e of await staging.list()) {
    const index = await indexOf(e.name).catch(() => null)
    if (index === null || !versionEntry(index, e.version)?.yanked) continue
    await staging.remove(e.name, e.version)
    dropped.push(ref(e))
  }
  return dropped
}

/**
 * The edge's prefetch queue for this device, planned for every installed artifact: one poll per slice of
 * at most MAX_INSTALLED_PARAM of them (installed-slices.ts; the edge refuses more per request), the
 * queues merged. With `indexKeys` only queues signed for this device, covering exactly what they say,
 * and fresh (index-trust.ts verifyServedPrefetchQueue, ADR 0034 amended): anything else fails the poll
 * (`untrusted-index`, reported like any failed poll) before a byte of any item moves. Without, each is
 * taken as sent. Any slice's poll failing fails the poll.
 */
async function pollQueue(
  edge: EdgeClient,
  clientId: string,
  installed: Map<string, InstalledArtifact>,
  config: AgentConfig,
  settings: DaemonSettings,
  options: DaemonCycleOptions & Pick<AgentConfig, 'indexKeys'> & { now: () => Date },
): Promise<PrefetchQueue> {
  const current = [...installed.entries()].flatMap(([name, a]) =>
    a.current === null ? [] : [{ name, version: a.current }],
  )
  const polled: { slice: string[]; queue: PrefetchQueue }[] = []
  for (const slice of installedSlices(current)) {
    polled.push({ slice, queue: await pollSlice(edge, clientId, slice, config, settings, options) })
  }
  return mergeSliceQueues(polled)
}

async function pollSlice(
  edge: EdgeClient,
  clientId: string,
  slice: string[],
  config: AgentConfig,
  settings: DaemonSettings,
  options: DaemonCycleOptions & Pick<AgentConfig, 'indexKeys'> & { now: () => Date },
): Promise<PrefetchQueue> {
  const params = new URLSearchParams({
    client: clientId,
    channel: config.channel,
    budget: String(settings.stagingBudgetBytes),
  })
  if (slice.length > 0) params.set('installed', slice.join(','))
  const response = await edge.request(`/v1/prefetch?${params}`, {
    ...(options.signal ? { signal: options.signal } : {}),
  })
  if (!response.ok) throw await errorFromResponse(response, 'polling the prefetch queue')
  const json = await readJsonBounded(
    response,
    JSON_LIMITS.prefetch,
    'the prefetch queue',
    options.signal ? { signal: options.signal } : {},
  )
  if (options.indexKeys.length > 0) {
    // The id the edge planned for: the enrolled device id when the poll carried its credential (the
    // edge plans under it whatever `client=` says), else the `client=` sent.
    const device = await agentClientId(config, options.fetchImpl)
    return verifyServedPrefetchQueue(json, device, { keys: options.indexKeys, now: options.now })
  }
  const parsed = PrefetchQueue.safeParse(json)
  if (!parsed.success) throw new AgentError('edge-rejected', 'the edge sent a malformed prefetch queue')
  return parsed.data
}

async function finish(result: CycleResult, staging: StagingArea): Promise<CycleResult> {
  const entries = await staging.list()
  result.stagedCount = entries.length
  result.stagedBytes = entries.reduce((sum, e) => sum + e.size, 0)
  return result
}

function sized(item: ItemRef & { size: number }): ItemRef & { size: number } {
  return { name: item.name, version: item.version, size: item.size }
}

function ref(item: ItemRef): ItemRef {
  return { name: item.name, version: item.version }
}

/**
 * Whether another deltaport process (install, update, rollback, uninstall) holds the artifact's lock:
 * an update fetches the version the queue suggests itself, so staging it too would move every byte
 * twice and take the disk space the update checked it had. Taken and released at once (an update
 * starting meanwhile waits a few milliseconds); only for an artifact with a folder: one without has
 * no process changing it.
 */
async function changedElsewhere(store: ArtifactStore): Promise<boolean> {
  if (!(await store.exists())) return false
  // A lock that cannot be taken for another reason (a read-only store) is for staging to report.
  const lock = await lockUnlessBusy(store).catch(() => undefined)
  await lock?.release()
  return lock === null
}

/**
 * Claims `item` for staging, just before it is fetched, unless another deltaport process holds the
 * artifact's lock (changedElsewhere: one may have started since). The claim is written under the
 * lock, so an uninstall either ran before it (and the claim is new) or runs after and removes it
 * (commitStaged). The lock makes the artifact's folder when it has none (a dependency prefetched
 * before it is installed), and its release removes it again, empty: an uninstall takes the same lock
 * there. False when busy.
 */
async function claimUnlessChanging(
  store: ArtifactStore,
  staging: StagingArea,
  item: ItemRef,
): Promise<boolean> {
  const lock = await lockUnlessBusy(store)
  if (lock === null) return false
  try {
    await staging.claim(item.name, item.version)
    return true
  } finally {
    await lock.release()
  }
}

/**
 * The fetch and signal an item's transfer uses once it is claimed. Before every request (each retry of
 * a download, each range of a delta stream or a chunk-sync, each plan) the fetch checks that the claim
 * is still there; once `deltaport uninstall` has removed it, it aborts the item's signal, which stops
 * the ranges still in flight too, and the cycle drops the item. Checking only at the end (commitStaged)
 * let a download cut after the uninstall start again from byte 0 and fetch the whole artifact, only
 * to throw it away.
 */
function whileClaimed(
  staging: StagingArea,
  item: ItemRef,
  options: DaemonCycleOptions,
): { fetchImpl: typeof fetch; signal: AbortSignal; release: () => void } {
  // Linked to the daemon's lifetime signal only while the item is fetched (linked-signal.ts): with
  // AbortSignal.any each item left an entry on that signal for as long as the daemon ran.
  const uninstalled = linkSignal(options.signal)
  const fetchImpl = options.fetchImpl ?? fetch
  return {
    signal: uninstalled.signal,
    release: uninstalled.release,
    fetchImpl: async (input, init) => {
      if (!(await staging.isClaimed(item.name, item.version))) {
        uninstalled.abort(
          new AgentError(
            'not-found',
            `${item.name} was uninstalled while ${item.name}@${item.version} was prefetched`,
          ),
        )
        throw uninstalled.signal.reason
      }
      return fetchImpl(input, init)
    },
  }
}

/**
 * Puts a fetched, verified item into staging under the artifact's lock, if the claim taken before the
 * fetch is still there. `deltaport uninstall` (under the same lock) removes the artifact's staged
 * copies and the daemon's claims on it: a claim gone means the artifact was uninstalled while this
 * item was fetched, and putting it in would leave a copy of what the owner just removed until the
 * LRU evicted it. Another process holding the lock now: `locked`, the fetched bytes stay where a
 * later cycle resumes them (or an uninstall removes them).
 */
async function commitStaged(
  store: ArtifactStore,
  staging: StagingArea,
  item: ItemRef,
  blobPath: string,
  envelope: SignedManifest,
  at: number,
): Promise<'staged' | 'uninstalled' | 'locked'> {
  const lock = await lockUnlessBusy(store)
  if (lock === null) return 'locked'
  try {
    if (!(await staging.isClaimed(item.name, item.version))) {
      await rm(blobPath, { force: true })
      return 'uninstalled'
    }
    await staging.put(blobPath, envelope, at)
    await staging.unclaim(item.name, item.version)
    return 'staged'
  } finally {
    await lock.release()
  }
}

/**
 * Deletes what the daemon wrote for `item` after `deltaport uninstall` removed its claim and files (a
 * download retried after the uninstall starts its file again), under the artifact's lock, as the
 * uninstall did. Busy (the artifact is being installed again): left for prunePartials or a later
 * cycle, which resumes it. Best effort: the item is dropped either way.
 */
async function dropUninstalled(store: ArtifactStore, staging: StagingArea, item: ItemRef): Promise<void> {
  const lock = await lockUnlessBusy(store).catch(() => null)
  if (lock === null) return
  try {
    await staging.removeWork(item.name, item.version).catch(() => undefined)
  } finally {
    await lock.release()
  }
}

/** The artifact's lock if nobody holds it, else null (the daemon never waits for an artifact). */
async function lockUnlessBusy(store: ArtifactStore): Promise<ArtifactLock | null> {
  return lockArtifact(store.dir, { timeoutMs: 0 }).catch((error: unknown) => {
    // A lock that cannot be taken for another reason (a read-only store) is for staging to report.
    if (error instanceof AgentError && error.code === 'busy') return null
    throw error
  })
}

/** Whether staging `size` more bytes leaves twice `minFreeBytes` free on the install root's disk. */
async function roomFor(config: AgentConfig, size: number): Promise<boolean> {
  const floor = 2 * (config.minFreeBytes ?? DEFAULT_MIN_FREE_BYTES)
  return (await freeBytes(config.installRoot)) - size >= floor
}
