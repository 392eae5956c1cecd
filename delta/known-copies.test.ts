import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { buildApproxIndex } from './approx/approx-index.ts'
import { applyApproxDelta, createApproxDelta } from './approx/index.ts'
import { matchSegments } from './approx/match.ts'
import { randomBytes, rng } from './fuzz-input.ts'
import { type KnownCopy, KnownCopyCursor, splitSource, usableKnownCopies } from './known-copies.ts'
import { COPY } from './vcdiff/code-table.ts'
import { decodeVcdiff, encodeVcdiff } from './vcdiff/index.ts'
import { SourceIndex, WindowMatcher } from './vcdiff/matcher.ts'
import { OpList } from './vcdiff/ops.ts'

describe('known copies', () => {
  it('keeps only copies inside both files, non-empty, ascending and not overlapping', () => {
    const copies: KnownCopy[] = [
      { target: 50, source: 0, length: 10 },
      { target: 0, source: 5, length: 20 },
      { target: 10, source: 0, length: 5 }, // overlaps the one at 0
      { target: 70, source: 95, length: 10 }, // past the source's end
      { target: 95, source: 0, length: 10 }, // past the target's end
      { target: 80, source: 0, length: 0 },
      { target: 1.5, source: 0, length: 2 },
      { target: 30, source: -1, length: 2 },
    ]
    expect(usableKnownCopies(copies, 100, 100)).toEqual([
      { target: 0, source: 5, length: 20 },
      { target: 50, source: 0, length: 10 },
    ])
    expect(usableKnownCopies(undefined, 100, 100)).toEqual([])
  })

  it('splits the source into what is searched and what copies cover, merging copies that meet', () => {
    const copies: KnownCopy[] = [
      { target: 0, source: 40, length: 10 },
      { target: 20, source: 10, length: 10 },
      { target: 40, source: 15, length: 10 }, // overlaps the previous stretch of the source
      { target: 60, source: 25, length: 5 }, // touches it
    ]
    expect(splitSource(copies, 60)).toEqual({
      searched: [
        [0, 10],
        [30, 40],
        [50, 60],
      ],
      copied: [
        [10, 30],
        [40, 50],
      ],
    })
    expect(splitSource([], 8)).toEqual({ searched: [[0, 8]], copied: [] })
    expect(splitSource([], 0)).toEqual({ searched: [], copied: [] })
  })

  it('finds the copy holding a position with a forward cursor', () => {
    const cursor = new KnownCopyCursor([
      { target: 10, source: 0, length: 5 },
      { target: 20, source: 0, length: 5 },
    ])
    expect([0, 10, 14, 15, 19, 20, 24, 25, 99].map((p) => cursor.at(p)?.target)).toEqual([
      undefined,
      10,
      10,
      undefined,
      undefined,
      20,
      20,
      undefined,
      undefined,
    ])
  })
})

/** The source holds the same block twice; the target is that block then new bytes. */
function decoyPair() {
  const block = randomBytes(rng(7), 4096)
  const source = new Uint8Array(8192)
  source.set(block)
  source.set(block, 4096)
  const target = new Uint8Array(4096 + 300)
  target.set(block)
  target.set(randomBytes(rng(8), 300), 4096)
  // So that no match runs on by chance into the new bytes, from either copy of the block.
  target[4096] = block[0]! ^ 0xff
  return { source, target, hint: { target: 0, source: 4096, length: 4096 } }
}

/** Known copies drawn at random: right ones cut from the pair's alignment, and wrong ones. */
const hints = (source: Uint8Array, target: Uint8Array) =>
  fc.array(
    fc.tuple(fc.nat(), fc.nat(), fc.nat({ max: 600 })).map(([t, s, length]) => ({
      target: target.length === 0 ? 0 : t % target.length,
      source: source.length === 0 ? 0 : s % source.length,
      length,
    })),
    { maxLength: 6 },
  )

