import { deflateRawSync, gzipSync } from 'node:zlib'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { decodeContainer, encodeContainer } from './archive/container.ts'
import { type DeflateEngine, pakoEngine } from './archive/index.ts'
import { applyDelta, applyDeltaStream, createDelta, DeltaFormatError, detectDeltaMethod } from './index.ts'
import { collectingSink, type RandomAccessReader, readerFromBytes, sourceFromBytes } from './io.ts'
import { seededBytes as bytes } from './test/seeded-bytes.ts'

function edited(base: Uint8Array): Uint8Array {
  const out = new Uint8Array(base.length + 100)
  out.set(base.subarray(0, 5000))
  out.set(bytes(100, 99), 5000)
  out.set(base.subarray(5000), 5100)
  return out
}

const ARCHIVE_DEFAULTS = { maxTargetBytes: 2 ** 30, maxExpandedBytes: 2 ** 30 }

const same = (a: Uint8Array, b: Uint8Array) => a.length === b.length && Buffer.compare(a, b) === 0

describe('createDelta / applyDelta', () => {
  it('keeps the smallest candidate, records every try, and applies by magic', () => {
    const source = bytes(50_000, 1)
    const target = edited(source)
    const made = createDelta(source, target)
    expect(made.candidates.map((c) => c.method)).toEqual(['archive', 'vcdiff', 'approx'])
    expect(made.candidates[0]?.skipped).toContain('not a gzip')
    const sizes = made.candidates.flatMap((c) => (c.size === undefined ? [] : [c.size]))
    expect(made.delta.length).toBe(Math.min(...sizes))
    expect(made.delta.length).toBeLessThan(2000)
    expect(detectDeltaMethod(made.delta)).toBe(made.method)
    expect(same(applyDelta(source, made.delta), target)).toBe(true)
  })

  it.each(['vcdiff', 'approx'] as const)(
    'round-trips %s in memory and streamed in odd chunks',
    async (method) => {
      const source = bytes(40_000, 3)
      const target = edited(source)
      const { delta } = createDelta(source, target, { methods: [method] })
      expect(same(applyDelta(source, delta), target)).toBe(true)
      for (const chunk of [1, 3, 4096]) {
        const sink = collectingSink()
        expect(await applyDeltaStream(readerFromBytes(source), sourceFromBytes(delta, chunk), sink)).toBe(
          method,
        )
        expect(same(sink.bytes(), target)).toBe(true)
      }
    },
  )

  it('uses the archive method for gzip pairs', async () => {
    const text = (n: number) =>
      new TextEncoder().encode(Array.from({ length: n }, (_, i) => `line ${i}\n`).join(''))
    const source = gzipSync(text(5000), { level: 9 })
    const target = gzipSync(new Uint8Array([...text(5000), ...new TextEncoder().encode('one more line\n')]), {
      level: 9,
    })
    const made = createDelta(source, target)
    expect(made.method).toBe('archive')
    expect(made.delta.length).toBeLessThan(target.length / 10)
    expect(same(applyDelta(source, made.delta), target)).toBe(true)
    const sink = collectingSink()
    await applyDeltaStream(readerFromBytes(source), sourceFromBytes(made.delta, 7), sink)
    expect(same(sink.bytes(), target)).toBe(true)
  })

  it('streaming an archive delta checks the source it names before reading it, and caps the delta', async () => {
    const text = (n: number) =>
      new TextEncoder().encode(Array.from({ length: n }, (_, i) => `line ${i}\n`).join(''))
    const source = gzipSync(text(5000), { level: 9 })
    const target = gzipSync(text(5001), { level: 9 })
    const { delta, method } = createDelta(source, target)
    expect(method).toBe('archive')
    // Another file (here: the source with a byte more) is refused without a byte of it read.
    let read = 0
    const counting = (bytes: Uint8Array): RandomAccessReader => ({
      size: bytes.length,
      read: async (at, n) => {
        read += n
        return bytes.subarray(at, at + n)
      },
    })
    const refusal = (sourceReader: RandomAccessReader, deltaBytes: Uint8Array, limits = {}) =>
      applyDeltaStream(sourceReader, sourceFromBytes(deltaBytes, 4096), collectingSink(), {
        archive: limits,
      }).then(
        () => null,
        (error: DeltaFormatError) => error.code,
      )
    expect(await refusal(counting(new Uint8Array([...source, 0])), delta)).toBe('archive-source-mismatch')
    expect(read).toBe(0)
    // A source that could not expand within the limits is not read either, even when the delta (a
    // hostile one) names its very length: here 200 KB against a 60 KB limit (the expanded target fits).
    const lying = encodeContainer({ ...decodeContainer(delta, ARCHIVE_DEFAULTS), sourceLength: 200_000 })
    expect(await refusal(counting(new Uint8Array(200_000)), lying, { maxExpandedBytes: 60_000 })).toBe(
      'archive-limit',
    )
    expect(read).toBe(0)
    // A delta longer than any the limits allow (here 64 MiB more) is refused as soon as it is, not read
    // to its end.
    let handed = 0
    const padded: AsyncIterable<Uint8Array> = {
      async *[Symbol.asyncIterator]() {
        yield delta
        for (let i = 0; i < 1024; i++) {
          handed += 65536
          yield new Uint8Array(65536)
        }
      },
    }
    const limits = { maxTargetBytes: 1 << 20, maxExpandedBytes: 1 << 20 }
    await expect(
      applyDeltaStream(readerFromBytes(source), padded, collectingSink(), { archive: limits }),
    ).rejects.toMatchObject({ code: 'archive-limit' })
    expect(handed).toBeLessThan(5 << 20)
  })

  it('refuses unknown containers and garbage with DeltaFormatError only', async () => {
    expect(() => applyDelta(new Uint8Array(1), new Uint8Array([1, 2, 3, 4]))).toThrow(DeltaFormatError)
    await expect(
      applyDeltaStream(
        readerFromBytes(new Uint8Array(1)),
        sourceFromBytes(new Uint8Array(2)),
        collectingSink(),
      ),
    ).rejects.toThrow(DeltaFormatError)
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 256 }), (junk) => {
        try {
          applyDelta(bytes(64, 5), junk)
        } catch (error) {
          if (!(error instanceof DeltaFormatError)) throw error
        }
      }),
      { numRuns: 300 },
    )
  })
})

