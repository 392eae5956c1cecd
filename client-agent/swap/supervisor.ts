import { access } from 'node:fs/promises'
import type { SwapSettings } from '../../schemas/swap.ts'
import { AgentError, systemError } from '../errors.ts'
import { makeDirs } from '../fs/make-dirs.ts'
import { type HeldWrite, WriteBuffer } from './buffer.ts'
import { CrashHistory } from './crash-history.ts'
import { DeferredSwaps } from './deferred-swaps.ts'
import { SwapJournal } from './journal.ts'
import { ClientLoadTracker, replayPriorities, TierMap } from './priority.ts'
import { STOP_RETRY_AFTER_S, STOPPING, SwapProxy } from './proxy.ts'
import { type ReplayOptions, type ReplayResult, replayInto } from './replay.ts'
import { RestartHold } from './restart-hold.ts'
import { RunFiles } from './run-files.ts'
import { ServiceChildren } from './service-children.ts'
import { pause, type ServiceProcess, sleep } from './service-process.ts'
import {
  type ReadyUpdate,
  type SwapOutcomeKind,
  type SwapOutcomeReporter,
  silentReporter,
  type UpdateSource,
} from './update-source.ts'
import { loadValidator } from './validator.ts'

export interface SupervisorOptions {
  command: readonly string[]
  /** Journal, failed versions, child pids. */
  runDir: string
  /** Shared by every version of the service. */
  dataDir: string
  settings: SwapSettings
  initial: ReadyUpdate
  host: string
  port: number
  source?: UpdateSource
  reporter?: SwapOutcomeReporter
  onEvent?: (event: SupervisorEvent) => void
  serviceEnv?: Record<string, string>
  stdio?: 'inherit' | 'ignore'
  /**
   * Aborted when the agent is told to stop (SIGINT/SIGTERM) while `start` still runs: the service it
   * launched is stopped as by `stop()`, and `start` rejects with `StartInterrupted` once it is gone.
   */
  interrupt?: AbortSignal
}

/** `Supervisor.start` was interrupted (`interrupt`) before it served; nothing it started still runs. */
export class StartInterrupted extends Error {
  constructor() {
    super('stopped while starting')
  }
}

export type SupervisorEvent =
  | { type: 'started'; version: string; port: number; recovered: number; reaped: number }
  | { type: 'swap-started'; version: string; from: string }
  | { type: 'buffering'; version: string }
  | { type: 'switched'; version: string }
  | { type: 'swap-done'; report: SwapReport }
  /**
   * `restartInMs`: the back-off before the restart (it grows with each recent exit). `holdMs`: requests
   * arriving meanwhile are held for the restarted process up to this long (absent: they get 503).
   */
  | { type: 'service-restarted'; version: string; exitCode: number; restartInMs?: number; holdMs?: number }
  /**
   * `version` died (`exitCode`) where a restart would be wrong (during its probation, soon after its
   * switch, or in a crash loop): the previous version `to` is started again instead. `detail` says why.
   */
  | { type: 'rolling-back'; version: string; to: string; exitCode: number; detail: string }
  | { type: 'error'; message: string }
  /** Something the owner should know that stops nothing (e.g. an install's warning, as `update` prints it). */
  | { type: 'warning'; message: string }

export interface SwapReport {
  version: string
  from: string
  /** Which version serves at the end. */
  serving: string
  /**
   * `deferred`: the running version could not prepare, drain or flush; the swap was abandoned cleanly,
   * the new version is neither blacklisted nor reported, and is offered again after `retry.inMs`.
   * `stopped`: the agent was told to stop before the swap's outcome was known (`errorClass` names the
   * phase: `queued`, `prepare`, `drain`, `flush`, `health-check` or `probation`). Nothing was
   * relaunched; the store's `current` is back at the previous version (`serving`), which the next start
   * runs; the new version is neither blacklisted nor reported, and offered again.
   */
  outcome: SwapOutcomeKind | 'deferred' | 'stopped'
  retry?: { attempt: number; inMs: number }
  errorClass?: string
  detail?: string
  startedAt: number
  endedAt: number
  /** From the start of buffering to the moment the last held write was answered. */
  holdMs: number
  buffered: number
  replayed: number
}

/**
 * Supervises one service behind the swap proxy: starts the installed version, restarts it if it dies,
 * and performs buffered swaps (docs/decisions/0009-buffered-swap.md):
 * prepare → buffer writes → drain + flush the old → start + health-check the new → switch → replay in
 * priority order (probation) → stop the old; a failed health check or replay rolls back to the old.
 */
