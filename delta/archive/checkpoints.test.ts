import fc from 'fast-check'
import { Deflate } from 'pako'
import { describe, expect, it } from 'vitest'
import { DeltaFormatError } from '../errors.ts'
import { sourceLikeText } from '../fuzz-input.ts'
import { collectingSink } from '../io.ts'
import {
  BitSplicer,
  bitsMatch,
  checkpointsPay,
  endsTheStream,
  findCheckpoints,
  findCheckpointsAsync,
  PiecewiseDeflate,
} from './checkpoints.ts'
import { decodeContainer, encodeContainer } from './container.ts'
import { type DeflateEngine, pakoEngine } from './deflate-engine.ts'
import { applyArchiveDeltaToSink, createArchiveDelta } from './index.ts'
import { candidateParams, type DeflateParams } from './recompress.ts'

/** pako with restarts: deflate with a preset dictionary (what Node's zlib engine does natively). */
function pakoResumed(input: Uint8Array, params: DeflateParams, dictionary: Uint8Array): Uint8Array {
  const d = new Deflate({
    raw: true,
    level: params.level,
    memLevel: params.memLevel,
    windowBits: params.windowBits,
    legacyHash: params.legacyHash,
    ...(dictionary.length > 0 ? { dictionary } : {}),
  })
  d.push(input, true)
  return d.result
}

/** A test engine that restarts with pako, so checkpoints are exercised without Node's zlib. */
const restartingPako: DeflateEngine = {
  ...pakoEngine,
  name: 'pako-restarting',
  deflateResumedSync: pakoResumed,
  deflateResumed: async (input, params, dictionary) => pakoResumed(input, params, dictionary),
}

const bitString = (bytes: Uint8Array, bits: number) =>
  Array.from({ length: bits }, (_, i) => (bytes[i >>> 3]! >>> (i & 7)) & 1).join('')

describe('bit splicing', () => {
  it('appends bit strings of any length at any offset', () => {
    const piece = fc
      .uint8Array({ minLength: 1, maxLength: 40 })
      .chain((bytes) => fc.integer({ min: 0, max: bytes.length * 8 }).map((bits) => ({ bytes, bits })))
    fc.assert(
      fc.property(fc.array(piece, { maxLength: 8 }), (pieces) => {
        const total = pieces.reduce((n, p) => n + p.bits, 0)
        const splicer = new BitSplicer(Math.ceil(total / 8))
        for (const p of pieces) splicer.append(p.bytes, p.bits)
        const expected = pieces.map((p) => bitString(p.bytes, p.bits)).join('')
        expect(bitString(splicer.bytes(), total)).toBe(expected)
        // And bitsMatch finds each piece where it was put.
        let at = 0
        for (const p of pieces) {
          expect(bitsMatch(splicer.bytes(), at, p.bytes, p.bits)).toBe(true)
          at += p.bits
        }
      }),
    )
  })

  it('matches a stream end whatever the two paddings', () => {
    // Stream: 13 bits then padding; a piece starting at bit 5 holds 8 bits + padding of its own.
    const stream = Uint8Array.of(0b1010_0000, 0b0001_0110)
    const piece = Uint8Array.of(0b1011_0101)
    expect(endsTheStream(stream, 5, piece)).toBe(true)
    expect(endsTheStream(stream, 5, Uint8Array.of(0b1011_0100))).toBe(false)
    // Zero bits past the end are padding either way; a set one is data the stream does not have.
    expect(endsTheStream(stream, 5, Uint8Array.of(0b1011_0101, 0))).toBe(true)
    expect(endsTheStream(stream, 5, Uint8Array.of(0b1011_0101, 0b0000_1000))).toBe(false)
    expect(endsTheStream(Uint8Array.of(0b1010_0000, 0b0001_0110, 0b1000_0000), 5, piece)).toBe(false)
  })
})

