import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { DeltaFormatError } from '../errors.ts'
import { gfInv, gfMul } from './gf256.ts'
import { encodeParity, reconstruct } from './reed-solomon.ts'

function randomBlocks(k: number, size: number, seed: number): Uint8Array[] {
  let s = seed >>> 0 || 1
  return Array.from({ length: k }, () => {
    const b = new Uint8Array(size)
    for (let i = 0; i < size; i++) {
      s ^= s << 13
      s ^= s >>> 17
      s ^= s << 5
      b[i] = s & 0xff
    }
    return b
  })
}

describe('GF(256)', () => {
  it('every non-zero element has an inverse', () => {
    for (let a = 1; a < 256; a++) expect(gfMul(a, gfInv(a))).toBe(1)
  })
})

describe('reed-solomon', () => {
  it('recovers any pattern of up to m erasures', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 12 }),
        fc.integer({ min: 0, max: 5 }),
        fc.integer({ min: 1, max: 64 }),
        fc.integer(),
        fc.array(fc.nat(), { maxLength: 5 }),
        (k, m, size, seed, picks) => {
          const data = randomBlocks(k, size, seed)
          const all: (Uint8Array | null)[] = [...data, ...encodeParity(data, m)]
          for (const p of picks.slice(0, m)) all[p % (k + m)] = null
          expect(reconstruct(all, k, m)).toEqual(data)
        },
      ),
      { numRuns: 200 },
    )
  })

  it('recovers exactly m erasures at every shape up to k + m = 256 (the decode matrix is never singular)', () => {
    // invert() throws a RangeError on a singular matrix, which would escape the stream's typed errors:
    // the Cauchy rows must stay invertible at the widest shapes too, where x_i = 255 - i meets y_j = j.
    const extremes: [number, number, number[]][] = [
      [128, 128, Array.from({ length: 128 }, (_, j) => j)], // every data block lost
      [255, 1, [254]],
      [1, 255, [0]],
      [2, 254, [0, 1]],
    ]
    for (const [k, m, lost] of extremes) {
      const data = randomBlocks(k, 3, k)
      const all: (Uint8Array | null)[] = [...data, ...encodeParity(data, m)]
      for (const i of lost) all[i] = null
      expect(reconstruct(all, k, m)).toEqual(data)
    }
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 255 }).chain((k) =>
          fc.tuple(
            fc.constant(k),
            fc
              .integer({ min: 0, max: 256 - k })
              .chain((m) =>
                fc.tuple(fc.constant(m), fc.shuffledSubarray(Array.from({ length: k + m }, (_, i) => i))),
              ),
          ),
        ),
        fc.integer(),
        ([k, [m, order]], seed) => {
          const data = randomBlocks(k, 2, seed)
          const all: (Uint8Array | null)[] = [...data, ...encodeParity(data, m)]
          for (const i of order.slice(0, m)) all[i] = null
          expect(reconstruct(all, k, m)).toEqual(data)
        },
      ),
      { numRuns: 25, seed: 256 },
    )
  })

  it('refuses more than m erasures with a typed error', () => {
    const data = randomBlocks(4, 16, 7)
    const all: (Uint8Array | null)[] = [...data, ...encodeParity(data, 2)]
    all[0] = all[2] = all[5] = null
    expect(() => reconstruct(all, 4, 2)).toThrow(DeltaFormatError)
    try {
      reconstruct(all, 4, 2)
    } catch (e) {
      expect((e as DeltaFormatError).code).toBe('fec.too-many-erasures')
    }
  })

  it('a short group uses the leading columns of the same code', () => {
    // The stream relies on this: parity for k' < k data blocks equals parity with zero blocks appended.
    const data = randomBlocks(3, 32, 9)
    const padded = [...data, new Uint8Array(32), new Uint8Array(32)]
    expect(encodeParity(data, 3)).toEqual(encodeParity(padded, 3))
  })

  it('rejects bad shapes', () => {
    expect(() => encodeParity(randomBlocks(200, 1, 1), 57)).toThrow(DeltaFormatError)
    expect(() => encodeParity([new Uint8Array(2), new Uint8Array(3)], 1)).toThrow(DeltaFormatError)
    expect(() => reconstruct([null], 2, 0)).toThrow(DeltaFormatError)
  })
})