export class Supervisor {
  private readonly options: SupervisorOptions
  private readonly settings: SwapSettings
  private readonly files: RunFiles
  private readonly journal: SwapJournal
  private readonly buffer: WriteBuffer
  private readonly proxy: SwapProxy
  private readonly tiers: TierMap
  private readonly loads = new ClientLoadTracker()
  private readonly reporter: SwapOutcomeReporter
  private current: ServiceProcess | null = null
  private currentUpdate: ReadyUpdate
  /** Every service process started and not yet let go of, recorded for the reaper. */
  private readonly children: ServiceChildren
  private readonly watched = new WeakSet<ServiceProcess>()
  private swapInProgress = false
  private swapping: Promise<unknown> = Promise.resolve()
  private stopping = false
  /** Aborted by stop(): an update check downloading a version gives up instead of holding the exit. */
  private readonly stopSignal = new AbortController()
  private stopped: Promise<void> = Promise.resolve()
  /**
   * Aborted `stopTimeoutMs` after a stop began: a replay into the serving process waits for its answers
   * as long as a live request would, but not past that (what is still held stays journaled).
   */
  private readonly replayCutoff = new AbortController()
  private holdEstimateS = 2
  /**
   * The new process of the swap under way, from its switch until the replay's outcome is known: its exit
   * is that swap's rollback (doSwap restarts the previous version), not a crash to restart.
   */
  private probation: { service: ServiceProcess; back: ReadyUpdate } | null = null
  /** The version last swapped in: until `until`, its exit is a failed update, not a crash to restart. */
  private watch: { service: ServiceProcess; failed: ReadyUpdate; back: ReadyUpdate; until: number } | null =
    null
  /** The last swap that installed a version: its exits since `at` count towards crash-loop detection. */
  private lastSwap: { failed: ReadyUpdate; back: ReadyUpdate; at: number } | null = null
  /** The serving version's recent exits: its restart back-off, and crash-loop detection after a swap. */
  private readonly crashes: CrashHistory
  /** Requests that find nothing running wait here while a crashed service restarts or a fall-back runs. */
  private readonly restartHold: RestartHold
  /** Versions whose swap was deferred (the running one's fault), backing off before they are offered again. */
  private readonly deferrals: DeferredSwaps
  publicPort = 0

  private constructor(
    options: SupervisorOptions,
    journal: SwapJournal,
    buffer: WriteBuffer,
    files: RunFiles,
    tag: string,
  ) {
    this.options = options
    this.settings = options.settings
    this.files = files
    this.journal = journal
    this.buffer = buffer
    this.children = new ServiceChildren(
      {
        command: options.command,
        dataDir: options.dataDir,
        supervisorTag: tag,
        ...(options.serviceEnv ? { env: options.serviceEnv } : {}),
        ...(options.stdio ? { stdio: options.stdio } : {}),
      },
      files,
      options.settings.stopTimeoutMs,
      this.stopSignal.signal,
    )
    this.currentUpdate = options.initial
    this.tiers = new TierMap(options.settings)
    this.crashes = new CrashHistory(options.settings)
    this.deferrals = new DeferredSwaps(options.settings)
    this.reporter = options.reporter ?? silentReporter
    this.proxy = new SwapProxy(options.settings, buffer, this.tiers, this.loads)
    this.proxy.onAddressCapped = (message) => this.emit({ type: 'warning', message })
    this.restartHold = new RestartHold(this.proxy, options.settings, this.stopSignal.signal, (message) =>
      this.emit({ type: 'error', message }),
    )
  }

  /**
   * Reaps service processes a killed agent left behind, reopens the journal (a torn tail is dropped),
   * starts the current version, replays whatever the journal still owes, then opens the public port.
   */
  static async start(options: SupervisorOptions): Promise<Supervisor> {
    await makeDirs(options.runDir)
    await makeDirs(options.dataDir)
    const files = new RunFiles(options.runDir)
    const tag = options.runDir
    const reaped = await files.reapOrphans(tag)
    const journal = new SwapJournal(files.journalPath)
    const recovered = await journal.open({ bodyBytes: options.settings.memoryBytes })
    const validator = options.settings.validatorModule
      ? await loadValidator(options.settings.validatorModule)
      : null
    const buffer = new WriteBuffer(options.settings, journal, validator, recovered.lastId)
    buffer.restore(recovered.pending)
    const recoveredCount = recovered.pending.length
    // Their bodies (base64) are the buffer's now, in memory only up to memoryBytes: not kept twice.
    recovered.pending.length = 0
    const supervisor = new Supervisor(options, journal, buffer, files, tag)
    // A swap deferred before a restart is still owed its retry, when due (the CLI's UpdateChecks).
    supervisor.deferrals.restore(await files.deferrals())
    // From here a service process may exist: a stop asked for now stops it the way a later one would
    // (left to the signal's default action, the agent died and the service ran on, holding its port).
    const interrupt = options.interrupt
    const stopNow = () => void supervisor.stop()
    if (interrupt?.aborted) stopNow()
    interrupt?.addEventListener('abort', stopNow)
    try {
      await supervisor.serveFirst(recoveredCount, reaped.length)
    } finally {
      interrupt?.removeEventListener('abort', stopNow)
    }
    return supervisor
  }

  /**
   * Starts the current version, replays what the journal owes it and opens the public port. A stop
   * that comes meanwhile (`interrupt`) ends this with `StartInterrupted` once its shutdown is over.
   */
  private async serveFirst(recovered: number, reaped: number): Promise<void> {
    const { initial, port, host } = this.options
    if (this.stopping) return this.interrupted()
    const service = await this.children.launch(initial)
    if (this.stopping) {
      // The shutdown's stopAll may have run before this process was added to the children.
      await service.kill()
      await this.children.forget(service)
      return this.interrupted()
    }
    // A stop during the health wait stops the service, which ends the wait.
    const healthy = await this.healthy(service)
    if (this.stopping) return this.interrupted()
    if (!healthy) {
      await service.kill()
      await this.children.forget(service)
      await this.journal.close()
      throw new AgentError('install-failed', `${initial.version} did not become healthy`)
    }
    this.adopt(service)
    if (!this.buffer.empty) {
      this.proxy.mode = 'replay'
      const result = await this.replayUntilDone(service, () => false)
      if (this.stopping) return this.interrupted()
      if (result.ok) await this.settle()
    }
    if (this.stopping) return this.interrupted()
    try {
      this.publicPort = await this.proxy.listen(port, host)
    } catch (error) {
      // The service already runs: stop it rather than leave it to an agent that never served (or to
      // init, as an orphan), then say which address could not be taken.
      await this.stop()
      throw listenFailure(error, host, port)
    }
    if (this.stopping) return this.interrupted()
    this.emit({ type: 'started', version: initial.version, port: this.publicPort, recovered, reaped })
  }

