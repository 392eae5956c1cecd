import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { DeltaFormatError } from '../errors.ts'
import { collectingSink, readerFromBytes, sourceFromBytes } from '../io.ts'
import { decodeVcdiff, decodeVcdiffStream, encodeVcdiff, encodeVcdiffStream } from './index.ts'

/** An edit script applied to a source: (position, bytes to delete, bytes to insert). */
const edit = fc.tuple(fc.nat(), fc.nat({ max: 64 }), fc.uint8Array({ maxLength: 48 }))

function applyEdits(source: Uint8Array, edits: [number, number, Uint8Array][]): Uint8Array {
  let t = source
  for (const [p, del, ins] of edits) {
    const at = t.length === 0 ? 0 : p % (t.length + 1)
    const rest = t.subarray(Math.min(t.length, at + del))
    const next = new Uint8Array(at + ins.length + rest.length)
    next.set(t.subarray(0, at))
    next.set(ins, at)
    next.set(rest, at + ins.length)
    t = next
  }
  return t
}

/** Source/target pairs: edited copies (with repeated runs and self-similar data), or unrelated. */
const pair = fc.oneof(
  fc
    .tuple(fc.uint8Array({ maxLength: 3000 }), fc.array(edit, { maxLength: 12 }))
    .map(([s, e]) => [s, applyEdits(s, e)] as const),
  fc
    .tuple(
      fc.uint8Array({ minLength: 1, maxLength: 40 }),
      fc.nat({ max: 60 }),
      fc.array(edit, { maxLength: 4 }),
    )
    .map(([unit, times, e]) => {
      const s = new Uint8Array(unit.length * times)
      for (let i = 0; i < times; i++) s.set(unit, i * unit.length)
      return [s, applyEdits(s, e)] as const
    }),
  fc.tuple(fc.uint8Array({ maxLength: 500 }), fc.uint8Array({ maxLength: 500 })),
)

const options = fc.record({
  windowSize: fc.option(fc.integer({ min: 1, max: 700 }), { nil: undefined }),
  checksum: fc.boolean(),
})

describe('VCDIFF round trips (fast-check)', () => {
  it('decode(encode(s, t)) === t, in memory and streamed', async () => {
    await fc.assert(
      fc.asyncProperty(pair, options, fc.integer({ min: 1, max: 97 }), async ([s, t], opts, chunk) => {
        const delta = encodeVcdiff(s, t, opts)
        expect(decodeVcdiff(s, delta)).toEqual(t)
        const sink = collectingSink()
        await decodeVcdiffStream(readerFromBytes(s), sourceFromBytes(delta, chunk), sink)
        expect(sink.bytes()).toEqual(t)
      }),
      { numRuns: 300 },
    )
  })

  it('handles the edge pairs explicitly', () => {
    const one = Uint8Array.of(42)
    const some = Uint8Array.from({ length: 1000 }, (_, i) => (i * 31) & 0xff)
    const edges: [Uint8Array, Uint8Array][] = [
      [new Uint8Array(0), new Uint8Array(0)],
      [one, new Uint8Array(0)],
      [new Uint8Array(0), one],
      [one, one],
      [some, some],
      [some, some.map((b) => b ^ 0xff)],
    ]
    for (const [s, t] of edges) expect(decodeVcdiff(s, encodeVcdiff(s, t))).toEqual(t)
  })

  it('identical inputs compress to almost nothing', () => {
    const s = Uint8Array.from({ length: 100_000 }, (_, i) => (i * 7919) >> 3)
    expect(encodeVcdiff(s, s).length).toBeLessThan(40)
  })

  it('mutated deltas decode or fail with DeltaFormatError only', () => {
    fc.assert(
      fc.property(
        pair,
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 6 }),
        fc.nat(),
        ([s, t], flips, cut) => {
          const delta = encodeVcdiff(s, t).slice()
          for (const [at, v] of flips) delta[at % delta.length] = v
          const input = cut % 3 === 0 ? delta.subarray(0, cut % (delta.length + 1)) : delta
          try {
            decodeVcdiff(s, input, { maxWindowSize: 1 << 16 })
          } catch (e) {
            expect(e).toBeInstanceOf(DeltaFormatError)
          }
        },
      ),
      { numRuns: 500 },
    )
  })
})

describe('streaming encoder', () => {
  it('writes exactly what encodeVcdiff writes, whatever the chunking', async () => {
    await fc.assert(
      fc.asyncProperty(pair, options, fc.integer({ min: 1, max: 300 }), async ([s, t], opts, chunk) => {
        const sink = collectingSink()
        await encodeVcdiffStream(s, sourceFromBytes(t, chunk), sink, opts)
        expect(sink.bytes()).toEqual(encodeVcdiff(s, t, opts))
      }),
      { numRuns: 150 },
    )
  })
})
