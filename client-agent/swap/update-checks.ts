import type { Supervisor } from './supervisor.ts'

/** What the checks need of the supervisor: the check itself, and when each deferred swap is due again. */
export type CheckedSupervisor = Pick<Supervisor, 'checkForUpdate' | 'deferred'>

/**
 * A deferred swap's retry check comes this long after its back-off ends: a timer may fire a millisecond
 * early by the wall clock, and a check that finds the version still backing off refuses it.
 */
const RETRY_SLACK_MS = 20

/**
 * When `deltaport run` asks for a new version: every `intervalMs` (0: never on its own), at once on
 * `trigger()` (SIGHUP), and when a swap deferred by the running version (its prepare, drain or flush
 * failed) is due again. The deferral's log line promises that retry ("retried in N s"), and it is the
 * retry of a check already asked for, so it comes with `--interval 0` too, and with an interval longer
 * than the back-off, on time. One check at a time: a trigger during a check (which lasts as long as its
 * swap) runs one more right after it, so none is dropped.
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

  constructor(supervisor: CheckedSupervisor, intervalMs: number, onError: (message: string) => void) {
    this.supervisor = supervisor
    this.intervalMs = intervalMs
    this.onError = onError
  }

  /** Starts the polls (none with an interval of 0). */
  start(): void {
    if (this.intervalMs > 0 && !this.ended) this.poll = setInterval(() => this.trigger(), this.intervalMs)
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
        } catch (error) {
          this.onError(`update check failed: ${(error as Error).message}`)
        }
      } while (this.again && !this.ended)
    } finally {
      this.checking = false
    }
    this.scheduleRetry()
  }

  /** Sets the timer for the earliest deferred swap still backing off (none: no timer). */
  private scheduleRetry(): void {
    if (this.retry) clearTimeout(this.retry)
    this.retry = null
    if (this.ended) return
    const now = Date.now()
    // A deferral already due was offered by the check that just ran (and the channel may have moved on).
    const due = this.supervisor.deferred.map((d) => d.retryAt).filter((at) => at > now)
    if (due.length === 0) return
    this.retry = setTimeout(() => this.trigger(), Math.min(...due) - now + RETRY_SLACK_MS)
  }
}
