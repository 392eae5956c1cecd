import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { chooseApproxIndex } from './approx-index.ts'
import { prng } from './fuzz.ts'
import { HASH_KEY_BYTES, indexSourceByHash, longestMatchByHash } from './hash-index.ts'
import { indexSource, longestMatch, type Match } from './source-index.ts'

function common(source: Uint8Array, p: number, target: Uint8Array, t: number): number {
  let k = 0
  while (p + k < source.length && t + k < target.length && source[p + k] === target[t + k]) k++
  return k
}

/** How often each 8-byte string occurs in the source. */
function keyCounts(source: Uint8Array): Map<string, number> {
  const counts = new Map<string, number>()
  for (let p = 0; p + HASH_KEY_BYTES <= source.length; p++) {
    const key = source.subarray(p, p + HASH_KEY_BYTES).join()
    counts.set(key, (counts.get(key) ?? 0) + 1)
  }
  return counts
}

describe('hash-chain index', () => {
  it('finds a longest match wherever its 8-byte prefix occurs rarely, and only real matches', () => {
    fc.assert(
      fc.property(fc.integer(), fc.integer({ min: 0, max: 4000 }), (seed, size) => {
        const r = prng(seed)
        // Few distinct bytes, so 8-byte strings repeat and chains hold several candidates.
        const source = Uint8Array.from({ length: size }, () => Math.floor(r() * 4))
        const target = Uint8Array.from({ length: 600 }, (_, i) =>
          r() < 0.9 && size > 0 ? source[(i * 7) % size]! : Math.floor(r() * 4),
        )
        const index = indexSourceByHash(source)
        const suffixes = indexSource(source)
        const counts = keyCounts(source)
        const got: Match = { pos: 0, len: 0 }
        const best: Match = { pos: 0, len: 0 }
        for (let t = 0; t < target.length; t++) {
          longestMatchByHash(index, target, t, -1, got)
          longestMatch(suffixes, target, t, best)
          if (got.len > 0) {
            expect(got.len).toBeGreaterThanOrEqual(HASH_KEY_BYTES)
            expect(common(source, got.pos, target, t)).toBe(got.len)
          }
          const key = target.subarray(t, t + HASH_KEY_BYTES).join()
          // Every candidate is on the chain when the key occurs at most 16 times (hash collisions only
          // add entries a lookup skips past, so allow a margin).
          if (best.len >= HASH_KEY_BYTES && (counts.get(key) ?? 0) <= 8) expect(got.len).toBe(best.len)
          if (best.len < HASH_KEY_BYTES) expect(got.len).toBe(0)
        }
      }),
      { numRuns: 40 },
    )
  })

  it('chains every indexed position once, newest first, equal 8-byte strings together', () => {
    fc.assert(
      fc.property(
        fc.integer(),
        fc.integer({ min: 0, max: 6000 }),
        fc.array(fc.tuple(fc.nat(6000), fc.nat(3000)), { maxLength: 4 }),
        (seed, size, cuts) => {
          const r = prng(seed)
          const source = Uint8Array.from({ length: size }, () => Math.floor(r() * 3))
          // Disjoint ascending ranges (or the default: everything), some longer than a build block.
          const ranges: [number, number][] = []
          let at = 0
          for (const [gap, length] of cuts) {
            const start = Math.min(size, at + gap)
            const end = Math.min(size, start + length)
            if (end > start) ranges.push([start, end])
            at = end
          }
          const index = cuts.length === 0 ? indexSourceByHash(source) : indexSourceByHash(source, ranges)
          const last = size - HASH_KEY_BYTES + 1
          const indexed = new Set<number>()
          const all: [number, number][] = cuts.length === 0 ? [[0, size]] : ranges
          for (const [a, b] of all) for (let p = a; p < Math.min(b, last); p++) indexed.add(p)
          const chainOf = new Map<number, number>()
          index.head.forEach((first, h) => {
            let previous = Number.POSITIVE_INFINITY
            for (let link = first; link !== 0; link = index.prev[link - 1]!) {
              const p = link - 1
              expect(p).toBeLessThan(previous)
              expect(indexed.has(p)).toBe(true)
              expect(chainOf.has(p)).toBe(false)
              chainOf.set(p, h)
              previous = p
            }
          })
          expect(chainOf.size).toBe(indexed.size)
          const chainOfKey = new Map<string, number>()
          for (const p of indexed) {
            const key = source.subarray(p, p + HASH_KEY_BYTES).join()
            const h = chainOfKey.get(key) ?? chainOf.get(p)!
            chainOfKey.set(key, h)
            expect(chainOf.get(p)).toBe(h)
          }
        },
      ),
      { numRuns: 60 },
    )
  })

  it('reports the current alignment even when short, and prefers it only while nothing is longer', () => {
    const source = new TextEncoder().encode('abcdefgh-0123-abcdefghijklmnop')
    const target = new TextEncoder().encode('abcdefghijklmnop')
    const index = indexSourceByHash(source)
    const out: Match = { pos: 0, len: 0 }
    longestMatchByHash(index, target, 0, 0, out)
    expect(out).toEqual({ pos: 14, len: 16 })
    // A 3-byte alignment is reported as such (the scan uses it to skip ahead); no 8 bytes match anywhere.
    longestMatchByHash(index, new TextEncoder().encode('jkl-wxyz-stuvwxyz'), 0, 23, out)
    expect(out).toEqual({ pos: 23, len: 3 })
  })

  it('breaks ties towards the closest differing byte, as a relocated address differs', () => {
    // Two 12-byte matches of "ADDRESS:" + 4 bytes; the target's next byte is 0x42.
    const source = Uint8Array.from([
      ...new TextEncoder().encode('ADDRESS:'),
      1,
      2,
      3,
      4,
      0x40,
      ...new TextEncoder().encode('ADDRESS:'),
      1,
      2,
      3,
      4,
      0x10,
    ])
    const target = Uint8Array.from([...source.subarray(0, 12), 0x42])
    const out: Match = { pos: 0, len: 0 }
    longestMatchByHash(indexSourceByHash(source), target, 0, -1, out)
    // The chain meets the later, farther record first.
    expect(out).toEqual({ pos: 0, len: 12 })
  })

  it('copes with empty and tiny sources and targets', () => {
    const out: Match = { pos: 0, len: 0 }
    for (const source of [new Uint8Array(0), Uint8Array.of(1), new Uint8Array(7)]) {
      const index = indexSourceByHash(source)
      longestMatchByHash(index, new Uint8Array(20), 0, -1, out)
      expect(out.len).toBe(0)
      longestMatchByHash(index, new Uint8Array(3), 0, 0, out)
      expect(out.len).toBe(0)
    }
  })
})

describe('chooseApproxIndex', () => {
  const text = new TextEncoder().encode('plain text, not a program\n'.repeat(100))

  it('keeps the exhaustive suffix array for executables, also inside a tar', () => {
    const elf = Uint8Array.from([0x7f, 0x45, 0x4c, 0x46, ...text])
    expect(chooseApproxIndex(elf, elf)).toBe('suffix-array')
    expect(chooseApproxIndex(text, elf)).toBe('suffix-array')
    const tar = text.slice()
    tar.set([0x7f, 0x45, 0x4c, 0x46], 1024)
    expect(chooseApproxIndex(text, tar)).toBe('suffix-array')
    // Off a member boundary the magic is just bytes.
    const notTar = text.slice()
    notTar.set([0x7f, 0x45, 0x4c, 0x46], 1000)
    expect(chooseApproxIndex(notTar, text)).toBe('hash')
  })

  it('takes hash chains for everything else', () => {
    expect(chooseApproxIndex(text, text)).toBe('hash')
    expect(chooseApproxIndex(new Uint8Array(0), new Uint8Array(0))).toBe('hash')
  })
})
