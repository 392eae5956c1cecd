import type { SwapSettings } from '../../schemas/swap.ts'

type CrashSettings = Pick<
  SwapSettings,
  'crashLoopExits' | 'crashLoopWindowMs' | 'restartBackoffMs' | 'restartBackoffMaxMs'
>

/**
 * The serving version's recent exits and what they imply: how long to wait before restarting it, and
 * whether a version swapped in recently is crash-looping. Only the serving version counts: its exits are
 * forgotten when another version exits.
 */
export class CrashHistory {
  private readonly settings: CrashSettings
  /** Recent exits (times) of the serving version, for the restart back-off; reset when the version changes. */
  private exits: { version: string; at: number[] } = { version: '', at: [] }

  constructor(settings: CrashSettings) {
    this.settings = settings
  }

  /** Records an exit of `version`, keeping the exits within `crashLoopWindowMs` (for back-off and loops). */
  noteExit(version: string, now: number): void {
    if (this.exits.version !== version) this.exits = { version, at: [] }
    const window = this.settings.crashLoopWindowMs
    this.exits.at = [...this.exits.at.filter((t) => now - t <= window), now].slice(-1000)
  }

  /**
   * Exponential restart back-off: doubles with each exit of the version within `crashLoopWindowMs`, and
   * with each failed restart attempt, capped at `restartBackoffMaxMs`. A service that crashes once in a
   * while comes back after `restartBackoffMs`; one in a crash loop is not hammered.
   */
  restartDelay(attempt: number): number {
    const { restartBackoffMs, restartBackoffMaxMs } = this.settings
    const recent = Math.max(1, this.exits.at.length)
    return Math.min(restartBackoffMaxMs, restartBackoffMs * 2 ** Math.min(30, recent - 1 + attempt))
  }

  /**
   * Whether the version last noted exited `crashLoopExits` times since `since` (its switch), which was at
   * most `crashLoopWindowMs` before `now`.
   */
  loopingSince(since: number, now: number): boolean {
    const { crashLoopExits, crashLoopWindowMs } = this.settings
    return (
      now - since <= crashLoopWindowMs && this.exits.at.filter((t) => t >= since).length >= crashLoopExits
    )
  }
}
