import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { DeltaFormatError } from '../errors.ts'
import { collectingSink, readerFromBytes, sourceFromBytes } from '../io.ts'
import { seededBytes as bytes } from '../test/seeded-bytes.ts'
import { GEAR } from './gear.ts'
import {
  applyChunkPlan,
  buildChunkIndex,
  type ChunkerOptions,
  chunkLengths,
  chunkSource,
  DEFAULT_CHUNKER,
  decodeChunkIndex,
  encodeChunkIndex,
  planChunkSync,
} from './index.ts'

/** Byte equality without vitest's element-by-element deep diff, which is slow on large arrays. */
function same(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i])
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.length
  }
  return out
}

const small: ChunkerOptions = { minSize: 256, avgSize: 1024, maxSize: 8192 }

describe('FastCDC', () => {
  it('pins the gear table (it is part of the index format)', () => {
    expect([GEAR[0], GEAR[1], GEAR[255]]).toEqual([1020716019, 454327756, -1506305628])
  })

  it('respects min/max and averages near avgSize', () => {
    const data = bytes(1 << 20)
    const lengths = chunkLengths(data)
    expect(lengths.reduce((a, b) => a + b, 0)).toBe(data.length)
    for (const n of lengths.slice(0, -1)) {
      expect(n).toBeGreaterThanOrEqual(DEFAULT_CHUNKER.minSize)
      expect(n).toBeLessThanOrEqual(DEFAULT_CHUNKER.maxSize)
    }
    const mean = data.length / lengths.length
    expect(mean).toBeGreaterThan(DEFAULT_CHUNKER.avgSize / 2)
    expect(mean).toBeLessThan(DEFAULT_CHUNKER.avgSize * 2)
  })

  it('streams to the same cuts however the input is split', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 0, max: 40_000 }),
        fc.integer({ min: 1, max: 9000 }),
        async (n, piece) => {
          const data = bytes(n, n)
          const streamed: number[] = []
          for await (const c of chunkSource(sourceFromBytes(data, piece), small))
            streamed.push(c.bytes.length)
          expect(streamed).toEqual(chunkLengths(data, small))
        },
      ),
      { numRuns: 30 },
    )
  })

  it('an insertion in the middle only changes nearby chunks', async () => {
    const base = bytes(256 * 1024, 3)
    const edited = concat(base.subarray(0, 100_000), bytes(100, 9), base.subarray(100_000))
    const a = await buildChunkIndex(base)
    const b = await buildChunkIndex(edited)
    const known = new Set(a.chunks.map((c) => c.hash))
    const changed = b.chunks.filter((c) => !known.has(c.hash))
    expect(changed.length).toBeLessThanOrEqual(3)
    for (const c of changed) expect(c.offset + c.length).toBeGreaterThan(100_000 - DEFAULT_CHUNKER.maxSize)
    expect(changed.reduce((n, c) => n + c.length, 0)).toBeLessThan(3 * DEFAULT_CHUNKER.maxSize)
  })

  it('rejects bad options', () => {
    expect(() => chunkLengths(bytes(10), { minSize: 4096, avgSize: 1024, maxSize: 8192 })).toThrow(
      DeltaFormatError,
    )
  })
})

describe('chunk index', () => {
  it('round-trips through the binary form, and streamed indexes match in-memory ones', async () => {
    const data = bytes(100_000, 5)
    const index = await buildChunkIndex(data, small)
    expect(decodeChunkIndex(encodeChunkIndex(index))).toEqual(index)
    expect(await buildChunkIndex(sourceFromBytes(data, 3000), small)).toEqual(index)
    const empty = await buildChunkIndex(new Uint8Array(0))
    expect(decodeChunkIndex(encodeChunkIndex(empty))).toEqual(empty)
  })

  it('refuses damaged or hostile bytes with DeltaFormatError only', async () => {
    const wire = encodeChunkIndex(await buildChunkIndex(bytes(20_000), small))
    fc.assert(
      fc.property(fc.nat({ max: wire.length - 1 }), fc.integer({ min: 1, max: 255 }), (pos, x) => {
        const bad = wire.slice()
        bad[pos]! ^= x
        expect(() => decodeChunkIndex(bad)).toThrow(DeltaFormatError)
      }),
      { numRuns: 100 },
    )
    expect(() => decodeChunkIndex(wire.subarray(0, 20))).toThrow(DeltaFormatError)
  })
})

describe('planChunkSync', () => {
  it('rebuilds the target from local chunks plus fetched ranges', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.nat({ max: 60_000 }), fc.nat({ max: 3000 }), fc.nat({ max: 3000 })), {
          maxLength: 4,
        }),
        fc.nat({ max: 8192 }),
        async (edits, gapThreshold) => {
          const local = bytes(60_000, 11)
          let target = local
          for (const [at, del, ins] of edits) {
            const p = Math.min(at, target.length)
            target = concat(
              target.subarray(0, p),
              bytes(ins, at + 1),
              target.subarray(Math.min(target.length, p + del)),
            )
          }
          const li = await buildChunkIndex(local, small)
          const ri = await buildChunkIndex(target, small)
          const plan = planChunkSync(li, ri, { gapThreshold, maxRangeSize: 16_384 })
          for (const r of plan.fetch) expect(r.length <= 16_384 || r.length <= small.maxSize).toBe(true)
          const requested: number[] = []
          const sink = collectingSink()
          const fetchRange = async (r: { offset: number; length: number }) => {
            requested.push(r.offset)
            return target.slice(r.offset, r.offset + r.length)
          }
          await applyChunkPlan(plan, ri, readerFromBytes(local), fetchRange, sink)
          expect(same(sink.bytes(), target)).toBe(true)
          expect(requested).toEqual(plan.fetch.map((r) => r.offset))
          expect(plan.fetchBytes + plan.copyBytes).toBe(target.length)
        },
      ),
      { numRuns: 25 },
    )
  })

  it('fetches only the edited neighbourhood and merges close gaps', async () => {
    const local = bytes(200_000, 21)
    const target = concat(
      local.subarray(0, 50_000),
      bytes(10, 1),
      local.subarray(50_000, 60_000),
      bytes(10, 2),
      local.subarray(60_000),
    )
    const li = await buildChunkIndex(local, small)
    const ri = await buildChunkIndex(target, small)
    const tight = planChunkSync(li, ri, { gapThreshold: 0 })
    const loose = planChunkSync(li, ri, { gapThreshold: 64 * 1024 })
    expect(tight.fetchBytes).toBeLessThan(8 * small.maxSize)
    expect(loose.fetch.length).toBe(1)
    expect(loose.fetch.length).toBeLessThanOrEqual(tight.fetch.length)
  })

  it('fails loudly when the local artifact no longer matches its index', async () => {
    const local = bytes(30_000, 4)
    const target = concat(bytes(5, 5), local)
    const li = await buildChunkIndex(local, small)
    const ri = await buildChunkIndex(target, small)
    const stale = local.slice()
    stale[20_000]! ^= 1
    const plan = planChunkSync(li, ri)
    const run = applyChunkPlan(
      plan,
      ri,
      readerFromBytes(stale),
      async (r) => target.slice(r.offset, r.offset + r.length),
      collectingSink(),
    )
    await expect(run).rejects.toThrow(DeltaFormatError)
  })
})
