import type { Supervisor } from './supervisor.ts'

/**
 * What the checks need of the supervisor: the check itself, when each deferred swap is due again, and
 * the deferral's back-off (a failed retry check backs off the same way).
 */
export type CheckedSupervisor = Pick<Supervisor, 'checkForUpdate' | 'deferred' | 'deferRetryPolicy'>

/**
 * A deferred swap's retry check comes this long after its back-off ends: a timer may fire a millisecond
 * early by the wall clock, and a check that finds the version still backing off refuses it.
 */
const RETRY_SLACK_MS = 20

/** The longest delay Node's timers take (2^31 - 1 ms); a longer one fires at once. */
const MAX_TIMER_MS = 2 ** 31 - 1

/** A failed retry check is tried again no sooner than this, whatever `deferRetryMs` says (it may be 0). */
const MIN_FAILED_RETRY_MS = 1000

/**
 * When `deltaport run` asks for a new version: every `intervalMs` (0: never on its own), at once on
 * `trigger()` (SIGHUP), and when a swap deferred by the running version (its prepare, drain or flush
 * failed) is due again. The deferral's log line promises that retry ("retried in N s"), and it is the
 * retry of a check already asked for, so it comes with `--interval 0` too, and with an interval longer
 * than the back-off, on time. A retry check that fails (the edge unreachable) is tried again with the
 * deferral's own back-off (`deferRetryMs` doubling up to `deferRetryMaxMs`, at least 1 s) until a check
 * gets through: otherwise, with `--interval 0`, the owed retry was lost. One check at a time: a trigger
 * during a check (which lasts as long as its swap) runs one more right after it, so none is dropped.
 */
export class UpdateChecks {
  private readonly supervisor: CheckedSupervisor
  private readonly intervalMs: number
  private readonly onError: (message: string) => void
  private checking = false
  private again = false
  private ended = false
  private poll: NodeJS.Timeout | null = null
  private retry: NodeJS.Timeout | null = null
  /** Checks failed in a row (0 after one that got through). */
  private failures = 0

  constructor(supervisor: CheckedSupervisor, intervalMs: number, onError: (message: string) => void) {
    this.supervisor = supervisor
    this.intervalMs = intervalMs
    this.onError = onError
  }

  /**
   * Starts the polls (none with an interval of 0), and the retry of each swap deferred before the agent
   * restarted (the supervisor keeps them in its run files): at once when already due, else when due.
   */
  start(): void {
    if (this.ended) return
    if (this.intervalMs > 0) this.poll = setInterval(() => this.trigger(), this.intervalMs)
    if (this.supervisor.deferred.some((d) => d.retryAt <= Date.now())) this.trigger()
    else this.scheduleRetry()
  }

  /** Checks now, or right after the check under way. */
  trigger(): void {
    if (this.ended) return
    if (this.checking) {
      this.again = true
      return
    }
    void this.run()
  }

  /** No check starts any more (one under way ends with its swap, which the supervisor's stop ends). */
  stop(): void {
    this.ended = true
    if (this.poll) clearInterval(this.poll)
    if (this.retry) clearTimeout(this.retry)
    this.poll = null
    this.retry = null
  }

  private async run(): Promise<void> {
    this.checking = true
    try {
      do {
        this.again = false
        try {
          await this.supervisor.checkForUpdate()
          this.failures = 0
        } catch (error) {
          this.failures += 1
          this.onError(`update check failed: ${(error as Error).message}`)
        }
      } while (this.again && !this.ended)
    } finally {
      this.checking = false
    }
    this.scheduleRetry()
  }

  /**
   * Sets the timer for the earliest deferred swap still backing off, or for the next try of a failed
   * check that owed a deferral its retry, whichever comes first (neither: no timer).
   */
  private scheduleRetry(): void {
    if (this.retry) clearTimeout(this.retry)
    this.retry = null
    if (this.ended) return
    const now = Date.now()
    const deferred = this.supervisor.deferred
    // A deferral already due was offered by the check that just ran (and the channel may have moved on),
    // unless that check failed: then nobody has offered it, and nothing else would try again.
    const waits = deferred.filter((d) => d.retryAt > now).map((d) => d.retryAt - now + RETRY_SLACK_MS)
    if (this.failures > 0 && deferred.some((d) => d.retryAt <= now)) waits.push(this.failedRetryMs())
    if (waits.length === 0) return
    // Past 2^31 - 1 ms Node fires a timer after 1 ms: capped, a wait that long only checks early.
    this.retry = setTimeout(() => this.trigger(), Math.min(MAX_TIMER_MS, ...waits))
  }

  /** The wait before the next try of a check that failed `failures` times in a row. */
  private failedRetryMs(): number {
    const { firstMs, maxMs } = this.supervisor.deferRetryPolicy
    const doubled = firstMs * 2 ** Math.min(30, this.failures - 1)
    return Math.max(MIN_FAILED_RETRY_MS, Math.min(maxMs, doubled))
  }
}