describe('checkpoints', () => {
  const raw = sourceLikeText(11, 3_000_000)
  const params = candidateParams()[0]!
  const compressed = pakoEngine.deflate(raw, params)

  it('are proved restart points whose pieces splice back into the stream', async () => {
    const checkpoints = findCheckpoints(raw, compressed, params, restartingPako)
    expect(checkpoints.length).toBeGreaterThan(0)
    const rebuild = new PiecewiseDeflate(
      restartingPako.deflateResumed!,
      params,
      raw.length,
      compressed.length,
      checkpoints,
    )
    for (let at = 0, n = 1; at < raw.length; at += n, n = (n * 7 + 13) % 200_000)
      await rebuild.push(raw.subarray(at, at + n))
    const [out] = await rebuild.finish()
    expect(Buffer.from(out!).equals(Buffer.from(compressed))).toBe(true)
  })

  it('are found the same way with asynchronous restarts, repairs included', async () => {
    const clean = findCheckpoints(raw, compressed, params, restartingPako)
    expect(await findCheckpointsAsync(raw, compressed, params, restartingPako)).toEqual(clean)
    // An engine whose restart at one checkpoint comes out wrong: that point must be repaired away
    // (merged into a neighbour), identically by both drivers.
    const bad = clean[1]!
    const spoilAt = (out: Uint8Array, input: Uint8Array) => {
      if (input.byteOffset - raw.byteOffset !== bad.raw) return out
      const copy = out.slice()
      copy[0]! ^= 0xff
      return copy
    }
    const flaky: DeflateEngine = {
      ...restartingPako,
      deflateResumedSync: (input, p, dictionary) => spoilAt(pakoResumed(input, p, dictionary), input),
      deflateResumed: async (input, p, dictionary) => spoilAt(pakoResumed(input, p, dictionary), input),
    }
    const repaired = findCheckpoints(raw, compressed, params, flaky)
    expect(repaired).not.toContainEqual(bad)
    expect(repaired.length).toBe(clean.length - 1)
    expect(await findCheckpointsAsync(raw, compressed, params, flaky)).toEqual(repaired)
  })

  it('a rebuild gathers input as it comes, whatever size the container claims', async () => {
    // A (hostile) claim of a 1 GiB stream costs what actually arrives, and ends as a typed error.
    const claim = new PiecewiseDeflate(restartingPako.deflateResumed!, params, 2 ** 30, 100, [
      { raw: 1 << 29, bit: 8 },
    ])
    await claim.push(raw.subarray(0, 4096))
    await expect(claim.finish()).rejects.toBeInstanceOf(DeltaFormatError)
    const overfull = new PiecewiseDeflate(restartingPako.deflateResumed!, params, 10, 100, [])
    await expect(overfull.push(raw.subarray(0, 11))).rejects.toBeInstanceOf(DeltaFormatError)
  })

  it('are not made without an engine that restarts, or for small streams', () => {
    expect(findCheckpoints(raw, compressed, params, pakoEngine)).toEqual([])
    const small = raw.subarray(0, 1 << 20)
    expect(findCheckpoints(small, pakoEngine.deflate(small, params), params, restartingPako)).toEqual([])
    // The same 3 MB at level 6 deflate about three times faster: not worth splitting, nor proving.
    const level6 = { ...params, level: 6 }
    expect(findCheckpoints(raw, pakoEngine.deflate(raw, level6), level6, restartingPako)).toEqual([])
    expect(checkpointsPay(raw.length, 9)).toBe(true)
    expect(checkpointsPay(raw.length, 6)).toBe(false)
    expect(checkpointsPay(6_000_000, 6)).toBe(true)
  })

  const gz = (bytes: Uint8Array) => {
    const d = new Deflate({ gzip: true, level: 9 })
    d.push(bytes, true)
    return d.result
  }
  const gzSource = gz(raw)
  const edited = raw.slice()
  edited.set(new TextEncoder().encode('// changed'), 2_000_000)
  const gzTarget = gz(edited)
  const limits = { maxTargetBytes: 1 << 30, maxExpandedBytes: 1 << 30 }
  let made: Uint8Array | undefined
  /** The checkpointed delta (made once) and a fresh decoded copy of its container to tamper with. */
  const checkpointed = () => {
    if (!made) {
      // Splicing would rebuild this lightly edited stream from the source's tokens instead.
      const result = createArchiveDelta(gzSource, gzTarget, {
        deflateEngine: restartingPako,
        splice: 'never' as const,
      })
      if (!('delta' in result)) throw new Error(result.notApplicable)
      made = result.delta
    }
    const c = decodeContainer(made, limits)
    const stream = c.segments.find((s) => s.kind === 'deflate')
    if (stream?.kind !== 'deflate' || !stream.checkpoints) throw new Error('expected checkpoints')
    return { delta: made, c, stream, checkpoints: stream.checkpoints, limits }
  }

  it('travel in the container, and wrong ones fail the rebuild instead of giving wrong bytes', async () => {
    const { delta, c, checkpoints } = checkpointed()

    const good = collectingSink()
    await applyArchiveDeltaToSink(gzSource, delta, good, undefined, undefined, restartingPako)
    expect(Buffer.from(good.bytes()).equals(Buffer.from(gzTarget))).toBe(true)

    // Shift one checkpoint by a bit: still a valid container, but the spliced stream is wrong.
    checkpoints[0] = { ...checkpoints[0]!, bit: checkpoints[0]!.bit + 1 }
    const tampered = encodeContainer(c)
    const failure = await applyArchiveDeltaToSink(
      gzSource,
      tampered,
      collectingSink(),
      undefined,
      undefined,
      restartingPako,
    ).catch((e: unknown) => e)
    expect(failure).toBeInstanceOf(DeltaFormatError)
    // A decoder without restarts ignores checkpoints and rebuilds the target anyway.
    const plain = collectingSink()
    await applyArchiveDeltaToSink(gzSource, tampered, plain)
    expect(Buffer.from(plain.bytes()).equals(Buffer.from(gzTarget))).toBe(true)
  })

  it('the container refuses impossible checkpoint lists', () => {
    const { c, stream, checkpoints, limits } = checkpointed()
    const first = checkpoints[0]!
    for (const bad of [
      [first, first], // not increasing
      [{ raw: stream.rawLength, bit: first.bit }], // at the end of the raw stream
      [{ raw: first.raw, bit: stream.compressedLength * 8 }], // past the compressed stream
    ]) {
      stream.checkpoints = bad
      expect(() => decodeContainer(encodeContainer(c), limits)).toThrow(DeltaFormatError)
    }
  })
})
