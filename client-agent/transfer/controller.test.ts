import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import type { RangePlan } from './controller.ts'
import { RangeController } from './controller.ts'

const KiB = 1024
const MiB = 1024 * KiB

interface Link {
  bytesPerMs: number
  rttMs: number
}

/**
 * A loss-free synthetic link: each round issues `parallel` ranges together, they share the bandwidth
 * fairly and all complete after one RTT plus their transfer time. Returns the plan of every round.
 */
function drive(
  c: RangeController,
  link: Link,
  rounds: number,
  start = 0,
): { plans: RangePlan[]; now: number } {
  const plans: RangePlan[] = []
  let now = start
  for (let i = 0; i < rounds; i++) {
    const plan = c.next(now)
    plans.push(plan)
    const firstByteAt = now + link.rttMs
    const finishedAt = firstByteAt + (plan.rangeBytes * plan.parallel) / link.bytesPerMs
    for (let r = 0; r < plan.parallel; r++) {
      c.onRangeComplete({ bytes: plan.rangeBytes, startedAt: now, firstByteAt, finishedAt })
    }
    now = finishedAt
  }
  return { plans, now }
}

const inflight = (p: RangePlan) => p.rangeBytes * p.parallel
/** 100 Mbit/s, 20 ms. */
const fast: Link = { bytesPerMs: 12_500, rttMs: 20 }

