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
