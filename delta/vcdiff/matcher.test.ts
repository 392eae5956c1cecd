import { describe, expect, it } from 'vitest'
import { randomBytes, rng } from '../fuzz-input.ts'
import { concatBytes } from '../io.ts'
import { decodeVcdiff } from './decode.ts'
import { encodeVcdiff } from './encode.ts'
import { HashIndex } from './matcher.ts'

/** The (position, tag) slots a bucket holds, in stored order (slots hold p + 1; 0 is empty). */
function slots(index: HashIndex, bucket: number): [number, number][] {
  const out: [number, number][] = []
  for (let w = bucket; w < bucket + 8; w += 2)
    if (index.table[w]! !== 0) out.push([index.table[w]! - 1, index.table[w + 1]!])
  return out
}

/** What a bucket should hold: the newest four of the indexed positions that hash to it, newest first. */
function expected(
  index: HashIndex,
  source: Uint8Array,
  bucket: number,
  key: number,
  step: number,
): [number, number][] {
  const positions: number[] = []
  for (let p = 0; p + key <= source.length; p += step) positions.push(p)
  return expectedOf(index, source, bucket, positions)
}

/** `expected` for positions inserted in the given order. */
function expectedOf(
  index: HashIndex,
  source: Uint8Array,
  bucket: number,
  positions: number[],
): [number, number][] {
  const all: [number, number][] = []
  for (const p of positions) {
    const h = index.hash(source, p)
    if (index.bucket(h) === bucket) all.push([p, h])
  }
  return all.reverse().slice(0, 4)
}

describe('HashIndex', () => {
  it('keeps the newest four positions of each bucket, newest first, for both key widths', () => {
    const phrase = new TextEncoder().encode('0123456789abcdefghijklmnopqrstuv') // 32 bytes
    const source = randomBytes(rng(1), 64 * 6 + 100)
    const at = [10, 74, 138, 202, 266, 330]
    for (const p of at) source.set(phrase, p)
    for (const key of [8, 32]) {
      const index = new HashIndex(source, key, 16, 1)
      const bucket = index.bucket(index.hash(phrase, 0))
      expect(slots(index, bucket)).toEqual(expected(index, source, bucket, key, 1))
      expect(slots(index, bucket).map(([p]) => p)).toContain(330)
      for (let b = 0; b < index.table.length; b += 8)
        expect(slots(index, b)).toEqual(expected(index, source, b, key, 1))
    }
  })

  it('indexes only the given stretches, and the sampled ones (known copies) more sparsely', () => {
    const source = randomBytes(rng(3), 1 << 14)
    const searched: [number, number][] = [
      [0, 1000],
      [5000, 1 << 14],
    ]
    const copied: [number, number][] = [[1000, 5000]]
    const index = new HashIndex(source, 8, 16, 1, searched, copied, 16)
    // The sampled stretch first (every 16th position), then the searched ones: newer slots win.
    const positions: number[] = []
    for (let p = 1000; p < 5000; p += 16) positions.push(p)
    for (const [a, b] of searched) for (let p = a; p < Math.min(b, source.length - 7); p++) positions.push(p)
    for (let b = 0; b < index.table.length; b += 8)
      expect(slots(index, b)).toEqual(expectedOf(index, source, b, positions))
  })

  it('samples big sources every `step` positions', () => {
    const source = randomBytes(rng(2), 1 << 16)
    // 2^10 buckets for 65 K positions: every 32nd position is indexed.
    const index = new HashIndex(source, 8, 10, 1)
    for (let b = 0; b < index.table.length; b += 8)
      expect(slots(index, b)).toEqual(expected(index, source, b, 8, 32))
  })
})

describe('WindowMatcher on a sampled source', () => {
  it('finds the source again after new bytes inserted into random data, whatever their length', () => {
    // 4 MiB of source is indexed every 4th position. 20 KB of new bytes is a miss stretch long enough
    // for the widest probe stride; the target then resumes where neither expected alignment looks.
    const source = randomBytes(rng(5), 4 << 20)
    const at = (1 << 20) + 12_345
    for (let inserted = 20_000; inserted < 20_004; inserted++) {
      const target = concatBytes([
        source.subarray(0, at),
        randomBytes(rng(inserted), inserted),
        source.subarray(at),
      ])
      const delta = encodeVcdiff(source, target)
      expect(Buffer.compare(decodeVcdiff(source, delta), target)).toBe(0)
      // The new bytes and a few dozen of overhead, not the rest of the window as literals (~3 MB).
      expect(delta.length, `${inserted} bytes inserted`).toBeLessThan(inserted + 1000)
    }
  })
})