  /** Waits for the shutdown a stop during the start began (the service is stopped), then says so. */
  private async interrupted(): Promise<never> {
    await this.stopped
    throw new StartInterrupted()
  }

  get version(): string {
    return this.currentUpdate.version
  }

  get mode() {
    return this.proxy.mode
  }

  /** Deferred swaps and when each is offered again (the retry policy, for status output). */
  get deferred(): Array<{ version: string; attempt: number; retryAt: number }> {
    return this.deferrals.list()
  }

  /** How a deferred swap backs off: `deferRetryMs`, doubling per attempt up to `deferRetryMaxMs`. */
  get deferRetryPolicy(): { firstMs: number; maxMs: number } {
    return { firstMs: this.settings.deferRetryMs, maxMs: this.settings.deferRetryMaxMs }
  }

  get counters() {
    return { ...this.proxy.counters, ...this.buffer.stats() }
  }

  /** Swaps to `update`; swaps are serialized. Resolves with what happened (never throws for a bad version). */
  swapTo(update: ReadyUpdate): Promise<SwapReport> {
    return this.serialized(() => this.doSwap(update))
  }

  /** Runs `job` after every swap (or fall-back) queued before it. */
  private serialized<T>(job: () => Promise<T>): Promise<T> {
    const run = this.swapping.then(async () => {
      this.swapInProgress = true
      try {
        return await job()
      } finally {
        this.swapInProgress = false
      }
    })
    this.swapping = run.catch(() => undefined)
    return run
  }

  /** Asks the update source for a new version and swaps to it; null when there is none. */
  async checkForUpdate(): Promise<SwapReport | null> {
    const source = this.options.source
    if (!source || this.stopping) return null
    // A check during a swap would see a version in flux, so it waits for it. `run` never checks during
    // a swap of its own checks (it keeps that trigger for later), so what holds the lock here is a
    // fall-back or a restart's replay: returning null would drop the trigger (with --interval 0, a
    // SIGHUP would be ignored).
    if (this.swapInProgress) await this.swapping
    if (this.stopping) return null
    // Versions backing off after a deferred swap are refused like failed ones until their time comes.
    const refused = await this.files.failedVersions()
    for (const version of this.deferrals.waiting(Date.now())) refused.add(version)
    let update: ReadyUpdate | null
    try {
      update = await source.next(this.version, refused, this.stopSignal.signal)
    } catch (error) {
      // Aborted by stop() (or failed while stopping): there is nothing left to swap into.
      if (this.stopping) return null
      throw error
    }
    // A stop that came while the version downloaded: its service and port are gone, so no swap starts
    // (the version stays installed; the next `run` starts it).
    if (!update || update.version === this.version || this.stopping) return null
    return this.swapTo(update)
  }

  /** Stops accepting, lets held writes finish replaying, stops the service. */
  async stop(): Promise<void> {
    if (this.stopping) return this.stopped
    this.stopping = true
    this.stopSignal.abort()
    this.stopped = this.shutdown()
    return this.stopped
  }

  private async shutdown(): Promise<void> {
    // At once, not after a swap under way: clients learn to go while it ends.
    this.proxy.stopAccepting()
    // Nothing restarts the crashed service now: what waits for it is answered (503 + Retry-After, held
    // writes settled unapplied) instead of being cut after stopTimeoutMs.
    await this.restartHold.abandon('the agent is stopping')
    const cutoff = setTimeout(() => this.replayCutoff.abort(), this.settings.stopTimeoutMs)
    await this.swapping
    clearTimeout(cutoff)
    // What is still held and was never sent anywhere will not be taken before the agent is gone: its
    // client is told to retry (never applied, never replayed). A write a process may have applied stays
    // journaled for the next start, and its client's connection is closed below.
    const turnedAway = await this.buffer.turnAwayUnsent(STOP_RETRY_AFTER_S, STOPPING)
    if (turnedAway > 0)
      this.emit({ type: 'error', message: `${turnedAway} held writes got 503: ${STOPPING}` })
    await this.proxy.close(this.settings.stopTimeoutMs)
    await this.children.stopAll()
    await this.journal.close()
  }

  private emit(event: SupervisorEvent): void {
    this.options.onEvent?.(event)
  }

