import type { SlaTier } from '../../schemas/swap.ts'

/** Retry-After never goes below 1 s (HTTP's unit) nor above a minute. */
const MIN_RETRY_S = 1
const MAX_RETRY_S = 60

export interface BufferPressure {
  /** Buffered bytes and writes against their caps; the fill is the larger of the two ratios. */
  bytes: number
  maxBytes: number
  writes: number
  maxWrites: number
  /** Writes arriving per second (recent), and how fast the last replays drained them. */
  arrivalPerSecond: number
  drainPerSecond: number
  /** How much longer the swap is expected to hold writes, in seconds. */
  expectedHoldSeconds: number
}

export type Admission = { admit: true } | { admit: false; retryAfterSeconds: number; reason: string }

export function fillOf(p: Pick<BufferPressure, 'bytes' | 'maxBytes' | 'writes' | 'maxWrites'>): number {
  return Math.max(p.bytes / p.maxBytes, p.writes / p.maxWrites)
}

/**
 * Whether a new write of `size` bytes from a client of `tier` may join the buffer. Each tier starts being
 * refused at its own fill level (`shedAt`), everyone at the hard caps. The Retry-After grows with how far
 * past its threshold the buffer is and with the load (arrivals outpacing the drain), is scaled by the
 * tier's `retryFactor` (high priority waits less), and is at least the expected rest of the swap.
 */
export function admit(tier: SlaTier, size: number, p: BufferPressure): Admission {
  const fillAfter = fillOf({ ...p, bytes: p.bytes + size, writes: p.writes + 1 })
  const full = p.bytes + size > p.maxBytes || p.writes + 1 > p.maxWrites
  if (!full && fillAfter < tier.shedAt) return { admit: true }
  return {
    admit: false,
    retryAfterSeconds: retryAfterSeconds(tier, fillAfter, p),
    reason: full ? 'buffer full' : `buffer ${Math.round(fillAfter * 100)} % full (tier ${tier.name})`,
  }
}

export function retryAfterSeconds(tier: SlaTier, fill: number, p: BufferPressure): number {
  const headroom = Math.max(1e-6, 1 - tier.shedAt)
  const over = Math.min(1, Math.max(0, (fill - tier.shedAt) / headroom))
  const load = p.drainPerSecond > 0 ? p.arrivalPerSecond / p.drainPerSecond : 1
  const base = Math.max(MIN_RETRY_S, p.expectedHoldSeconds)
  const seconds = base * (1 + over) * (1 + Math.min(4, Math.max(0, load))) * tier.retryFactor
  return Math.min(MAX_RETRY_S, Math.max(MIN_RETRY_S, Math.ceil(seconds)))
}

/**
 * Rate-limits retries: a client told to come back in n seconds that comes back sooner is refused again
 * with the time it still has to wait, without touching the buffer. Bounded; old entries are dropped.
 */
export class RetryGate {
  private readonly until = new Map<string, number>()
  private readonly max: number

  constructor(max = 10_000) {
    this.max = max
  }

  /** Seconds the client must still wait (0: may try). */
  waitFor(client: string, now: number): number {
    const t = this.until.get(client)
    if (t === undefined) return 0
    if (t <= now) {
      this.until.delete(client)
      return 0
    }
    return Math.ceil((t - now) / 1000)
  }

  refused(client: string, retryAfterSeconds: number, now: number): void {
    if (this.until.size >= this.max) {
      const oldest = this.until.keys().next().value
      if (oldest !== undefined) this.until.delete(oldest)
    }
    this.until.delete(client)
    this.until.set(client, now + retryAfterSeconds * 1000)
  }

  clear(): void {
    this.until.clear()
  }
}
