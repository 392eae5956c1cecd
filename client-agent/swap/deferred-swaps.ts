import { MAX_RUN_DEFERRALS, type SwapSettings } from '../../schemas/swap.ts'

type DeferSettings = Pick<SwapSettings, 'deferRetryMs' | 'deferRetryMaxMs'>

/** The retry of a deferred swap: its attempt (1 for the first deferral) and how long until it is offered. */
export interface DeferRetry {
  attempt: number
  inMs: number
}

/**
 * Versions whose swap was deferred because the running version could not take part (its prepare, drain
 * or flush failed). The new version did nothing wrong, so it is not refused for good: it is offered again
 * after a back-off that doubles per attempt (`deferRetryMs` … `deferRetryMaxMs`), until a swap to it runs
 * to an outcome.
 */
export class DeferredSwaps {
  private readonly settings: DeferSettings
  /** Versions whose swap was deferred (the running one's fault): not offered again before `notBefore`. */
  private readonly deferrals = new Map<string, { attempt: number; notBefore: number }>()

  constructor(settings: DeferSettings) {
    this.settings = settings
  }

  /** The versions still backing off at `now`: they are refused like failed ones until their time comes. */
  waiting(now: number): string[] {
    this.clampTo(now)
    const waiting: string[] = []
    for (const [version, deferral] of this.deferrals) if (now < deferral.notBefore) waiting.push(version)
    return waiting
  }

  /**
   * No deferral waits longer than `deferRetryMaxMs` from `now`. A retry time further off comes from a
   * wall clock that went back since it was set (an NTP step, a fixed RTC) or from a deferred.json
   * written under another clock: honoured, the version was refused for as long as the clock jumped, and
   * past 2^31 - 1 ms the retry timer (update-checks.ts) fired at once, every time: the agent asked the
   * edge for updates in a busy loop.
   */
  private clampTo(now: number): void {
    const latest = now + this.settings.deferRetryMaxMs
    for (const deferral of this.deferrals.values())
      if (deferral.notBefore > latest) deferral.notBefore = latest
  }

  /** Records another deferral of `version` at `now`; returns its attempt and back-off. */
  defer(version: string, now: number): DeferRetry {
    const attempt = (this.deferrals.get(version)?.attempt ?? 0) + 1
    const { deferRetryMs, deferRetryMaxMs } = this.settings
    const inMs = Math.min(deferRetryMaxMs, deferRetryMs * 2 ** Math.min(30, attempt - 1))
    this.deferrals.delete(version)
    this.deferrals.set(version, { attempt, notBefore: now + inMs })
    // As many as deferred.json keeps (the oldest deferred go first): versions deferred and then passed
    // over by a newer release were never swapped to, so nothing forgot them, and they piled up.
    while (this.deferrals.size > MAX_RUN_DEFERRALS) {
      const oldest = this.deferrals.keys().next().value
      if (oldest === undefined) break
      this.deferrals.delete(oldest)
    }
    return { attempt, inMs }
  }

  /**
   * Takes back the deferrals a previous agent recorded (run-files.ts): their attempts and retry times,
   * none further off than `deferRetryMaxMs` from `now`.
   */
  restore(
    recorded: ReadonlyArray<{ version: string; attempt: number; retryAt: number }>,
    now = Date.now(),
  ): void {
    for (const { version, attempt, retryAt } of recorded.slice(-MAX_RUN_DEFERRALS))
      this.deferrals.set(version, { attempt, notBefore: retryAt })
    this.clampTo(now)
  }

  /** A swap to `version` ran to an outcome (installed or rolled back): it backs off no more (true if it did). */
  forget(version: string): boolean {
    return this.deferrals.delete(version)
  }

  /** Deferred swaps and when each is offered again (the retry policy, for status output). */
  list(now = Date.now()): Array<{ version: string; attempt: number; retryAt: number }> {
    this.clampTo(now)
    return [...this.deferrals].map(([version, d]) => ({ version, attempt: d.attempt, retryAt: d.notBefore }))
  }

  /** The log line for a deferral: why, that the version is not held against it, and when it is retried. */
  describe(version: string, why: { errorClass?: string; detail?: string }, retry: DeferRetry): string {
    const { deferRetryMs, deferRetryMaxMs } = this.settings
    const { attempt, inMs } = retry
    return (
      `swap to ${version} deferred (${why.errorClass}): ${why.detail}; not held against ` +
      `${version}, retried in ${Math.round(inMs / 1000)} s (attempt ${attempt}; the wait doubles ` +
      `from ${Math.round(deferRetryMs / 1000)} s up to ${Math.round(deferRetryMaxMs / 1000)} s)`
    )
  }
}