  private async doSwap(update: ReadyUpdate): Promise<SwapReport> {
    const old = this.current
    const from = this.currentUpdate
    const startedAt = Date.now()
    const base = { version: update.version, from: from.version, startedAt }
    if (!old) throw new Error('no running service to swap from')
    // Queued behind a swap the stop ended (or asked for after the stop): nothing of it runs. It would
    // prepare and replay into whatever the stopped swap left active, an unproven version perhaps.
    if (this.stopping)
      return this.stoppedMidSwap(base, startedAt, this.proxy.counters.held, update, 'queued', null)
    this.watch = null
    this.lastSwap = null
    this.probation = null
    // The crashed old version's restart is no longer awaited: its held writes are this swap's to replay.
    await this.restartHold.abandon('a new version is being swapped in', true)
    this.emit({ type: 'swap-started', version: update.version, from: from.version })
    const heldBefore = this.proxy.counters.held

    // An old process that crashed (before or during the swap; its restart pending) has nothing to
    // prepare, drain or flush, and writes nothing more: the new version, quite possibly the fix for that
    // crash, goes ahead and the held writes wait for it. A hook that failed because the old process just
    // died is no reason to refuse the update.
    const oldDied = () => old.gone(250)
    // A stop ends the prepare, drain and flush waits at once (up to hookTimeoutMs or stopTimeoutMs each):
    // nobody needs their outcome any more, and the old process, which still owns the data, takes what is
    // held (stoppedMidSwap).
    const stop = this.stopSignal.signal
    // 1. Prepare: the old process may refuse (busy, migrating): nothing has changed yet. That is the
    // running version's state, not the new version's fault: the swap is deferred and tried again later.
    const prepared =
      !old.running || (await old.hook(this.settings.prepare, this.settings.hookTimeoutMs, stop))
    if (this.stopping) return this.stoppedMidSwap(base, Date.now(), heldBefore, update, 'prepare', old)
    const prepareRefused = !prepared && !(await oldDied())
    // The stop came while the old process's death was checked: the agent is going, so nothing is
    // retried later (a deferral would say it is) and nothing goes ahead.
    if (this.stopping) return this.stoppedMidSwap(base, Date.now(), heldBefore, update, 'prepare', old)
    if (prepareRefused) {
      return this.defer(
        {
          ...base,
          serving: from.version,
          errorClass: 'prepare',
          detail: `the prepare hook failed on the running ${from.version}`,
          holdMs: 0,
          buffered: 0,
          replayed: 0,
        },
        update,
      )
    }
    // 2. Buffer: writes are held from here on, reads still go to the old process.
    this.proxy.expectedHoldSeconds = this.holdEstimateS
    this.proxy.mode = 'buffer'
    const holdStart = Date.now()
    this.emit({ type: 'buffering', version: update.version })

    // 4. Drain the writes already forwarded, then ask the old process to flush its write log.
    const drained = !old.running || (await old.drainWrites(this.settings.stopTimeoutMs, stop))
    if (this.stopping) return this.stoppedMidSwap(base, holdStart, heldBefore, update, 'drain', old)
    const flushed =
      !old.running || (drained && (await old.hook(this.settings.flush, this.settings.hookTimeoutMs, stop)))
    // Stopped before the new version started: the old one, which never stopped serving, takes what is held.
    if (this.stopping) return this.stoppedMidSwap(base, holdStart, heldBefore, update, 'flush', old)
    const flushRefused = !flushed && !(await oldDied())
    // The stop came while the old process's death was checked (as above).
    if (this.stopping) return this.stoppedMidSwap(base, holdStart, heldBefore, update, 'flush', old)
    if (flushRefused) {
      // The old process lives and still owns the data (e.g. a slow upload outlasted stopTimeoutMs): the
      // held writes go to it, in each client's order, and the swap is tried again later.
      const result = await this.replayUntilDone(old, () => false)
      const phase = drained ? 'flush' : 'drain'
      // Stopped during that replay (which the stop cut at stopTimeoutMs): not retried, as above.
      if (this.stopping) return this.stoppedMidSwap(base, holdStart, heldBefore, update, phase, null, result)
      return this.defer(
        {
          ...base,
          ...this.tally(heldBefore, result),
          serving: from.version,
          errorClass: phase,
          detail: drained
            ? `the flush hook failed on the running ${from.version}`
            : `writes forwarded to the running ${from.version} did not finish within stopTimeoutMs`,
          holdMs: Date.now() - holdStart,
        },
        update,
      )
    }

    // 5. Start the new version next to the old one and wait for its health check.
    let next: ServiceProcess
    try {
      next = await this.children.launch(update)
    } catch (error) {
      return this.rollBackKeepingOld(base, holdStart, heldBefore, update, 'start', (error as Error).message)
    }
    // A stop ends the wait (up to healthTimeoutMs): nobody needs the new version any more.
    const healthy = await this.healthy(next, this.stopSignal.signal)
    if (this.stopping) {
      await next.kill()
      await this.children.forget(next)
      return this.stoppedMidSwap(base, holdStart, heldBefore, update, 'health-check', old)
    }
    if (!healthy) {
      await next.kill()
      await this.children.forget(next)
      return this.rollBackKeepingOld(
        base,
        holdStart,
        heldBefore,
        update,
        'health-check',
        'health check failed',
      )
    }

    // Switch: reads now go to the new process, held writes replay into it in priority order.
    this.adopt(next, update)
    this.probation = { service: next, back: from }
    // Still running until the replay is over: reads go back to it as soon as the new one dies.
    this.proxy.fallback = old
    this.proxy.mode = 'replay'
    this.emit({ type: 'switched', version: update.version })
    // Monotonic, like the other windows of a swap: a wall-clock step must not end or stretch it.
    const probationEnd = performance.now() + this.settings.probationMs
    const replayStart = Date.now()
    // After probation, new writes go live again (a client with writes still queued waits behind them).
    // Held any longer, every replayed answer under closed-loop load brings the next write into the
    // backlog, which then never drains: the swap would never end and the journal never be emptied.
    // (Not when it has died meanwhile: live writes would only find nothing to take them.)
    const probation = setTimeout(() => {
      if (this.proxy.mode === 'replay' && next.running) this.proxy.mode = 'pass'
    }, this.settings.probationMs)
    // A new version that dies ends its probation there: the rollback need not wait for the window.
    const replayed = await replayInto(this.buffer, next, {
      // Its 5xx, or no answer within replayTimeoutMs (hung), fails it: the writes go to the previous
      // version. Not healthTimeoutMs: a write may legitimately take longer than a health check.
      ...this.replayOptions(
        () => performance.now() < probationEnd && next.running && !this.stopping,
        this.settings.replayTimeoutMs,
        () => false,
      ),
      // A stop ends the probation: no further write is sent, and those in flight get what is left of
      // stopTimeoutMs (replayTimeoutMs is a socket-idle bound, up to minutes).
      halt: this.stopSignal.signal,
      cutoff: this.replayCutoff.signal,
    }).finally(() => {
      clearTimeout(probation)
      this.proxy.fallback = null
    })
    // A new version that died during probation failed it even when no write told (the old one still runs).
    const result: ReplayResult =
      replayed.ok && !next.running
        ? { ...replayed, ok: false, error: `${update.version} exited during probation`, failedWrite: 0 }
        : replayed
    // From here its exit is watched by `watch` (installed) or it is stopped on purpose (rolled back).
    this.probation = null
    // Stopped before the probation's outcome was known. Rolling back would relaunch the old version
    // during the shutdown, installing would trust a version whose probation never ended: neither. Both
    // processes are left to the shutdown, which stops them; the next start runs the previous version.
    if (this.stopping) {
      // Reads keep going to the new process until then (it has every write replayed so far); a write
      // is no longer held (the proxy answers 503) and none is replayed.
      this.proxy.mode = 'buffer'
      // The version in force (the store's, the next start's) is the previous one again.
      this.currentUpdate = from
      return this.stoppedMidSwap(base, holdStart, heldBefore, update, 'probation', null, replayed)
    }
    if (result.ok) {
      this.proxy.mode = 'pass'
      this.watch = {
        service: next,
        failed: update,
        back: from,
        until: Date.now() + this.settings.healthTimeoutMs,
      }
      this.lastSwap = { failed: update, back: from, at: Date.now() }
      this.noteDrain(result.replayed, Date.now() - replayStart)
      const holdMs = Date.now() - holdStart
      this.holdEstimateS = 0.7 * this.holdEstimateS + 0.3 * (holdMs / 1000)
      // The old version and any restarted copy of it, side by side.
      await this.children.retireAllBut(next)
      await this.settle()
      return this.finish(
        { ...base, ...this.tally(heldBefore, result), serving: update.version, outcome: 'installed', holdMs },
        update,
      )
    }

    // 6. Replay failed. Reads go back to the old process at once and the failed version goes. The new
    // process may have applied part of the backlog, so the old version is restarted (fresh state from the
    // shared data) rather than trusted as it was, and the restarted one takes the rest. Writes are held
    // again meanwhile: the old process's view of the data may be stale.
    this.proxy.mode = 'replay'
    this.adopt(old, from)
    // Reads already forwarded to it finish first (nothing new reaches it now), then it goes.
    await this.children.retire(next)
    let back: ReplayResult = { ok: true, replayed: 0 }
    // A stop that came meanwhile: the failure is recorded (finish), but nothing is relaunched while the
    // agent goes, and the stale old process takes no write (the shutdown turns them away).
    if (!this.stopping) {
      const restarted = await this.children.launch(from)
      if (await this.healthy(restarted)) {
        this.adopt(restarted, from)
        await this.children.retireAllBut(restarted)
      } else {
        await restarted.kill()
        await this.children.forget(restarted)
      }
      back = await this.replayUntilDone(this.current ?? old, () => false)
    }
    return this.finish(
      {
        ...base,
        ...this.tally(heldBefore, { ok: true, replayed: result.replayed + back.replayed }),
        serving: from.version,
        outcome: 'rolled-back',
        errorClass: 'replay',
        detail: result.error,
        holdMs: Date.now() - holdStart,
      },
      update,
    )
  }

