import { AgentError } from '../errors.ts'
import { linkSignal } from './linked-signal.ts'

/**
 * The overall bound on one download (`transferMinRateBps`, `transferGraceSeconds` in the agent's
 * config): it must finish within `graceSeconds` plus its size at `minRateBps`. Each answer is judged
 * on its own by the stall timer and readBody's minimum rate, and an attempt that moved the file forward
 * is no failure; without this bound an edge trickling just above 1 KiB/s, or dropping the connection
 * after every few bytes, kept an update busy for as long as it liked.
 */
export interface TransferBound {
  /** 0 turns the bound off. */
  minRateBps: number
  graceSeconds: number
}

export const DEFAULT_TRANSFER_BOUND: TransferBound = { minRateBps: 4096, graceSeconds: 120 }

/** The bound a device's config sets (its optional `transferMinRateBps`, `transferGraceSeconds`). */
export function transferBoundOf(config: {
  transferMinRateBps?: number | undefined
  transferGraceSeconds?: number | undefined
}): TransferBound {
  return {
    minRateBps: config.transferMinRateBps ?? DEFAULT_TRANSFER_BOUND.minRateBps,
    graceSeconds: config.transferGraceSeconds ?? DEFAULT_TRANSFER_BOUND.graceSeconds,
  }
}

/**
 * The milliseconds a transfer of `bytes` may take, or null for none. The device's own rate cap counts:
 * a download capped below the minimum rate gets the time the cap needs.
 */
export function transferDeadlineMs(bytes: number, bound: TransferBound, bandwidthCapBps = 0): number | null {
  if (bound.minRateBps <= 0) return null
  const rate = bandwidthCapBps > 0 ? Math.min(bound.minRateBps, bandwidthCapBps) : bound.minRateBps
  return Math.ceil(bound.graceSeconds * 1000 + (bytes * 1000) / rate)
}

/**
 * The longest a Node timer waits: past it setTimeout fires after 1 ms, so a bound longer than this
 * (~24.8 days: 8.8 GB at the default 4096 B/s, 2.1 GB under a 1 KB/s bandwidthCapBps) cut every such
 * transfer before its first byte. Such a bound is held to this.
 */
const MAX_TIMER_MS = 2 ** 31 - 1

/** A deadline under way (startDeadline): its signal, why it aborts, and the timer to clear. */
export interface RunningDeadline {
  /** The caller's signal, aborting also when the deadline passes (linked to it until `clear`). */
  signal: AbortSignal | undefined
  /** Whether the deadline itself has passed (not the caller's own abort). */
  expired: () => boolean
  /** The `network` error the deadline aborts with, saying which bound was missed. */
  reason: AgentError
  /** Clears the timer and unlinks the signal from the caller's. */
  clear: () => void
}

/**
 * Starts a deadline `ms` from now (null: never; at most MAX_TIMER_MS) over the caller's `signal`, for
 * work of several steps that share it (an update's plans, re-plans included: plan-update.ts).
 */
export function startDeadline(
  ms: number | null,
  signal: AbortSignal | undefined,
  describe: (ms: number) => string,
): RunningDeadline {
  if (ms === null) {
    const reason = new AgentError('network', describe(Number.POSITIVE_INFINITY), { deadline: true })
    return { signal, expired: () => false, reason, clear: () => {} }
  }
  const bounded = Math.min(Math.max(0, ms), MAX_TIMER_MS)
  const reason = new AgentError('network', describe(bounded), { deadline: true })
  // Linked, not AbortSignal.any: `clear` unlinks it from the caller's signal (linked-signal.ts).
  const deadline = linkSignal(signal)
  let passed = false
  const timer = setTimeout(() => {
    passed = true
    deadline.abort(reason)
  }, bounded)
  return {
    signal: deadline.signal,
    expired: () => passed && !signal?.aborted,
    reason,
    clear: () => {
      clearTimeout(timer)
      deadline.release()
    },
  }
}

/**
 * Runs `transfer` with a signal that also aborts `ms` after the start (null: never; at most
 * MAX_TIMER_MS). A transfer cut by the deadline fails as `network` (exit 4) saying so, whatever error
 * the abort surfaced as inside; the caller's own abort (`signal`) stays what it was.
 */
export async function withDeadline<T>(
  ms: number | null,
  signal: AbortSignal | undefined,
  describe: (ms: number) => string,
  transfer: (signal: AbortSignal | undefined) => Promise<T>,
): Promise<T> {
  if (ms === null) return transfer(signal)
  const deadline = startDeadline(ms, signal, describe)
  try {
    return await transfer(deadline.signal)
  } catch (error) {
    if (deadline.expired()) throw deadline.reason
    throw error
  } finally {
    deadline.clear()
  }
}
