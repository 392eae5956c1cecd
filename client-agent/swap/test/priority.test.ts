import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { SlaTier, SwapSettings } from '../../../schemas/swap.ts'
import { admit, type BufferPressure, RetryGate, retryAfterSeconds } from '../admission.ts'
import { ClientLoadTracker, replayOrder, replayPriorities, TierMap } from '../priority.ts'

const HOUR = 3_600_000
const tiers = new TierMap(
  SwapSettings.parse({
    tiers: [
      { name: 'gold', weight: 4, clients: ['g1', 'g2'], shedAt: 0.95, retryFactor: 0.5 },
      { name: 'silver', weight: 2, clients: ['s1'], shedAt: 0.9 },
    ],
    defaultTier: { name: 'bronze', weight: 1, shedAt: 0.7, retryFactor: 2 },
  }),
)

describe('replay priority', () => {
  it('orders by tier first, keeping each client in arrival order', () => {
    const loads = new ClientLoadTracker(() => 10 * HOUR)
    const writes = [
      { id: 1, client: 'b1' },
      { id: 2, client: 'g1' },
      { id: 3, client: 'b1' },
      { id: 4, client: 's1' },
      { id: 5, client: 'g1' },
    ]
    const priority = replayPriorities(['b1', 'g1', 's1'], tiers, loads)
    expect(replayOrder(writes, priority).map((w) => w.id)).toEqual([2, 5, 4, 1, 3])
  })

  it('within a tier, replays the client with the lighter forecast load first', () => {
    const now = 100 * HOUR
    const loads = new ClientLoadTracker(() => now)
    // Three days of hourly history: g1 is busy (≈ 500 requests an hour), g2 quiet (≈ 5).
    loads.seed(
      'g1',
      Array.from({ length: 72 }, (_, h) => 500 + 50 * Math.sin((2 * Math.PI * h) / 24)),
      now,
    )
    loads.seed(
      'g2',
      Array.from({ length: 72 }, (_, h) => 5 + Math.sin((2 * Math.PI * h) / 24)),
      now,
    )
    expect(loads.forecastNextHour('g1')).toBeGreaterThan(300)
    expect(loads.forecastNextHour('g2')).toBeLessThan(20)
    const priority = replayPriorities(['g1', 'g2', 'b1'], tiers, loads)
    expect(priority.get('g2')!).toBeGreaterThan(priority.get('g1')!)
    // The load factor never lets a lower tier overtake one with twice its weight.
    expect(priority.get('g1')!).toBeGreaterThan(priority.get('b1')!)
    const order = replayOrder(
      [
        { id: 1, client: 'g1' },
        { id: 2, client: 'b1' },
        { id: 3, client: 'g2' },
      ],
      priority,
    )
    expect(order.map((w) => w.client)).toEqual(['g2', 'g1', 'b1'])
  })

  it('counts requests per hour and forgets the least recently seen client past its bound', () => {
    let now = 5 * HOUR
    const loads = new ClientLoadTracker(() => now)
    for (let i = 0; i < 30; i++) loads.record('c')
    now += HOUR
    for (let i = 0; i < 30; i++) loads.record('c')
    expect(loads.forecastNextHour('c')).toBeCloseTo(30, 0)
    expect(loads.forecastNextHour('never-seen')).toBe(0)
  })

  it('forgets a forgotten client’s forecast too: nothing of it is kept, or given back when it returns', () => {
    const now = 100 * HOUR
    const loads = new ClientLoadTracker(() => now)
    loads.seed(
      'heavy',
      Array.from({ length: 72 }, () => 500),
      now,
    )
    expect(loads.forecastNextHour('heavy')).toBeGreaterThan(300)
    // 10 000 other client ids (the bound; a hostile client can send as many): 'heavy' is forgotten.
    for (let i = 0; i < 10_000; i++) loads.record(`other-${i}`)
    // Before, its cached forecast outlived it: kept for good (one per client id ever forecast, without
    // a bound) and returned as if it were still busy.
    expect(loads.forecastNextHour('heavy')).toBe(0)
    loads.record('heavy')
    expect(loads.forecastNextHour('heavy')).toBeLessThan(5)
  })

  it('for arbitrary priorities: a permutation of the input that keeps every client in order', () => {
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom('a', 'b', 'c', 'd'), { maxLength: 60 }),
        fc.dictionary(fc.constantFrom('a', 'b', 'c', 'd'), fc.double({ min: 0, max: 10, noNaN: true })),
        (clients, scores) => {
          const writes = clients.map((client, id) => ({ id, client }))
          const order = replayOrder(writes, new Map(Object.entries(scores)))
          expect(order.map((w) => w.id).sort((a, b) => a - b)).toEqual(writes.map((w) => w.id))
          for (const c of ['a', 'b', 'c', 'd']) {
            const ids = order.filter((w) => w.client === c).map((w) => w.id)
            expect(ids).toEqual([...ids].sort((a, b) => a - b))
          }
        },
      ),
      { numRuns: 300 },
    )
  })
})

