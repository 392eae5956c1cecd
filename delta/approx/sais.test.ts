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
})