describe('RangeController', () => {
  it('starts small and doubles in-flight bytes per round while bandwidth grows', () => {
    const c = new RangeController({ blockSize: 4 * KiB })
    const { plans } = drive(c, fast, 4)
    expect(plans[0]).toEqual({ rangeBytes: 64 * KiB, parallel: 1 })
    expect(c.explain().phase).toBe('startup')
    for (let i = 1; i < plans.length; i++)
      expect(inflight(plans[i]!)).toBeGreaterThan(inflight(plans[i - 1]!))
  })

  it('leaves startup once bandwidth plateaus and keeps in-flight near bandwidth x horizon', () => {
    const c = new RangeController({ blockSize: 4 * KiB })
    drive(c, fast, 40)
    const e = c.explain()
    expect(e.phase).toBe('probe')
    // Delivery rate measures the link, request latency included: between 60 % and 100 % of the bandwidth.
    expect(e.bandwidthBytesPerSec).toBeGreaterThan(0.6 * fast.bytesPerMs * 1000)
    expect(e.bandwidthBytesPerSec).toBeLessThanOrEqual(fast.bytesPerMs * 1000 * 1.001)
    expect(e.minRttMs).toBe(fast.rttMs)
    // Horizon here is max(16 RTT, 250 ms) = 320 ms; in-flight within the probe gains of that BDP.
    const bdp = fast.bytesPerMs * 320
    expect(e.rangeBytes * e.parallel).toBeGreaterThan(0.5 * bdp)
    expect(e.rangeBytes * e.parallel).toBeLessThan(1.5 * bdp)
  })

  it('halves in-flight bytes on an error, holds during the cool-down, then recovers', () => {
    const c = new RangeController({ blockSize: 4 * KiB, errorCooldownMs: 2_000 })
    let { now } = drive(c, fast, 40)
    const before = c.next(now)
    c.onRangeError(now, 'timeout')
    const after = c.next(now)
    expect(inflight(after)).toBeLessThanOrEqual(inflight(before) / 2 + 4 * KiB)
    expect(c.explain().limitedBy).toContain('errorBackoff')
    expect(c.snapshot().lastError).toEqual({ at: now, kind: 'timeout' })

    const errorAt = now
    const during = drive(c, fast, 100, now)
    const inCooldown = during.plans.filter((_, i) => i > 0)
    expect(during.now).toBeGreaterThan(errorAt + 2_000)
    // Still backed off for as long as the cool-down lasts (rounds here are ~320 ms).
    expect(inflight(inCooldown[0]!)).toBeLessThanOrEqual(inflight(before))
    now = during.now
    const recovered = c.explain()
    expect(recovered.errorScale).toBe(1)
    expect(recovered.limitedBy).not.toContain('errorBackoff')
    expect(inflight(c.next(now))).toBeGreaterThan(0.6 * inflight(before))
  })

  it('backs off repeated errors down to the minimum range, then fewer ranges', () => {
    const c = new RangeController({ blockSize: 4 * KiB, minRange: 256 * KiB, maxParallel: 4 })
    const { now } = drive(c, fast, 40)
    for (let i = 0; i < 10; i++) c.onRangeError(now + i, 'reset')
    // The back-off bottoms out at 1/16 of the ~4 MB target, below one minimum-size range.
    expect(c.next(now + 10)).toEqual({ rangeBytes: 256 * KiB, parallel: 1 })
    expect(c.explain().errorScale).toBe(1 / 16)
  })

  it('uses fewer, smaller ranges when the host is loaded or short of memory', () => {
    const c = new RangeController({ blockSize: 4 * KiB, maxParallel: 8 })
    // A link where one range gets little: 8 parallel ranges pay off.
    const { now } = drive(c, { bytesPerMs: 50_000, rttMs: 5 }, 40)
    const calm = c.next(now)
    c.onHostSample({ loadPerCore: 3, freeMemBytes: 8 * 1024 * MiB })
    const loaded = c.next(now)
    expect(loaded.parallel).toBeLessThanOrEqual(Math.max(1, Math.floor(calm.parallel / 2)))
    expect(inflight(loaded)).toBeLessThan(inflight(calm))
    expect(c.explain().limitedBy).toContain('hostLoad')

    c.onHostSample({ loadPerCore: 0.2, freeMemBytes: 64 * MiB })
    const tight = c.next(now)
    expect(inflight(tight)).toBeLessThanOrEqual(Math.max(64 * KiB, 64 * MiB * 0.25 * 0.5))
    expect(c.explain().limitedBy).toContain('lowMemory')

    c.onHostSample({ loadPerCore: 0.2, freeMemBytes: 8 * 1024 * MiB })
    expect(c.next(now)).toEqual(calm)
  })

  it('starts from the snapshot of a previous session, or from scratch without estimates', () => {
    const earlier = new RangeController({ blockSize: 4 * KiB })
    drive(earlier, fast, 40)
    const prior = earlier.snapshot()
    const warm = new RangeController({ blockSize: 4 * KiB, prior })
    const plan = warm.next(1_000_000)
    expect(warm.explain().phase).toBe('probe')
    expect(plan.parallel).toBe(prior.parallelLevel)
    expect(inflight(plan)).toBeGreaterThan(0.5 * fast.bytesPerMs * 320)

    const cold = new RangeController({ blockSize: 4 * KiB, prior: { ...prior, bandwidthBytesPerSec: null } })
    expect(cold.next(0)).toEqual({ rangeBytes: 64 * KiB, parallel: 1 })
    expect(cold.explain().phase).toBe('startup')
  })

  it('explains itself in plain JSON', () => {
    const c = new RangeController({ blockSize: 4 * KiB })
    drive(c, fast, 10)
    const snap = c.snapshot()
    expect(JSON.parse(JSON.stringify(snap))).toEqual(snap)
    expect(snap.reason).toMatch(/startup|probe|drain/)
    expect(snap.rounds).toBe(10)
  })

  it('rejects nonsensical options', () => {
    expect(() => new RangeController({ blockSize: 0 })).toThrow(RangeError)
    expect(() => new RangeController({ blockSize: 4096, minRange: MiB, maxRange: KiB })).toThrow(RangeError)
    expect(() => new RangeController({ blockSize: 4096, minParallel: 3, maxParallel: 2 })).toThrow(RangeError)
  })

  it('keeps every plan within bounds and block-aligned, whatever happens', () => {
    const event = fc.oneof(
      fc.record({
        type: fc.constant('done' as const),
        latency: fc.double({ min: 0, max: 2_000, noNaN: true }),
        transfer: fc.double({ min: 0, max: 60_000, noNaN: true }),
        bytes: fc.integer({ min: 1, max: 64 * MiB }),
      }),
      fc.record({
        type: fc.constant('error' as const),
        gap: fc.double({ min: 0, max: 10_000, noNaN: true }),
      }),
      fc.record({
        type: fc.constant('host' as const),
        loadPerCore: fc.double({ min: 0, max: 16, noNaN: true }),
        freeMemBytes: fc.integer({ min: 0, max: 2 ** 40 }),
      }),
    )
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 2 * MiB }),
        fc.integer({ min: 1, max: 4 * MiB }),
        fc.integer({ min: 1, max: 16 * MiB }),
        fc.integer({ min: 1, max: 4 }),
        fc.integer({ min: 0, max: 12 }),
        fc.array(event, { maxLength: 60 }),
        (blockSize, a, b, minParallel, extraParallel, events) => {
          const [minRange, maxRange] = a <= b ? [a, b] : [b, a]
          const maxParallel = minParallel + extraParallel
          const c = new RangeController({ blockSize, minRange, maxRange, minParallel, maxParallel })
          const hi = Math.max(blockSize, Math.floor(maxRange / blockSize) * blockSize)
          const lo = Math.min(hi, Math.ceil(minRange / blockSize) * blockSize)
          const check = (plan: RangePlan) => {
            expect(plan.rangeBytes % blockSize).toBe(0)
            expect(plan.rangeBytes).toBeGreaterThanOrEqual(lo)
            expect(plan.rangeBytes).toBeLessThanOrEqual(hi)
            expect(Number.isInteger(plan.parallel)).toBe(true)
            expect(plan.parallel).toBeGreaterThanOrEqual(minParallel)
            expect(plan.parallel).toBeLessThanOrEqual(maxParallel)
          }
          let now = 0
          for (const e of events) {
            check(c.next(now))
            if (e.type === 'done') {
              const startedAt = now
              now += e.latency + e.transfer
              c.onRangeComplete({
                bytes: e.bytes,
                startedAt,
                firstByteAt: startedAt + e.latency,
                finishedAt: now,
              })
            } else if (e.type === 'error') {
              now += e.gap
              c.onRangeError(now, 'timeout')
            } else {
              c.onHostSample(e)
            }
          }
          check(c.next(now))
        },
      ),
      { numRuns: 200 },
    )
  })
})