/** An edited copy of a random source, and hints that are right (same offsets) and wrong. */
const pairWithHints = fc
  .tuple(fc.integer(), fc.integer({ min: 0, max: 3000 }), fc.integer({ min: 0, max: 200 }))
  .chain(([seed, size, cut]) => {
    const source = randomBytes(rng(seed), size)
    const target = new Uint8Array(size)
    target.set(source)
    // An edit in the middle: the hints that line target and source up are right around it.
    for (let i = Math.floor(size / 2); i < Math.min(size, Math.floor(size / 2) + cut); i++)
      target[i] = target[i]! ^ 0x5a
    return hints(source, target).map((h) => ({
      source,
      target,
      hints: [{ target: 0, source: 0, length: Math.floor(size / 2) }, ...h],
    }))
  })

describe('vcdiff with known copies', () => {
  function copiesOf(source: Uint8Array, target: Uint8Array, known?: KnownCopy[]) {
    const split = known ? splitSource(known, source.length) : undefined
    const matcher = new WindowMatcher(new SourceIndex(source, split))
    const ops = new OpList()
    matcher.match(target, 0, target.length, ops, 0, known ? new KnownCopyCursor(known) : undefined)
    const copies: { size: number; addr: number }[] = []
    for (let i = 0; i < ops.count; i++)
      if (ops.types[i] === COPY) copies.push({ size: ops.sizes[i]!, addr: ops.addrs[i]! })
    return copies
  }

  it('copies a known stretch from where the hint says, though the same bytes come earlier', () => {
    const { source, target, hint } = decoyPair()
    // Unhinted, the matcher takes the first occurrence (the same offset as in the target).
    expect(copiesOf(source, target)[0]).toEqual({ size: 4096, addr: 0 })
    expect(copiesOf(source, target, [hint])[0]).toEqual({ size: 4096, addr: 4096 })
    const delta = encodeVcdiff(source, target, { knownCopies: [hint] })
    expect(decodeVcdiff(source, delta)).toEqual(target)
  })

  it('runs a known copy on past its end while the bytes agree', () => {
    const source = randomBytes(rng(3), 5000)
    const target = source.slice(0, 4000)
    expect(copiesOf(source, target, [{ target: 0, source: 0, length: 1000 }])).toEqual([
      { size: 4000, addr: 0 },
    ])
  })

  it('decodes exactly whatever the hints say, right or wrong', () => {
    fc.assert(
      fc.property(pairWithHints, ({ source, target, hints }) => {
        const delta = encodeVcdiff(source, target, { knownCopies: hints, windowSize: 1024 })
        expect(decodeVcdiff(source, delta)).toEqual(target)
      }),
      { numRuns: 150 },
    )
  })
})

describe('approx with known copies', () => {
  it('finds a known stretch through its hint, not the index, which leaves it out', () => {
    const source = randomBytes(rng(5), 8192)
    const target = new Uint8Array(300 + 4096)
    target.set(randomBytes(rng(6), 300))
    target.set(source.subarray(4096), 300)
    const known = [{ target: 300, source: 4096, length: 4096 }]
    const index = buildApproxIndex(source, 'hash', splitSource(known, source.length).searched)
    // Segments are (copyLen, extraLen, srcPos) triples: without the hint the block is literals.
    const literals = (segments: number[]) => segments.reduce((n, v, i) => (i % 3 === 1 ? n + v : n), 0)
    expect(literals(matchSegments(index, target))).toBeGreaterThan(4096)
    const segments = matchSegments(index, target, undefined, new KnownCopyCursor(known))
    expect(segments.slice(-3)).toEqual([4096, 0, 4096])
    const delta = createApproxDelta(source, target, { knownCopies: known })
    expect(applyApproxDelta(source, delta)).toEqual(target)
  })

  it('applies exactly whatever the hints say, right or wrong', () => {
    fc.assert(
      fc.property(pairWithHints, ({ source, target, hints }) => {
        for (const index of ['hash', 'suffix-array'] as const) {
          const delta = createApproxDelta(source, target, { knownCopies: hints, index })
          expect(applyApproxDelta(source, delta)).toEqual(target)
        }
      }),
      { numRuns: 100 },
    )
  })
})
