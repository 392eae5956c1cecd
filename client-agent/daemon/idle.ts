import { availableParallelism, loadavg } from 'node:os'
import type { DaemonSettings } from '../config.ts'

/** Returns the host's current load average per core (1-minute). Injected in tests. */
export type LoadSampler = () => number

export const osLoadPerCore: LoadSampler = () => (loadavg()[0] ?? 0) / Math.max(availableParallelism(), 1)

/**
 * `high-load`, not `busy`: `busy` is the exit-11 code (another process holds the artifact), and a
 * script reading `--json` should not take a loaded host for a lock held by someone.
 */
export type NotIdleReason = 'metered' | 'high-load' | 'no-budget'

/** Why the daemon must not download right now, or null when the device is idle enough to prefetch. */
export function notIdleReason(settings: DaemonSettings, sample: LoadSampler): NotIdleReason | null {
  if (settings.stagingBudgetBytes <= 0) return 'no-budget'
  if (settings.metered && !settings.allowMetered) return 'metered'
  if (sample() >= settings.idleLoadPerCore) return 'high-load'
  return null
}
