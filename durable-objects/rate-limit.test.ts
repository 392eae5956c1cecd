import { describe, expect, it } from 'vitest'
import { MemoryBuckets, type TokenBucket, takeToken } from './rate-limit.ts'

describe('takeToken', () => {
  it('allows a burst of perMinute, then one per 60 / perMinute seconds', () => {
    let bucket: TokenBucket | undefined
    for (let i = 0; i < 6; i++) {
      const taken = takeToken(bucket, 6, 1000)
      expect(taken.ok).toBe(true)
      bucket = taken.bucket
    }
    const refused = takeToken(bucket, 6, 1000)
    expect(refused).toMatchObject({ ok: false, retryAfterSeconds: 10 })
    expect(takeToken(refused.bucket, 6, 1000 + 9_000).ok).toBe(false)
    expect(takeToken(refused.bucket, 6, 1000 + 10_000).ok).toBe(true)
  })

  it('refills nothing when the clock goes backwards', () => {
    const empty = { tokens: 0, refilledAt: 50_000 }
    expect(takeToken(empty, 60, 10_000).ok).toBe(false)
  })
})

describe('MemoryBuckets', () => {
  it('keeps one bucket per client and forgets the least recently used beyond its capacity', () => {
    const buckets = new MemoryBuckets(2)
    expect(buckets.take('a', 1, 0).ok).toBe(true)
    expect(buckets.take('b', 1, 0).ok).toBe(true)
    expect(buckets.take('a', 1, 0).ok).toBe(false)
    // 'a' was used last, so 'c' pushes 'b' out: 'b' starts afresh, 'a' is still limited.
    expect(buckets.take('c', 1, 0).ok).toBe(true)
    expect(buckets.take('a', 1, 0).ok).toBe(false)
    expect(buckets.take('b', 1, 0).ok).toBe(true)
  })
})