describe('admission and Retry-After', () => {
  const pressure = (fill: number, extra: Partial<BufferPressure> = {}): BufferPressure => ({
    bytes: 0,
    maxBytes: 1_000_000,
    writes: Math.round(fill * 1000),
    maxWrites: 1000,
    arrivalPerSecond: 100,
    drainPerSecond: 200,
    expectedHoldSeconds: 2,
    ...extra,
  })

  it('sheds each tier from its own fill level, and everyone at the hard cap', () => {
    const gold = tiers.tierOf('g1')
    const bronze = tiers.tierOf('anyone')
    expect(admit(bronze, 10, pressure(0.5))).toEqual({ admit: true })
    expect(admit(bronze, 10, pressure(0.75)).admit).toBe(false)
    expect(admit(gold, 10, pressure(0.75))).toEqual({ admit: true })
    expect(admit(gold, 10, pressure(1))).toMatchObject({ admit: false, reason: 'buffer full' })
    // An oversized write fills the byte cap on its own.
    expect(admit(gold, 2_000_000, pressure(0))).toMatchObject({ admit: false, reason: 'buffer full' })
  })

  it('makes high priority wait less, and everyone wait longer under load and deeper pressure', () => {
    const gold = tiers.tierOf('g1')
    const bronze = tiers.tierOf('anyone')
    const p = pressure(0.99)
    expect(retryAfterSeconds(gold, 0.99, p)).toBeLessThan(retryAfterSeconds(bronze, 0.99, p))
    expect(retryAfterSeconds(bronze, 0.99, pressure(0.99, { arrivalPerSecond: 800 }))).toBeGreaterThan(
      retryAfterSeconds(bronze, 0.99, p),
    )
    expect(retryAfterSeconds(bronze, 0.72, p)).toBeLessThanOrEqual(retryAfterSeconds(bronze, 0.99, p))
  })

  it('keeps Retry-After within 1..60 s for hostile numbers', () => {
    fc.assert(
      fc.property(
        fc.double({ min: 0, max: 10, noNaN: true }),
        fc.double({ min: 0, max: 1e9, noNaN: true }),
        fc.double({ min: 0, max: 1e9, noNaN: true }),
        fc.double({ min: 0, max: 1e6, noNaN: true }),
        (fill, arrival, drain, hold) => {
          const tier = SlaTier.parse({ name: 't', weight: 1, shedAt: 0.5, retryFactor: 100 })
          const s = retryAfterSeconds(
            tier,
            fill,
            pressure(fill, { arrivalPerSecond: arrival, drainPerSecond: drain, expectedHoldSeconds: hold }),
          )
          expect(Number.isInteger(s)).toBe(true)
          expect(s).toBeGreaterThanOrEqual(1)
          expect(s).toBeLessThanOrEqual(60)
        },
      ),
    )
  })

  it('rate-limits a client that retries before its Retry-After', () => {
    const gate = new RetryGate(2)
    gate.refused('a', 3, 0)
    expect(gate.waitFor('a', 1000)).toBe(2)
    expect(gate.waitFor('a', 3000)).toBe(0)
    expect(gate.waitFor('b', 0)).toBe(0)
    gate.refused('b', 1, 0)
    gate.refused('c', 1, 0)
    gate.refused('d', 1, 0)
    // Bounded: the oldest entry made room.
    expect(gate.waitFor('b', 0)).toBe(0)
    expect(gate.waitFor('d', 0)).toBe(1)
  })
})
