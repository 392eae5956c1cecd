import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import type { Zone } from './hashing.ts'
import {
  assignBounded,
  boundedCapacities,
  hash64,
  murmur3,
  pairUniform,
  placeBounded,
  placeReplicas,
  prepareZones,
  rendezvousScore,
} from './hashing.ts'

const keys = (n: number) => Array.from({ length: n }, (_, i) => `artifact-${i}@1.${i % 7}.0`)
const zonesOf = (weights: readonly number[]): Zone[] =>
  weights.map((weight, i) => ({ id: `zone-${i}`, weight }))
const placeAll = (ks: readonly string[], zones: readonly Zone[], r: number) => {
  const prepared = prepareZones(zones)
  return ks.map((k) => placeReplicas(k, prepared, r))
}

describe('hash64', () => {
  it('is stable Murmur3 (reference vectors) and spreads bits', () => {
    const utf8 = (s: string) => new TextEncoder().encode(s)
    expect(murmur3(utf8(''), 0)).toBe(0)
    expect(murmur3(utf8('hello'), 0)).toBe(0x248bfa47)
    expect(hash64('zone-a')).toEqual(hash64('zone-a'))
    expect(hash64('zone-a')).not.toEqual(hash64('zone-b'))
    const u = pairUniform(hash64('k'), hash64('z'))
    expect(u).toBeGreaterThan(0)
    expect(u).toBeLessThan(1)
  })
})

describe('weighted rendezvous placement', () => {
  it('primary placement is proportional to weight (chi-square, df = 5)', () => {
    const weights = [1, 1, 2, 3, 4, 5]
    const zones = zonesOf(weights)
    const n = 16_000
    const counts = new Map<string, number>()
    for (const [primary] of placeAll(keys(n), zones, 1)) counts.set(primary!, (counts.get(primary!) ?? 0) + 1)
    const total = weights.reduce((a, b) => a + b, 0)
    let chi2 = 0
    zones.forEach((z) => {
      const expected = (n * z.weight) / total
      chi2 += ((counts.get(z.id) ?? 0) - expected) ** 2 / expected
    })
    // 20.5 is the p = 0.001 critical value for 5 degrees of freedom.
    expect(chi2).toBeLessThan(20.5)
  })

  it('places R distinct zones and ignores zero-weight zones', () => {
    const zones = zonesOf([1, 0, 2, 3])
    for (const ids of placeAll(keys(200), zones, 3)) {
      expect(new Set(ids).size).toBe(3)
      expect(ids).not.toContain('zone-1')
    }
    expect(placeReplicas('k', zones, 10)).toHaveLength(3)
  })

  it('moves only the keys that must move when one weight changes or a zone is added/removed', () => {
    const ks = keys(300)
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 1, max: 10 }), { minLength: 2, maxLength: 6 }),
        fc.nat(),
        fc.integer({ min: 1, max: 20 }),
        fc.integer({ min: 1, max: 2 }),
        (weights, pick, newWeight, r) => {
          const zones = zonesOf(weights)
          const changed = pick % zones.length
          const target = zones[changed]!.id
          const before = placeAll(ks, zones, r)

          const reweighted = zones.map((z, i) => (i === changed ? { ...z, weight: newWeight } : z))
          const after = placeAll(ks, reweighted, r)
          ks.forEach((_, i) => {
            const a = before[i]!
            const b = after[i]!
            if (a.join() === b.join()) return
            // Only the reweighted zone's comparisons changed, so it must be involved in every move.
            expect(a.includes(target) || b.includes(target)).toBe(true)
            if (newWeight > zones[changed]!.weight) expect(b).toContain(target)
            if (newWeight < zones[changed]!.weight) expect(a).toContain(target)
          })

          const added = placeAll(ks, [...zones, { id: 'zone-new', weight: newWeight }], r)
          ks.forEach((_, i) => {
            if (before[i]!.join() !== added[i]!.join()) {
              expect(added[i]).toContain('zone-new')
              // The other members keep their relative order.
              expect(added[i]!.filter((id) => id !== 'zone-new')).toEqual(
                before[i]!.slice(0, added[i]!.length - 1),
              )
            }
          })

          const removed = placeAll(
            ks,
            zones.filter((z) => z.id !== target),
            r,
          )
          ks.forEach((_, i) => {
            if (before[i]!.join() !== removed[i]!.join()) expect(before[i]).toContain(target)
          })
        },
      ),
      { numRuns: 20, seed: 1 },
    )
  })

  it('adding a zone moves about its weight share of primaries', () => {
    const ks = keys(8000)
    const zones = zonesOf([1, 1, 1, 1])
    const before = placeAll(ks, zones, 1)
    const after = placeAll(ks, [...zones, { id: 'zone-new', weight: 1 }], 1)
    const moved = ks.filter((_, i) => before[i]![0] !== after[i]![0]).length / ks.length
    expect(moved).toBeGreaterThan(0.18)
    expect(moved).toBeLessThan(0.22)
  })
})