describe('createDelta effort', () => {
  it('skips approx when the vcdiff delta leaves it too little to save, unless exhaustive', () => {
    const source = bytes(50_000, 5)
    const target = edited(source)
    const auto = createDelta(source, target)
    const approx = auto.candidates.find((c) => c.method === 'approx')
    expect(approx?.skipped).toMatch(/approx at most/)
    expect(auto.method).toBe('vcdiff')
    const all = createDelta(source, target, { effort: 'exhaustive' })
    expect(all.candidates.find((c) => c.method === 'approx')?.size).toBeGreaterThan(0)
    expect(all.delta.length).toBeLessThanOrEqual(auto.delta.length)
  })

  it('runs approx first on executables and skips vcdiff when approx did well', () => {
    const elf = (seed: number) => {
      const b = bytes(120_000, seed)
      b.set([0x7f, 0x45, 0x4c, 0x46], 0)
      return b
    }
    const source = elf(7)
    // Shifted addresses: every 40th byte changes, as relocated operands do.
    const target = source.map((b, i) => (i > 3 && i % 40 === 0 ? (b + 3) & 0xff : b))
    const made = createDelta(source, target)
    expect(made.candidates.map((c) => c.method)).toEqual(['archive', 'approx', 'vcdiff'])
    expect(made.candidates.find((c) => c.method === 'vcdiff')?.skipped).toMatch(/executable/)
    expect(made.method).toBe('approx')
    expect(same(applyDelta(source, made.delta), target)).toBe(true)
    // Not an executable (no magic): both run, in the usual order.
    const plain = createDelta(source.subarray(4), target.subarray(4))
    expect(plain.candidates.filter((c) => c.size !== undefined).map((c) => c.method)).toEqual([
      'vcdiff',
      'approx',
    ])
  })

  it('runs approx when the cheap delta is large', () => {
    const source = bytes(200_000, 6)
    // Every 50th byte changed: vcdiff breaks its copies everywhere, approx keeps one alignment.
    const target = source.map((b, i) => (i % 50 === 0 ? (b + 1) & 0xff : b))
    const made = createDelta(source, target)
    expect(made.candidates.find((c) => c.method === 'approx')?.size).toBeGreaterThan(0)
    expect(made.method).toBe('approx')
    expect(same(applyDelta(source, made.delta), target)).toBe(true)
  })

  it("deflates approx's block streams with the caller's engine, and the delta still applies", () => {
    const source = bytes(200_000, 6)
    const target = source.map((b, i) => (i % 50 === 0 ? (b + 1) & 0xff : b))
    const asked: { level: number; memLevel: number }[] = []
    // Node's zlib, which needs not match pako here: approx's decoder only inflates.
    const engine: DeflateEngine = {
      ...pakoEngine,
      name: 'counting-node-zlib',
      deflate: (raw, params) => {
        asked.push({ level: params.level, memLevel: params.memLevel })
        return deflateRawSync(raw, { level: params.level, memLevel: params.memLevel })
      },
    }
    const made = createDelta(source, target, { methods: ['approx'], deflateEngine: engine })
    expect(asked.length).toBeGreaterThan(0)
    expect(asked.every((a) => a.level === 9 && a.memLevel === 9)).toBe(true)
    expect(same(applyDelta(source, made.delta), target)).toBe(true)
    // Without an engine pako deflates: same format, maybe other bytes.
    expect(same(applyDelta(source, createDelta(source, target, { methods: ['approx'] }).delta), target)).toBe(
      true,
    )
  })
})
