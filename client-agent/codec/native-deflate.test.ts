import { once } from 'node:events'
import { constants, createDeflateRaw, deflateRawSync, gzipSync } from 'node:zlib'
import { describe, expect, it } from 'vitest'
import { applyApproxDelta, applyApproxDeltaStream, type InflateHost } from '../../delta/approx/index.ts'
import { blockBoundaries } from '../../delta/archive/block-boundaries.ts'
import { decodeContainer } from '../../delta/archive/container.ts'
import { crc32 } from '../../delta/archive/crc32.ts'
import { inflaterFor } from '../../delta/archive/deflate-engine.ts'
import {
  type ArchiveDeltaOptions,
  createArchiveDelta,
  createArchiveDeltaAsync,
  type DeflateEngine,
  pakoEngine,
} from '../../delta/archive/index.ts'
import { inflateRawPrefix } from '../../delta/archive/inflate.ts'
import {
  type DeflateParams,
  enginePrefixVerdict,
  PREFIX_SETTLED,
  reproducesWith,
} from '../../delta/archive/recompress.ts'
import { DeltaFormatError } from '../../delta/errors.ts'
import { sourceLikeText as text, textWithStoredStretches } from '../../delta/fuzz-input.ts'
import { applyDeltaStream, createDelta, createDeltaAsync, readerFromBytes } from '../../delta/index.ts'
import { collectingSink, sourceFromBytes } from '../../delta/io.ts'
import {
  nativeDeflateEngine,
  oneJobChunkSize,
  PAKO_PROBE,
  probeHashFamily,
  probeSample,
} from './native-deflate.ts'

const u8 = (b: Buffer) => new Uint8Array(b.buffer, b.byteOffset, b.length)

const params = (level: number, memLevel = 8): DeflateParams => ({
  level,
  memLevel,
  windowBits: 15,
  strategy: 0,
  legacyHash: false,
})

