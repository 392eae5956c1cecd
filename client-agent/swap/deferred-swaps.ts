import type { SwapSettings } from '../../schemas/swap.ts'

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
    const waiting: string[] = []
    for (const [version, deferral] of this.deferrals) if (now < deferral.notBefore) waiting.push(version)
    return waiting
  }

  /** Records another deferral of `version` at `now`; returns its attempt and back-off. */
  defer(version: string, now: number): DeferRetry {
    const attempt = (this.deferrals.get(version)?.attempt ?? 0) + 1
    const { deferRetryMs, deferRetryMaxMs } = this.settings
    const inMs = Math.min(deferRetryMaxMs, deferRetryMs * 2 ** Math.min(30, attempt - 1))
    this.deferrals.set(version, { attempt, notBefore: now + inMs })
    return { attempt, inMs }
  }

  /** Takes back the deferrals a previous agent recorded (run-files.ts): their attempts and retry times. */
  restore(recorded: ReadonlyArray<{ version: string; attempt: number; retryAt: number }>): void {
    for (const { version, attempt, retryAt } of recorded)
      this.deferrals.set(version, { attempt, notBefore: retryAt })
  }

  /** A swap to `version` ran to an outcome (installed or rolled back): it backs off no more (true if it did). */
  forget(version: string): boolean {
    return this.deferrals.delete(version)
  }

  /** Deferred swaps and when each is offered again (the retry policy, for status output). */
  list(): Array<{ version: string; attempt: number; retryAt: number }> {
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