  /**
   * The agent was told to stop before this swap's outcome was known (`phase`; `queued`: before it
   * began). It ends here, and nothing is launched. `old`: the old process still owns the data (the new version never served), so
   * it takes what is held, for what is left of stopTimeoutMs; null after the switch (mid-probation: the
   * old process's view is stale, the new one is unproven), when nobody does. Either way the shutdown
   * then turns away what is held and was never sent (503 + Retry-After), and a write a process may have
   * applied stays journaled. The store's `current` goes back to the previous version, which the next
   * start runs (replaying the journal into it, from the shared data dir): the update was not proven, so
   * it is offered again and gets a full swap and probation. It is not the new version's fault: it is
   * neither blacklisted nor reported to the rollout coordinator.
   */
  private async stoppedMidSwap(
    base: { version: string; from: string; startedAt: number },
    holdStart: number,
    heldBefore: number,
    update: ReadyUpdate,
    phase: 'queued' | 'prepare' | 'drain' | 'flush' | 'health-check' | 'probation',
    old: ServiceProcess | null,
    replayed: ReplayResult = { ok: true, replayed: 0 },
  ): Promise<SwapReport> {
    const result = old?.running ? await this.replayUntilDone(old, () => false) : replayed
    await this.options.source
      ?.restore(update.version, base.from)
      .catch((error: Error) => this.emit({ type: 'error', message: `restore failed: ${error.message}` }))
    const full: SwapReport = {
      ...base,
      ...this.tally(heldBefore, result),
      serving: base.from,
      outcome: 'stopped',
      errorClass: phase,
      detail: `the agent stopped ${phase === 'queued' ? 'before the swap to' : `during the ${phase} of`} ${base.version}; ${base.from} runs at the next start`,
      holdMs: Date.now() - holdStart,
      endedAt: Date.now(),
    }
    this.emit({ type: 'swap-done', report: full })
    return full
  }

  /** The new version never served: the old one is still running and takes the held writes. */
  private async rollBackKeepingOld(
    base: { version: string; from: string; startedAt: number },
    holdStart: number,
    heldBefore: number,
    update: ReadyUpdate,
    errorClass: string,
    detail: string,
  ): Promise<SwapReport> {
    const old = this.current
    if (!old) throw new Error('no running service')
    const result = await this.replayUntilDone(old, () => false)
    return this.finish(
      {
        ...base,
        ...this.tally(heldBefore, result),
        serving: base.from,
        outcome: 'rolled-back',
        errorClass,
        detail,
        holdMs: Date.now() - holdStart,
      },
      update,
    )
  }