describe('pairUniform at the top of its range', () => {
  /** Inverse of Murmur3's finaliser, to build the hash pair that lands on the largest 53-bit draw. */
  const inverseOdd = (c: number) => {
    let x = c
    for (let i = 0; i < 5; i++) x = Math.imul(x, 2 - Math.imul(c, x))
    return x
  }
  const unfmix32 = (h: number) => {
    h ^= h >>> 16
    h = Math.imul(h, inverseOdd(0xc2b2ae35))
    h ^= (h >>> 13) ^ (h >>> 26)
    h = Math.imul(h, inverseOdd(0x85ebca6b))
    h ^= h >>> 16
    return h >>> 0
  }

  it('stays below 1, so the best possible draw ranks first and not last', () => {
    const top = unfmix32(0xffffffff)
    const zone = { hi: 2, lo: 0 }
    // a = fmix32(key.lo ^ zone.hi * K1) for key.lo = 1; then zone.lo and key.hi are chosen so that
    // b = c = 0xffffffff, the largest 53-bit value (2^53 - 1) before the + 0.5.
    const keyLo = 1
    const mixA = (() => {
      let h = (keyLo ^ Math.imul(zone.hi, 0x9e3779b1)) >>> 0
      h ^= h >>> 16
      h = Math.imul(h, 0x85ebca6b)
      h ^= h >>> 13
      h = Math.imul(h, 0xc2b2ae35)
      h ^= h >>> 16
      return h >>> 0
    })()
    zone.lo = (top ^ mixA ^ Math.imul(0xffffffff, 0xc2b2ae3d)) >>> 0
    const key = { lo: keyLo, hi: (top ^ Math.imul(zone.lo, 0x85ebca77) ^ mixA) >>> 0 }
    const u = pairUniform(key, zone)
    expect(u).toBeGreaterThan(1 - 1e-15)
    expect(u).toBeLessThan(1)
    const score = rendezvousScore(key, zone, 1)
    expect(Number.isFinite(score)).toBe(true)
    expect(score).toBeGreaterThan(1e15)
  })
})

describe('adding and removing one of N zones (measured)', () => {
  it('adding one zone to N moves about 1/(N + 1) of the keys, all to it; removing it restores every key', () => {
    const ks = keys(3000)
    fc.assert(
      fc.property(fc.integer({ min: 2, max: 24 }), fc.integer({ min: 1, max: 3 }), (n, r) => {
        const zones = zonesOf(new Array<number>(n).fill(1))
        const before = placeAll(ks, zones, r)
        const grown = [...zones, { id: 'zone-new', weight: 1 }]
        const after = placeAll(ks, grown, r)
        let moved = 0
        ks.forEach((_, i) => {
          if (before[i]!.join() === after[i]!.join()) return
          moved++
          expect(after[i]).toContain('zone-new')
        })
        // A key's R-set gains the new zone with probability R / (N + 1) (when N >= R).
        const expected = Math.min(r, n + 1) / (n + 1)
        const share = moved / ks.length
        const sd = Math.sqrt((expected * (1 - expected)) / ks.length)
        expect(Math.abs(share - expected)).toBeLessThan(5 * sd + 1e-9)
        // Removing it again puts every key back exactly where it was.
        expect(placeAll(ks, zones, r)).toEqual(before)
        expect(placeAll(ks, grown.slice(0, n), r)).toEqual(before)
      }),
      { numRuns: 25, seed: 20261126 },
    )
  })
})

describe('bounded-load placement', () => {
  it('never exceeds capacity and stays close to fair share', () => {
    const ks = keys(3000)
    const zones = boundedCapacities(zonesOf([1, 2, 3, 4]), ks.length * 2, 0.1)
    const { load, placement, underReplicated } = assignBounded(ks, zones, 2)
    expect(underReplicated).toEqual([])
    for (const z of zones) expect(load[z.id]).toBeLessThanOrEqual(z.capacity!)
    for (const ids of Object.values(placement)) expect(new Set(ids).size).toBe(2)
    expect(JSON.parse(JSON.stringify(load))).toEqual(load)
  })

  it('a full zone spills each key to its next zone by score, nowhere else', () => {
    const zones = prepareZones(zonesOf([1, 1, 1, 1, 1]))
    const full = { 'zone-0': 5 }
    const capped = zones.map((z) => (z.id === 'zone-0' ? { ...z, capacity: 5 } : z))
    for (const k of keys(300)) {
      const ranked = placeReplicas(k, zones, 5)
      const expected = ranked.filter((id) => id !== 'zone-0').slice(0, 2)
      expect(placeBounded(k, capped, 2, full)).toEqual(expected)
    }
  })

  it('reports keys it could not fully replicate', () => {
    const zones = [
      { id: 'a', weight: 1, capacity: 1 },
      { id: 'b', weight: 1, capacity: 1 },
    ]
    const result = assignBounded(['x', 'y'], zones, 2)
    expect(result.placement.x).toHaveLength(2)
    expect(result.placement.y).toEqual([])
    expect(result.underReplicated).toEqual(['y'])
  })
})
