import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { suffixArray } from './sais.ts'

function naiveSuffixArray(text: Uint8Array): number[] {
  const idx = Array.from({ length: text.length }, (_, i) => i)
  return idx.sort((a, b) => {
    while (a < text.length && b < text.length) {
      const d = text[a]! - text[b]!
      if (d !== 0) return d
      a++
      b++
    }
    // The one that ran out first is a prefix of the other, so it sorts first.
    return a === text.length ? -1 : 1
  })
}

/**
 * Linear-time check (Burkhardt–Kärkkäinen) that `sa` is the suffix array of `text`, independent of how it
 * was built: a permutation in which every adjacent pair is ordered by first byte, then by the rank of
 * the rest. Usable on inputs far too large or repetitive for the naive sort.
 */
function isSuffixArray(text: Uint8Array, sa: Int32Array): boolean {
  const n = text.length
  if (sa.length !== n) return false
  const rank = new Int32Array(n + 1).fill(-1)
  for (let r = 0; r < n; r++) {
    const p = sa[r]!
    if (p < 0 || p >= n || rank[p] !== -1) return false
    rank[p] = r
  }
  rank[n] = -1 // the empty suffix sorts before every other
  for (let r = 0; r + 1 < n; r++) {
    const a = sa[r]!
    const b = sa[r + 1]!
    if (text[a]! > text[b]!) return false
    if (text[a] === text[b] && rank[a + 1]! >= rank[b + 1]!) return false
  }
  return true
}

/** Deterministic pseudo-random bytes (xorshift32) below `limit`. */
function pseudoRandom(length: number, seed: number, limit = 256): Uint8Array {
  const out = new Uint8Array(length)
  let x = seed >>> 0 || 1
  for (let i = 0; i < length; i++) {
    x ^= x << 13
    x >>>= 0
    x ^= x >>> 17
    x ^= x << 5
    x >>>= 0
    out[i] = x % limit
  }
  return out
}

const smallAlphabet = (max: number, maxLength: number) =>
  fc.array(fc.integer({ min: 0, max }), { maxLength }).map((a) => Uint8Array.from(a))

describe('suffixArray (SA-IS)', () => {
  it('handles the trivial lengths', () => {
    expect([...suffixArray(new Uint8Array(0))]).toEqual([])
    expect([...suffixArray(Uint8Array.of(7))]).toEqual([0])
    expect([...suffixArray(Uint8Array.of(2, 1))]).toEqual([1, 0])
  })

  it('matches a naive sort on random bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (text) => {
        expect([...suffixArray(text)]).toEqual(naiveSuffixArray(text))
      }),
      { numRuns: 300 },
    )
  })

  it('matches a naive sort on tiny alphabets (deep recursion)', () => {
    fc.assert(
      fc.property(smallAlphabet(1, 400), (text) => {
        expect([...suffixArray(text)]).toEqual(naiveSuffixArray(text))
      }),
      { numRuns: 300 },
    )
  })

  it('matches a naive sort on repetitive inputs', () => {
    fc.assert(
      fc.property(
        smallAlphabet(3, 12),
        fc.integer({ min: 1, max: 40 }),
        smallAlphabet(255, 5),
        (unit, reps, tail) => {
          const text = new Uint8Array(unit.length * reps + tail.length)
          for (let r = 0; r < reps; r++) text.set(unit, r * unit.length)
          text.set(tail, unit.length * reps)
          expect([...suffixArray(text)]).toEqual(naiveSuffixArray(text))
        },
      ),
      { numRuns: 300 },
    )
  })

  it('sorts a constant run and a larger random text', () => {
    const run = new Uint8Array(1000).fill(9)
    expect([...suffixArray(run)]).toEqual(naiveSuffixArray(run))
    const rnd = new Uint8Array(20_000)
    let x = 12345
    for (let i = 0; i < rnd.length; i++) {
      x = (x * 1103515245 + 12345) >>> 0
      rnd[i] = (x >>> 16) & 3
    }
    expect([...suffixArray(rnd)]).toEqual(naiveSuffixArray(rnd))
  })

  it('the linear checker rejects a wrong suffix array', () => {
    const text = pseudoRandom(5000, 3, 4)
    const sa = suffixArray(text)
    expect(isSuffixArray(text, sa)).toBe(true)
    const swapped = sa.slice()
    swapped[100] = sa[101]!
    swapped[101] = sa[100]!
    expect(isSuffixArray(text, swapped)).toBe(false)
    const duplicated = sa.slice()
    duplicated[7] = sa[8]!
    expect(isSuffixArray(text, duplicated)).toBe(false)
  })

  it('sorts large inputs whose reduced strings have big alphabets and deep recursion', () => {
    // A 256-symbol block repeated with edits: the first reduction has thousands of distinct names, and
    // the repeats make names collide so the recursion keeps going.
    const block = pseudoRandom(40_000, 7)
    const edits = pseudoRandom(400, 8)
    const repeated = new Uint8Array(block.length * 5)
    for (let r = 0; r < 5; r++) repeated.set(block, r * block.length)
    for (let i = 0; i < edits.length; i += 2) {
      const at = (edits[i]! * 1009 + edits[i + 1]! * 787) % repeated.length
      repeated[at] = repeated[at]! ^ 0x5a
    }
    // Fibonacci words are the classic worst case for recursion depth; runs and periodic text stress the
    // long-repeat paths, and an executable-like mix of zeros, small integers and random bytes the rest.
    let fa = 'a'
    let fb = 'ab'
    while (fb.length < 150_000) [fa, fb] = [fb, fb + fa]
    const fib = Uint8Array.from(fb, (ch) => ch.charCodeAt(0))
    const period = Uint8Array.from({ length: 200_000 }, (_, i) => [3, 1, 4, 1, 5][i % 5]!)
    const run = new Uint8Array(100_000).fill(200)
    const rising = Uint8Array.from({ length: 70_000 }, (_, i) => i >> 8)
    const exe = pseudoRandom(300_000, 11)
    for (let i = 0; i < exe.length; i++) if (exe[i]! < 140) exe[i] = exe[i]! < 100 ? 0 : exe[i]! & 7
    for (const text of [repeated, fib, period, run, rising, exe, pseudoRandom(200_000, 5, 2)]) {
      expect(isSuffixArray(text, suffixArray(text))).toBe(true)
    }
  })

  it('matches a naive sort on mid-sized repeats with a large alphabet', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 1, maxLength: 60 }),
        fc.integer({ min: 2, max: 30 }),
        fc.nat(),
        (unit, reps, at) => {
          const text = new Uint8Array(unit.length * reps)
          for (let r = 0; r < reps; r++) text.set(unit, r * unit.length)
          text[at % text.length] = text[at % text.length]! ^ 1
          expect([...suffixArray(text)]).toEqual(naiveSuffixArray(text))
        },
      ),
      { numRuns: 200 },
    )
  })
})
