import { deflateRawSync, inflateRawSync } from 'node:zlib'
import { deflateRaw } from 'pako'
import { describe, expect, it } from 'vitest'
import { ZLIB_STRATEGIES } from '../deflate/testing.ts'
import { DeltaFormatError } from '../errors.ts'
import { prng } from './fuzz.ts'
import { inflateRawInto } from './raw-inflate.ts'

type Rand = () => number

/** Data with the shapes DPAX streams have: runs, repeats near and far, noise, sparse diffs. */
function sample(r: Rand, n: number): Uint8Array {
  const out = new Uint8Array(n)
  let i = 0
  while (i < n) {
    const kind = r()
    const len = Math.min(n - i, 1 + Math.floor(r() * 600))
    if (kind < 0.25) for (let k = 0; k < len; k++) out[i + k] = (r() * 256) | 0
    else if (kind < 0.5) out.fill((r() * 256) | 0, i, i + len)
    else if (kind < 0.75 && i > 0) {
      // A repeat from up to 40 KiB back (crosses the 32 KiB window edge sometimes), possibly overlapping.
      const from = Math.max(0, i - 1 - Math.floor(r() * Math.min(i, 40_000)))
      for (let k = 0; k < len; k++) out[i + k] = out[from + k]!
    } else for (let k = 0; k < len; k += 1 + Math.floor(r() * 20)) out[i + k] = 1 + ((r() * 255) | 0)
    i += len
  }
  return out
}

/** Typed-array toEqual compares element by element through the matcher machinery: far too slow here. */
function expectSame(actual: Uint8Array, expected: Uint8Array): void {
  expect(actual.length).toBe(expected.length)
  expect(Buffer.compare(actual, expected)).toBe(0)
}

function inflate(compressed: Uint8Array, length: number): Uint8Array {
  const out = new Uint8Array(length)
  inflateRawInto(compressed, out, 'test')
  return out
}

describe('inflateRawInto', () => {
  it('matches zlib on every block type, level and strategy', () => {
    const r = prng(7)
    for (let round = 0; round < 60; round++) {
      const data = sample(r, Math.floor(r() * (round < 50 ? 5000 : 300_000)))
      const level = Math.floor(r() * 10)
      const strategy = ZLIB_STRATEGIES[round % ZLIB_STRATEGIES.length]!
      const z = new Uint8Array(deflateRawSync(data, { level, strategy }))
      expectSame(inflate(z, data.length), data)
    }
    // pako (what the encoder uses) at its default and best levels.
    for (let round = 0; round < 10; round++) {
      const data = sample(r, Math.floor(r() * 200_000))
      expectSame(inflate(deflateRaw(data, { level: round % 2 ? 9 : 6 }), data.length), data)
    }
    expectSame(inflate(deflateRawSync(new Uint8Array(0)), 0), new Uint8Array(0))
  })

  it('rejects wrong sizes, trailing bytes and truncation with DeltaFormatError', () => {
    const data = sample(prng(8), 50_000)
    const z = new Uint8Array(deflateRawSync(data))
    const code = (run: () => void) => {
      try {
        run()
      } catch (e) {
        expect(e).toBeInstanceOf(DeltaFormatError)
        return (e as DeltaFormatError).code
      }
      return 'accepted'
    }
    expect(code(() => inflate(z, data.length - 1))).toBe('bad-stream')
    expect(code(() => inflate(z, data.length + 1))).toBe('bad-stream')
    expect(code(() => inflate(Uint8Array.of(...z, 0), data.length))).toBe('bad-stream')
    for (const cut of [0, 1, 2, z.length >> 1, z.length - 1]) {
      expect(code(() => inflate(z.subarray(0, cut), data.length))).toBe('bad-stream')
    }
    // Reserved block type 3.
    expect(code(() => inflate(Uint8Array.of(0x07), 1))).toBe('bad-stream')
    // A stored block whose length check fails.
    expect(code(() => inflate(Uint8Array.of(0x01, 0x05, 0x00, 0x00, 0x00), 5))).toBe('bad-stream')
  })

  it('agrees with zlib or throws DeltaFormatError on corrupted streams', () => {
    const r = prng(9)
    let agreed = 0
    for (let round = 0; round < 3000; round++) {
      const data = sample(r, 1 + Math.floor(r() * 3000))
      const z = new Uint8Array(
        deflateRawSync(data, {
          strategy: ZLIB_STRATEGIES[round % ZLIB_STRATEGIES.length]!,
          level: 1 + (round % 9),
        }),
      )
      const bad = z.slice()
      const flips = 1 + Math.floor(r() * 3)
      for (let k = 0; k < flips; k++) bad[Math.floor(r() * bad.length)]! ^= 1 << Math.floor(r() * 8)
      let reference: Uint8Array | undefined
      try {
        reference = new Uint8Array(inflateRawSync(bad))
      } catch {
        reference = undefined
      }
      // Ask for zlib's length when it succeeded (else the original's): ours must then agree exactly
      // or reject, never return different bytes or throw anything else.
      const out = new Uint8Array(reference?.length ?? data.length)
      try {
        inflateRawInto(bad, out, 'fuzz')
      } catch (e) {
        expect(e).toBeInstanceOf(DeltaFormatError)
        continue
      }
      expect(reference).toBeDefined()
      expectSame(out, reference ?? new Uint8Array(0))
      agreed++
    }
    expect(agreed).toBeGreaterThan(0)
  })
})
