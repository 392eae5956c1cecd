import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { sameBytes } from './io.ts'

describe('sameBytes', () => {
  it('agrees with a byte loop at every alignment, length and position of a difference', () => {
    const buffer = new Uint8Array(400).map((_, i) => (i * 31) & 0xff)
    const copy = buffer.slice()
    fc.assert(
      fc.property(
        fc.nat(8),
        fc.nat(8),
        fc.nat(300),
        fc.option(fc.nat(299), { nil: undefined }),
        (offsetA, offsetB, length, flip) => {
          const a = buffer.subarray(offsetA, offsetA + length)
          const b = copy.slice(offsetA, offsetA + length)
          // Same contents at another alignment of the underlying buffer.
          const shifted = new Uint8Array(length + offsetB)
          shifted.set(b, offsetB)
          const c = shifted.subarray(offsetB)
          if (flip !== undefined && flip < length) c[flip]! ^= 1
          const expected = flip === undefined || flip >= length
          expect(sameBytes(a, c)).toBe(expected)
          expect(sameBytes(a, b)).toBe(true)
        },
      ),
    )
    expect(sameBytes(buffer.subarray(0, 10), buffer.subarray(0, 11))).toBe(false)
  })
})