  /**
   * Replays into `target`, the process that serves, until the buffer is empty, retrying (1 s apart)
   * while it fails. New writes go live meanwhile unless their client still has writes queued, so the
   * backlog drains even under steady load.
   *
   * Its 5xx is the answer of a write whose client waits: what it would have got live (there is no other
   * version to try, and retried, a write that breaks every version held its client and the swap for
   * ever). A write recovered from the journal has nobody to retry it, so its 5xx is retried (a service
   * still warming up) for `healthTimeoutMs`, then taken as its answer: the agent must start serving.
   * Its answer is waited for as a live request's is, under `serviceAnswerTimeoutMs` (no byte from the
   * service for that long): there is no better process to send the write to, and sending it again only
   * applies it again, so a write it sends nothing for is given up on, not retried. Its client gets 504
   * (it may have been applied), the write is settled, and the other held writes go on: without a bound a
   * hung service held that client and a replay lane for ever, and with the lanes the swap and the stop.
   */
  private async replayUntilDone(target: ServiceProcess, keepGoing: () => boolean): Promise<ReplayResult> {
    this.proxy.mode = 'pass'
    let replayed = 0
    const patienceEnd = performance.now() + this.settings.healthTimeoutMs
    const serverErrorAnswers = (entry: HeldWrite) =>
      entry.responder !== null || performance.now() >= patienceEnd
    for (;;) {
      const start = Date.now()
      const result = await replayInto(this.buffer, target, {
        ...this.replayOptions(keepGoing, this.settings.serviceAnswerTimeoutMs, serverErrorAnswers),
        onNoAnswer: (entry, ms) =>
          this.emit({
            type: 'error',
            message: `write ${entry.id} replayed into ${target.version} got no answer within ${ms} ms; answered 504 (it may have been applied), not sent again`,
          }),
        cutoff: this.replayCutoff.signal,
      })
      replayed += result.replayed
      this.noteDrain(result.replayed, Date.now() - start)
      if (result.ok) {
        this.proxy.mode = 'pass'
        return { ok: true, replayed }
      }
      this.emit({ type: 'error', message: `replay into ${target.version} failed: ${result.error}; retrying` })
      // Going down: what is still held stays in the journal and replays on the next start.
      if (this.stopping) return { ...result, replayed }
      await sleep(1000)
      const active = this.current
      if (active && active !== target) target = active
    }
  }

  /** `timeoutMs` and `serverErrorAnswers`: how `target`'s answers are judged (see ReplayOptions). */
  private replayOptions(
    keepGoing: () => boolean,
    timeoutMs: number | null,
    serverErrorAnswers: (entry: HeldWrite) => boolean,
  ): ReplayOptions {
    return {
      concurrency: this.settings.replayConcurrency,
      timeoutMs,
      serverErrorAnswers,
      keepGoing,
      priority: (clients: readonly string[]) => replayPriorities(clients, this.tiers, this.loads),
    }
  }

  private noteDrain(replayed: number, ms: number): void {
    if (replayed > 0 && ms > 0) this.proxy.drainPerSecond = replayed / (ms / 1000)
  }

  private tally(heldBefore: number, result: ReplayResult) {
    return { buffered: this.proxy.counters.held - heldBefore, replayed: result.replayed }
  }

  /**
   * At the end of every swap (and of a restart's replay): the journal keeps only the writes still owed a
   * replay (none: it is emptied). Writes still held then (a restart hold begun meanwhile, a write sent
   * and unanswered) stay in it; skipping the compaction whenever one was held let the journal grow by
   * every such swap's records.
   */
  private async settle(): Promise<void> {
    this.proxy.clearRetryGate()
    // Failed (a full disk for the copy), the journal stays as it was: whole, only longer.
    await this.journal
      .compact()
      .catch((error: Error) =>
        this.emit({ type: 'error', message: `could not compact the swap journal: ${error.message}` }),
      )
  }

  private async finish(
    report: Omit<SwapReport, 'endedAt' | 'outcome'> & { outcome: SwapOutcomeKind },
    update: ReadyUpdate,
  ): Promise<SwapReport> {
    const full = { ...report, endedAt: Date.now() }
    if (this.deferrals.forget(full.version)) await this.recordDeferrals()
    if (full.outcome !== 'installed') {
      if (this.proxy.mode !== 'pass' && this.buffer.empty) this.proxy.mode = 'pass'
      await this.settle()
      // Durable: `update`, `install` of a channel and the daemon's prefetch skip it too (ADR 0009).
      await this.files
        .addFailed(update.version, full.detail ?? full.errorClass ?? full.outcome)
        .catch(() => undefined)
      await this.options.source
        ?.restore(update.version, full.from)
        .catch((error: Error) => this.emit({ type: 'error', message: `restore failed: ${error.message}` }))
    }
    await this.reporter
      .report({
        version: full.version,
        previous: full.from,
        outcome: full.outcome,
        ...(full.errorClass ? { errorClass: full.errorClass } : {}),
        ...(full.detail ? { detail: full.detail } : {}),
      })
      .catch((error: Error) =>
        this.emit({ type: 'error', message: `outcome report failed: ${error.message}` }),
      )
    this.emit({ type: 'swap-done', report: full })
    return full
  }

