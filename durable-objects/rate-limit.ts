/**
 * A per-client token bucket: `perMinute` batches may arrive in a burst, then one more every
 * 60 / perMinute seconds. Stored as (tokens, refilledAt) and refilled lazily, so no timer is needed.
 */
export interface TokenBucket {
  tokens: number
  refilledAt: number
}

export type TakeResult =
  | { ok: true; bucket: TokenBucket }
  | { ok: false; bucket: TokenBucket; retryAfterSeconds: number }

export function takeToken(bucket: TokenBucket | undefined, perMinute: number, now: number): TakeResult {
  const ratePerMs = perMinute / 60_000
  // Clock skew (now < refilledAt) refills nothing rather than going negative.
  const elapsed = bucket === undefined ? 0 : Math.max(0, now - bucket.refilledAt)
  const tokens = Math.min(perMinute, (bucket?.tokens ?? perMinute) + elapsed * ratePerMs)
  if (tokens >= 1) return { ok: true, bucket: { tokens: tokens - 1, refilledAt: now } }
  const retryAfterSeconds = Math.max(1, Math.ceil((1 - tokens) / ratePerMs / 1000))
  return { ok: false, bucket: { tokens, refilledAt: now }, retryAfterSeconds }
}

/**
 * Token buckets kept in instance memory for at most `capacity` clients, least recently used first out.
 * For limits that guard cost rather than data: an evicted or restarted object only hands a client a
 * fresh burst, and nothing is written per request.
 */
export class MemoryBuckets {
  private readonly buckets = new Map<string, TokenBucket>()
  private readonly capacity: number

  constructor(capacity: number) {
    this.capacity = capacity
  }

  take(clientId: string, perMinute: number, now: number): TakeResult {
    const result = takeToken(this.buckets.get(clientId), perMinute, now)
    // Re-inserting moves the client to the young end of the Map's insertion order.
    this.buckets.delete(clientId)
    this.buckets.set(clientId, result.bucket)
    if (this.buckets.size > this.capacity) {
      const oldest = this.buckets.keys().next().value
      if (oldest !== undefined) this.buckets.delete(oldest)
    }
    return result
  }
}
