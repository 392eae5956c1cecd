import type { SwapSettings } from '../../schemas/swap.ts'
import type { SwapProxy } from './proxy.ts'

type HoldSettings = Pick<SwapSettings, 'restartHoldMs' | 'healthTimeoutMs'>

/**
 * The supervisor's side of the proxy's restart hold: whether the requests that find nothing running wait
 * while a crashed service restarts (or while a fall-back starts the previous version), how long they may
 * wait, what Retry-After they get if turned away, and how the hold ends: the restarted process serves
 * (`release`), or nobody will take what it holds in time (`abandon`).
 */
export class RestartHold {
  private readonly proxy: SwapProxy
  private readonly settings: HoldSettings
  /** Aborted when the agent stops: no hold begins then. */
  private readonly stopSignal: AbortSignal
  /** Tells how many requests an abandoned hold turned away, and why. */
  private readonly reportTurnedAway: (message: string) => void
  /** Ends the restart hold when the restart has not served within `restartHoldMs` of the crash. */
  private timer: NodeJS.Timeout | null = null
  /**
   * The hold under way is a fall-back's (`readsForFallBack`): its writes belong to the fall-back's
   * replay, so ending the hold early answers only the reads.
   */
  private fallBack = false
  /**
   * When the restart under way is next attempted (Retry-After for the requests it turns away), in
   * `performance.now()` time: a wall-clock step must not make the hint an hour long or always 1 s.
   */
  restartDueAt = 0

  constructor(
    proxy: SwapProxy,
    settings: HoldSettings,
    stopSignal: AbortSignal,
    reportTurnedAway: (message: string) => void,
  ) {
    this.proxy = proxy
    this.settings = settings
    this.stopSignal = stopSignal
    this.reportTurnedAway = reportTurnedAway
  }

  /**
   * Starts holding the requests that arrive while the crashed service restarts, as a swap holds them:
   * writes join the write buffer (mode `buffer`: same admission, journal and replay), bodiless safe reads
   * wait for the restarted process. Until `restartHoldMs` after the crash at most; not when the back-off
   * alone is that long (they would only get their 503 later), nor while stopping. Asked only outside a
   * swap or a fall-back: they hold writes their own way, and their replay must not meet this one. True if
   * it holds.
   */
  forRestart(delay: number): boolean {
    const { restartHoldMs } = this.settings
    if (this.stopSignal.aborted || this.proxy.mode !== 'pass') return false
    if (this.proxy.holdingForRestart || delay >= restartHoldMs) return false
    // Admission's Retry-After starts from how long the hold is expected to last.
    this.proxy.expectedHoldSeconds = Math.max(1, delay / 1000)
    this.proxy.mode = 'buffer'
    this.proxy.beginRestartHold(() => Math.max(1, Math.ceil((this.restartDueAt - performance.now()) / 1000)))
    this.timer = setTimeout(
      () => void this.abandon(`the service did not come back within ${restartHoldMs} ms`),
      restartHoldMs,
    )
    return true
  }

  /**
   * During a fall-back the reads that find nothing running wait for the previous version, as they wait
   * for a restart (the fall-back already holds the writes: mode `buffer`), for `restartHoldMs` at most;
   * they are sent to it once it is healthy (`endFallBack`). A restart hold already under way goes on
   * as this one.
   */
  readsForFallBack(version: string): void {
    const { restartHoldMs, healthTimeoutMs } = this.settings
    if (this.stopSignal.aborted || restartHoldMs === 0) return
    this.fallBack = true
    if (this.proxy.holdingForRestart) return
    // Retry-After for a read turned away: the previous version is up within its health timeout.
    const dueAt = performance.now() + Math.min(restartHoldMs, healthTimeoutMs)
    this.proxy.beginRestartHold(() => Math.max(1, Math.ceil((dueAt - performance.now()) / 1000)))
    this.timer = setTimeout(
      () => void this.abandon(`${version} did not come back within ${restartHoldMs} ms`),
      restartHoldMs,
    )
  }

  /** The previous version serves: the reads held for it go to it now. */
  endFallBack(): void {
    if (!this.fallBack) return
    this.fallBack = false
    this.release()
  }

  /**
   * The restarted process is active: the reads held for it go to it now (the held writes are left to
   * the supervisor's replay).
   */
  release(): void {
    this.clearTimer()
    this.proxy.releaseRestartHold()
  }

  /**
   * Ends a restart hold that will not be served: its requests get 503 + Retry-After (`keepWrites`: a swap
   * takes over and replays the held writes; only the reads are answered). New writes go live again, and
   * get 503 while nothing runs. A fall-back's hold always keeps its writes: its replay takes them.
   */
  async abandon(why: string, keepWrites = false): Promise<void> {
    this.clearTimer()
    const keep = keepWrites || this.fallBack
    this.fallBack = false
    if (!this.proxy.holdingForRestart) return
    if (!keep && this.proxy.mode === 'buffer') this.proxy.mode = 'pass'
    const turnedAway = await this.proxy.abandonRestartHold(why, keep)
    if (turnedAway > 0)
      this.reportTurnedAway(
        `${turnedAway} request${turnedAway === 1 ? '' : 's'} held for the restart got 503: ${why}`,
      )
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer)
    this.timer = null
  }
}