  /**
   * Abandons a swap the running version could not take part in (its prepare, drain or flush failed while
   * it kept running). The new version did nothing wrong: it is not recorded as failed nor reported to the
   * rollout coordinator, and `checkForUpdate` offers it again after a back-off that doubles per attempt
   * (`deferRetryMs` … `deferRetryMaxMs`). The store's `current` goes back to the version that serves.
   */
  private async defer(
    report: Omit<SwapReport, 'endedAt' | 'outcome' | 'retry'>,
    update: ReadyUpdate,
  ): Promise<SwapReport> {
    const retry = this.deferrals.defer(update.version, Date.now())
    await this.recordDeferrals()
    if (this.proxy.mode !== 'pass' && this.buffer.empty) this.proxy.mode = 'pass'
    await this.settle()
    await this.options.source
      ?.restore(update.version, report.from)
      .catch((error: Error) => this.emit({ type: 'error', message: `restore failed: ${error.message}` }))
    const full: SwapReport = { ...report, outcome: 'deferred', retry, endedAt: Date.now() }
    this.emit({ type: 'error', message: this.deferrals.describe(update.version, report, retry) })
    this.emit({ type: 'swap-done', report: full })
    return full
  }

  /**
   * Records the deferred swaps in the run files (atomically), so an agent restarted before a retry is
   * due still makes it then, with the same back-off: kept in memory only, a restart lost it, and with
   * `--interval 0` nothing checked again until the next SIGHUP. A failed write is logged; the retry
   * in this process still comes.
   */
  private async recordDeferrals(): Promise<void> {
    await this.files
      .recordDeferrals(this.deferrals.list())
      .catch((error: Error) =>
        this.emit({ type: 'error', message: `could not record the deferred swaps: ${error.message}` }),
      )
  }

  /**
   * Whether `service` answers its health check in time (the settings' path, timeout and grace); false
   * at once when `signal` aborts.
   */
  private healthy(service: ServiceProcess, signal?: AbortSignal): Promise<boolean> {
    const { healthPath, healthTimeoutMs, unhealthyGraceMs } = this.settings
    return service.waitHealthy(healthPath, healthTimeoutMs, unhealthyGraceMs, signal)
  }

  /** Makes `service` the active one and restarts it (same version) if it dies while active. */
  private adopt(service: ServiceProcess, update?: ReadyUpdate): void {
    this.current = service
    if (update) this.currentUpdate = update
    this.proxy.active = service
    if (this.watched.has(service)) return
    this.watched.add(service)
    const version = update ?? this.currentUpdate
    service.onExit((exitCode) => {
      if (this.stopping || service.retiring || this.current !== service) return
      const now = Date.now()
      this.crashes.noteExit(version.version, now)
      const probation = this.probation
      if (probation?.service === service) {
        // doSwap sees the death (its replay ends) and rolls back; a restart here would only be logged.
        this.emit({
          type: 'rolling-back',
          version: version.version,
          to: probation.back.version,
          exitCode,
          detail: `${version.version} exited (${exitCode}) during probation`,
        })
        return
      }
      const watch = this.watch
      if (watch?.service === service && now < watch.until) {
        this.watch = null
        this.lastSwap = null
        const detail = `${watch.failed.version} exited (${exitCode}) soon after its switch`
        void this.serialized(() => this.fallBack(service, watch.failed, watch.back, exitCode, detail))
        return
      }
      // A version swapped in recently that keeps exiting is a failed update too, even when each copy
      // passes its health check first: restarting it forever would hide that from the rollout.
      const swap = this.lastSwap
      if (swap?.failed.version === version.version && this.crashes.loopingSince(swap.at, now)) {
        this.lastSwap = null
        const detail = `${version.version} crash-looped: ${this.settings.crashLoopExits} exits within ${Math.round((now - swap.at) / 1000)} s of its switch`
        void this.serialized(() => this.fallBack(service, swap.failed, swap.back, exitCode, detail))
        return
      }
      // Outside swaps and fall-backs (which hold writes their own way), requests wait for the restart.
      void this.restartCrashed(service, version, exitCode, !this.swapInProgress)
    })
  }

  /**
   * The version just swapped in died within `healthTimeoutMs` of its switch (after its probation): a
   * failed update, not a crash to restart forever. The previous version is started again (it reloads the
   * shared data), takes the writes held meanwhile, and the failed one is rolled back like any other.
   */
  private async fallBack(
    dead: ServiceProcess,
    failed: ReadyUpdate,
    back: ReadyUpdate,
    exitCode: number,
    detail: string,
  ): Promise<SwapReport | null> {
    const startedAt = Date.now()
    const heldBefore = this.proxy.counters.held
    // Pruned from the store (or removed by hand): there is nothing to go back to, so the failed version
    // is restarted with back-off; saying so is all that is left.
    if (
      !(await access(back.artifactPath).then(
        () => true,
        () => false,
      ))
    ) {
      this.emit({
        type: 'error',
        message: `${detail}; the previous version ${back.version} is no longer on disk, so ${failed.version} is restarted with back-off`,
      })
      void this.restartCrashed(dead, failed, exitCode)
      return null
    }
    this.emit({ type: 'rolling-back', version: failed.version, to: back.version, exitCode, detail })
    // Nothing serves until the previous version is up: writes wait for it rather than fail, and so do
    // bodiless reads.
    this.proxy.mode = 'buffer'
    this.restartHold.readsForFallBack(back.version)
    await this.children.forget(dead)
    const report = {
      version: failed.version,
      from: back.version,
      startedAt,
      serving: back.version,
      outcome: 'rolled-back',
      errorClass: 'crash',
    } as const
    // A stop ends the fall-back where it is: nothing is launched for an agent that is going, and the
    // previous version's health check (up to healthTimeoutMs) is not waited for.
    if (this.stopping) return this.fallBackStopped(report, heldBefore, failed, back, detail)
    const restarted = await this.children.launch(back)
    // A stop during the launch: the shutdown's stopAll may have run before this process was recorded.
    const healthy = !this.stopping && (await this.healthy(restarted, this.stopSignal.signal))
    if (this.stopping) {
      await restarted.kill()
      await this.children.forget(restarted)
      return this.fallBackStopped(report, heldBefore, failed, back, detail)
    }
    if (!healthy) {
      await restarted.kill()
      await this.children.forget(restarted)
      await this.restartHold.abandon(`the previous version ${back.version} failed its health check`)
      void this.restartCrashed(dead, failed, exitCode)
      await this.replayUntilDone(dead, () => false)
      return null
    }
    this.adopt(restarted, back)
    this.restartHold.endFallBack()
    await this.children.retireAllBut(restarted)
    const result = await this.replayUntilDone(restarted, () => false)
    return this.finish(
      { ...report, ...this.tally(heldBefore, result), detail, holdMs: Date.now() - startedAt },
      failed,
    )
  }