describe('Node zlib as a deflate engine', () => {
  it("uses the Chromium hash (pako's default) in the Node this project runs on", () => {
    expect(probeHashFamily()).toBe(false)
    expect(nativeDeflateEngine.handles(params(9))).toBe(true)
    expect(nativeDeflateEngine.handles({ ...params(9), legacyHash: true })).toBe(false)
  })

  it("records pako's probe output correctly (a pako upgrade that changes it fails here)", () => {
    const sample = probeSample()
    for (const p of PAKO_PROBE) {
      const out = pakoEngine.deflate(sample, { ...p, windowBits: 15, strategy: 0 })
      expect({ length: out.length, crc: crc32(out) }).toEqual({ length: p.length, crc: p.crc })
    }
  })

  it('produces pako’s bytes at every level', () => {
    const raw = text(3, 700_000)
    for (const p of [1, 2, 3, 4, 5, 6, 7, 8, 9].map((level) => params(level)).concat([params(9, 4)])) {
      expect(
        Buffer.from(nativeDeflateEngine.deflate(raw, p)).equals(Buffer.from(pakoEngine.deflate(raw, p))),
      ).toBe(true)
    }
  })

  it('deflates a prefix like the whole stream up to the blocks the prefix settles, stored ones too', () => {
    // The parameter proof rules out wrong settings on such a prefix (recompress.ts, PREFIX_SETTLED).
    const raw = textWithStoredStretches(31)
    for (const [right, wrong] of [
      [params(9), params(6)],
      [params(6), params(9)],
      [params(1), params(2)],
      [params(9, 4), params(9)],
    ] as const) {
      const compressed = pakoEngine.deflate(raw, right)
      expect(reproducesWith(raw, compressed, right, nativeDeflateEngine)).toBe(true)
      expect(reproducesWith(raw, compressed, wrong, nativeDeflateEngine)).toBe(false)
      for (const b of blockBoundaries(compressed, raw.length).filter((_, i) => i % 4 === 1)) {
        for (const past of [0, 1, 300]) {
          const prefix = b.raw + PREFIX_SETTLED + past
          if (prefix > raw.length) continue
          expect(enginePrefixVerdict(raw, compressed, right, nativeDeflateEngine, prefix)).toBe('undecided')
          expect(enginePrefixVerdict(raw, compressed, wrong, nativeDeflateEngine, prefix)).toBe('mismatch')
        }
      }
    }
  })

  it('restarts asynchronously in one thread-pool job, so a busy main thread does not hold it up', async () => {
    const raw = text(11, 2_000_000)
    const p = params(9)
    const expected = nativeDeflateEngine.deflate(raw, p)
    // Deflating all of it synchronously once tells how long the job takes on this machine now.
    let started = performance.now()
    nativeDeflateEngine.deflate(raw, p)
    const alone = performance.now() - started
    let finished = 0
    const job = nativeDeflateEngine.deflateResumed!(raw, p, new Uint8Array(0)).then((out) => {
      finished = performance.now()
      return out
    })
    // Block the main thread for well over the job's own time, as a synchronous diff does.
    started = performance.now()
    while (performance.now() - started < Math.max(600, 4 * alone)) {}
    const unblocked = performance.now()
    expect(Buffer.from(await job).equals(Buffer.from(expected))).toBe(true)
    // Done on the pool while the thread was blocked; in 16 KiB chunks it would only have started.
    expect(finished - unblocked).toBeLessThan(alone / 2)
    expect(oneJobChunkSize(raw.length)).toBeGreaterThan(expected.length)
  })

  it('streams the same bytes however the input is cut', async () => {
    const raw = text(4, 600_000)
    const whole = Buffer.from(pakoEngine.deflate(raw, params(9)))
    let seed = 7
    const stream = nativeDeflateEngine.open(params(9))
    const out: Uint8Array[] = []
    for (let at = 0; at < raw.length; ) {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0
      const n = Math.min(raw.length - at, 1 + (seed % 90_000))
      out.push(...(await stream.push(raw.subarray(at, at + n))))
      at += n
    }
    out.push(...(await stream.finish()))
    expect(Buffer.concat(out).equals(whole)).toBe(true)
  })

  const archiveDelta = (source: Uint8Array, target: Uint8Array, options: ArchiveDeltaOptions) => {
    const made = createArchiveDelta(source, target, options)
    if (!('delta' in made)) throw new Error(made.notApplicable)
    return made
  }
  const applyWithAndWithout = async (source: Uint8Array, delta: Uint8Array, target: Uint8Array) => {
    for (const engine of [nativeDeflateEngine, undefined]) {
      const sink = collectingSink()
      await applyDeltaStream(
        readerFromBytes(source),
        sourceFromBytes(delta),
        sink,
        engine ? { deflateEngine: engine } : {},
      )
      expect(Buffer.from(sink.bytes()).equals(Buffer.from(target))).toBe(true)
    }
  }

  it('creates checkpointed archive deltas that rebuild in pieces, and still apply without the engine', async () => {
    const source = text(5, 3_000_000)
    const target = source.slice()
    target.set(new TextEncoder().encode('/* 1.0.1 */'), 1_500_000)
    const gzSource = u8(gzipSync(source, { level: 9 }))
    const gzTarget = u8(gzipSync(target, { level: 9 }))
    // Checkpoints are for streams recompressed whole; splicing would copy this one's tokens instead.
    const native = archiveDelta(gzSource, gzTarget, {
      deflateEngine: nativeDeflateEngine,
      splice: 'never' as const,
    })
    const container = decodeContainer(native.delta, { maxTargetBytes: 1 << 30, maxExpandedBytes: 1 << 30 })
    const stream = container.segments.find((s) => s.kind === 'deflate')
    expect(stream?.kind === 'deflate' && (stream.checkpoints?.length ?? 0)).toBeGreaterThan(0)
    // The publisher's async form proves the same checkpoints while it diffs, and makes the same bytes.
    const overlapped = await createArchiveDeltaAsync(gzSource, gzTarget, {
      deflateEngine: nativeDeflateEngine,
      splice: 'never' as const,
    })
    expect('delta' in overlapped && Buffer.from(overlapped.delta).equals(Buffer.from(native.delta))).toBe(
      true,
    )
    const viaCreateDelta = await createDeltaAsync(gzSource, gzTarget, { deflateEngine: nativeDeflateEngine })
    expect(viaCreateDelta.method).toBe('archive')
    expect(viaCreateDelta.candidates.map((c) => c.method)).toEqual(['archive', 'vcdiff', 'approx'])
    // Without an engine there are no checkpoints, and nothing else differs.
    const pure = archiveDelta(gzSource, gzTarget, { splice: 'never' as const })
    expect(native.delta.length).toBeGreaterThan(pure.delta.length)
    await applyWithAndWithout(gzSource, native.delta, gzTarget)
  })

  /** Node's engine, noting the input length of every synchronous deflate and every async restart. */
  const countingEngine = () => {
    const sync: number[] = []
    const restarts: number[] = []
    const engine: DeflateEngine = {
      ...nativeDeflateEngine,
      deflate(raw, p) {
        sync.push(raw.length)
        return nativeDeflateEngine.deflate(raw, p)
      },
      deflateResumed(input, p, dictionary) {
        restarts.push(input.length)
        return nativeDeflateEngine.deflateResumed!(input, p, dictionary)
      },
    }
    return { engine, sync, restarts }
  }

  /** gzip of `raw` at level 9 up to `at`, then level 1: zlib's own stream, until it changes settings. */
  const gzipChangingLevel = async (raw: Uint8Array, at: number): Promise<Uint8Array> => {
    const z = createDeflateRaw({ level: 9 })
    const out: Buffer[] = []
    z.on('data', (chunk: Buffer) => out.push(chunk))
    z.write(raw.subarray(0, at))
    await new Promise<void>((resolve) => z.params(1, constants.Z_DEFAULT_STRATEGY, () => resolve()))
    z.end(raw.subarray(at))
    await once(z, 'end')
    // gzip's framing (RFC 1952): header with XFL 2 (level 9), the stream, CRC-32 and size.
    const trailer = new DataView(new ArrayBuffer(8))
    trailer.setUint32(0, crc32(raw), true)
    trailer.setUint32(4, raw.length, true)
    const header = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 3]
    return u8(Buffer.concat([Buffer.from(header), ...out, Buffer.from(trailer.buffer)]))
  }

  it('proves target parameters on the thread pool while diffing; a stream parting late is searched again', async () => {
    const source = text(10, 1_200_000)
    const target = source.slice()
    target.set(new TextEncoder().encode('/* 1.0.1 */'), 300_000)
    const gzSource = u8(gzipSync(source, { level: 9 }))
    const options = { splice: 'never' as const }

    // A plain level-9 stream: once a prefix agrees, the whole-stream proof runs as an async deflate.
    const gzTarget = u8(gzipSync(target, { level: 9 }))
    const plain = countingEngine()
    const overlapped = await createArchiveDeltaAsync(gzSource, gzTarget, {
      ...options,
      deflateEngine: plain.engine,
    })
    expect({ restarts: plain.restarts, sync: plain.sync.includes(target.length) }).toEqual({
      restarts: [target.length],
      sync: false,
    })
    const inPlace = archiveDelta(gzSource, gzTarget, { ...options, deflateEngine: nativeDeflateEngine })
    expect('delta' in overlapped && Buffer.from(overlapped.delta).equals(Buffer.from(inPlace.delta))).toBe(
      true,
    )

    // Level 9 for its first 700 KB: the prefix agrees, the whole stream does not, so the async proof
    // fails and the search runs again proving in place; the delta is what that search alone makes.
    const parted = await gzipChangingLevel(target, 700_000)
    const redo = countingEngine()
    const redone = await createArchiveDeltaAsync(gzSource, parted, { ...options, deflateEngine: redo.engine })
    expect(redo.restarts).toEqual([target.length])
    expect(redo.sync).toContain(target.length)
    const searched = archiveDelta(gzSource, parted, { ...options, deflateEngine: nativeDeflateEngine })
    expect('delta' in redone && Buffer.from(redone.delta).equals(Buffer.from(searched.delta))).toBe(true)
    expect(searched.details.reproduced).toBe(0)
    await applyWithAndWithout(gzSource, searched.delta, parted)
  })

  it('splices with Node zlib restarting the gaps, and the delta still applies with pako alone', async () => {
    // Big enough that splicing beats Node's own deflate on two cores (splice.ts, spliceWorthIt).
    const source = text(8, 8_000_000)
    const target = new Uint8Array(source.length + 5_000)
    target.set(source.subarray(0, 1_000_000))
    target.set(text(9, 5_000), 1_000_000)
    target.set(source.subarray(1_000_000), 1_005_000)
    target.set(new TextEncoder().encode('/* 1.0.1 */'), 6_500_000)
    const gzSource = u8(gzipSync(source, { level: 9 }))
    const gzTarget = u8(gzipSync(target, { level: 9 }))
    const made = archiveDelta(gzSource, gzTarget, { deflateEngine: nativeDeflateEngine })
    expect(made.details).toMatchObject({ spliced: 1 })
    await applyWithAndWithout(gzSource, made.delta, gzTarget)
  })

  it('inflates like pako: same data, same stream end, same typed errors', () => {
    const raw = text(6, 900_000)
    const stream = u8(deflateRawSync(raw, { level: 9 }))
    const followed = new Uint8Array(stream.length + 8)
    followed.set(stream)
    followed.set([1, 2, 3, 4, 5, 6, 7, 8], stream.length)
    const inflate = inflaterFor(nativeDeflateEngine)
    const native = inflate(followed, raw.length, 'test')
    const pure = inflateRawPrefix(followed, raw.length, 'test')
    expect(native.consumed).toBe(stream.length)
    expect(pure.consumed).toBe(stream.length)
    expect(Buffer.from(native.data).equals(Buffer.from(raw))).toBe(true)

    const refuse = (input: Uint8Array, max: number) => {
      for (const f of [inflate, inflateRawPrefix]) {
        const error = (() => {
          try {
            f(input, max, 'test')
          } catch (e) {
            return e
          }
        })()
        expect(error).toBeInstanceOf(DeltaFormatError)
      }
    }
    refuse(stream.subarray(0, stream.length - 100), raw.length) // truncated
    refuse(stream, raw.length - 1) // more output than the caller allows
    const damaged = stream.slice()
    damaged[0] = 0xff // reserved block type 3
    refuse(damaged, raw.length)

    // Small streams go to the engine too: in a fresh process pako's first inflates run cold.
    let calls = 0
    const counting = inflaterFor({
      ...nativeDeflateEngine,
      inflateRaw: (input, max) => {
        calls++
        return nativeDeflateEngine.inflateRaw!(input, max)
      },
    })
    const small = u8(deflateRawSync(raw.subarray(0, 2_000)))
    expect(Buffer.from(counting(small, 2_000, 'test').data).equals(Buffer.from(raw.subarray(0, 2_000)))).toBe(
      true,
    )
    expect(calls).toBe(1)
  })

  it('inflates approx block streams for applyDelta, held to the exact-length contract', async () => {
    const source = text(8, 600_000)
    const target = source.slice(1000)
    // Scattered changes of varied values: a diff stream that deflates to more than a few KiB.
    for (let i = 500; i < target.length; i += 37) target[i] = (target[i] ?? 0) ^ (1 + ((i * 131) & 0x7f))
    const made = createDelta(source, target, { methods: ['approx'] })
    let inflated = 0
    const counting: InflateHost = {
      inflateRaw(input, maxOutput) {
        inflated++
        return nativeDeflateEngine.inflateRaw!(input, maxOutput)
      },
    }
    const sink = collectingSink()
    await applyApproxDeltaStream(readerFromBytes(source), sourceFromBytes(made.delta), sink, {}, counting)
    expect(Buffer.compare(sink.bytes(), target)).toBe(0)
    expect(inflated).toBeGreaterThan(0)
    expect(Buffer.compare(applyApproxDelta(source, made.delta, {}, nativeDeflateEngine), target)).toBe(0)

    // A host that returns too little, leaves input over or throws gets the decoder's typed error.
    const liars: InflateHost[] = [
      { inflateRaw: (input, max) => ({ data: new Uint8Array(max - 1), consumed: input.length }) },
      { inflateRaw: (input, max) => ({ data: new Uint8Array(max), consumed: input.length - 1 }) },
      {
        inflateRaw: () => {
          throw new RangeError('zlib says no')
        },
      },
    ]
    for (const host of liars) {
      expect(() => applyApproxDelta(source, made.delta, {}, host)).toThrow(DeltaFormatError)
    }
  })
})