  /**
   * The agent was told to stop during a fall-back, before the previous version served again. The failed
   * version failed on its own, before the stop: it is rolled back as ever (recorded as failed, reported,
   * the store's `current` back at the previous version, which the next start runs), but nothing is
   * relaunched. What the fall-back held was never sent anywhere: the shutdown turns it away (503 +
   * Retry-After), as it does a stopped swap's.
   */
  private fallBackStopped(
    report: Pick<SwapReport, 'version' | 'from' | 'startedAt' | 'serving' | 'errorClass'> & {
      outcome: 'rolled-back'
    },
    heldBefore: number,
    failed: ReadyUpdate,
    back: ReadyUpdate,
    detail: string,
  ): Promise<SwapReport> {
    // The version in force (the store's, the next start's) is the previous one.
    this.currentUpdate = back
    return this.finish(
      {
        ...report,
        ...this.tally(heldBefore, { ok: true, replayed: 0 }),
        detail: `${detail}; the agent stopped before ${back.version} served again`,
        holdMs: Date.now() - report.startedAt,
      },
      failed,
    )
  }

  /**
   * Restarts `dead` (same version) after the back-off, retrying with a longer one while the restart fails
   * its health check. `holdRequests` (only for a crash outside swaps and fall-backs): requests arriving
   * meanwhile wait for it (`RestartHold.forRestart`).
   */
  private async restartCrashed(
    dead: ServiceProcess,
    update: ReadyUpdate,
    exitCode: number,
    holdRequests = false,
  ): Promise<void> {
    // Decided before anything awaits, while the proxy's mode is still the one the crash found.
    const held = holdRequests && this.restartHold.forRestart(this.crashes.restartDelay(0))
    await this.children.forget(dead)
    for (let attempt = 0; ; attempt++) {
      const delay = this.crashes.restartDelay(attempt)
      this.restartHold.restartDueAt = performance.now() + delay
      if (attempt === 0)
        this.emit({
          type: 'service-restarted',
          version: update.version,
          exitCode,
          restartInMs: delay,
          ...(held ? { holdMs: this.settings.restartHoldMs } : {}),
        })
      // Cut short by stop(): nobody needs the restart then, and a pending back-off timer (up to
      // restartBackoffMaxMs) would keep the stopped agent from exiting.
      const waited = await pause(delay, this.stopSignal.signal)
      // Checked after the back-off too: a stop or a swap during it means nobody needs this restart.
      if (!waited || this.stopping || this.current !== dead) return
      const fresh = await this.children.launch(update)
      if (this.stopping) {
        // shutdown() may already have stopped the processes it knew of.
        await fresh.kill()
        await this.children.forget(fresh)
        return
      }
      if (await this.healthy(fresh)) {
        if (this.current === dead && !this.stopping) await this.takeRestarted(dead, fresh, update)
        else await this.children.discard(fresh)
        return
      }
      await fresh.kill()
      await this.children.forget(fresh)
    }
  }

  /**
   * Makes the healthy restarted copy serve. Under a restart hold this takes the swap lock, since its
   * replay must not run beside a swap's: the waiting reads go to it, then the held writes are replayed
   * into it in priority order (each client's in order) while new writes go live.
   */
  private async takeRestarted(
    dead: ServiceProcess,
    fresh: ServiceProcess,
    update: ReadyUpdate,
  ): Promise<void> {
    if (!this.proxy.holdingForRestart) {
      this.adopt(fresh, update)
      // A hold that ran out turned its writes away (`w` and `d` records): without this, a service whose
      // restarts outlast restartHoldMs grew the journal by every crash's writes until the next swap.
      return this.settle()
    }
    await this.serialized(async () => {
      // A stop or a swap may have come first; then nobody needs this copy.
      if (this.stopping || this.current !== dead) return this.children.discard(fresh)
      this.adopt(fresh, update)
      this.restartHold.release()
      await this.replayUntilDone(fresh, () => false)
      await this.settle()
    })
  }
}

/** Why the public address could not be taken, as the agent error a user can act on. */
function listenFailure(error: unknown, host: string, port: number): unknown {
  const system = systemError(error)
  if (!system) return error
  const hint =
    system.code === 'EADDRINUSE' ? ' (another process holds it: stop that one or choose --port)' : ''
  return new AgentError('io', `cannot listen on ${host}:${port}: ${system.reason}${hint}`, {
    errno: system.code,
    host,
    port,
  })
}
