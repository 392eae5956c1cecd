import { gzipSync } from 'node:zlib'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { DeltaFormatError } from '../errors.ts'
import { sourceLikeText as text, textWithStoredStretches } from '../fuzz-input.ts'
import { collectingSink } from '../io.ts'
import { blockBoundaries, settlingBoundary } from './block-boundaries.ts'
import { type DeflateEngine, ENGINE_MIN_INPUT, pakoEngine } from './deflate-engine.ts'
import { applyArchiveDelta, applyArchiveDeltaToSink, createArchiveDelta } from './index.ts'
import {
  candidateParams,
  type DeflateParams,
  enginePrefixVerdict,
  PREFIX_CHECK,
  PREFIX_SETTLED,
  reproducesWith,
} from './recompress.ts'

const u8 = (b: Buffer) => new Uint8Array(b.buffer, b.byteOffset, b.length)

/** Wraps pako, counting what it is asked to do; `corrupt` flips one output byte to play a broken engine. */
function recordingEngine(corrupt = false) {
  const calls = { deflate: 0, open: 0, inputs: [] as number[] }
  const spoil = (bytes: Uint8Array): Uint8Array => {
    if (!corrupt || bytes.length === 0) return bytes
    const copy = bytes.slice()
    copy[copy.length >> 1]! ^= 0x40
    return copy
  }
  const engine: DeflateEngine = {
    name: corrupt ? 'corrupting' : 'recording',
    handles: () => true,
    deflate(raw, params) {
      calls.deflate++
      calls.inputs.push(raw.length)
      return spoil(pakoEngine.deflate(raw, params))
    },
    open(params) {
      calls.open++
      const inner = pakoEngine.open(params)
      let first = true
      return {
        async push(bytes) {
          const out = await inner.push(bytes)
          if (!first || out.length === 0) return out
          first = false
          return [spoil(out[0]!), ...out.slice(1)]
        },
        finish: () => inner.finish(),
      }
    },
  }
  return { engine, calls }
}

const source = text(1, 900_000)
const target = (() => {
  const t = text(1, 900_000).slice()
  t.set(new TextEncoder().encode('// a patch release changed this line\n'), 450_000)
  return t
})()
const gzSource = u8(gzipSync(source, { level: 9 }))
const gzTarget = u8(gzipSync(target, { level: 9 }))
/** These tests are about whole-stream recompression; splicing would copy this light edit's tokens. */
const whole = { splice: 'never' as const }

describe('deflate engines', () => {
  it('hands big streams to the engine and keeps its output identical to pako-only', async () => {
    const { engine, calls } = recordingEngine()
    const made = createArchiveDelta(gzSource, gzTarget, { ...whole, deflateEngine: engine })
    expect('delta' in made).toBe(true)
    if (!('delta' in made)) return
    // The proof of the target's parameters ran through the engine: a prefix, then once the whole stream.
    expect(calls.inputs).toEqual([PREFIX_CHECK, target.length])
    const plain = createArchiveDelta(gzSource, gzTarget, whole)
    expect('delta' in plain && Buffer.from(plain.delta).equals(Buffer.from(made.delta))).toBe(true)

    expect(Buffer.from(applyArchiveDelta(gzSource, made.delta, undefined, undefined, engine))).toEqual(
      Buffer.from(gzTarget),
    )
    const sink = collectingSink()
    await applyArchiveDeltaToSink(gzSource, made.delta, sink, undefined, undefined, engine)
    expect(Buffer.from(sink.bytes()).equals(Buffer.from(gzTarget))).toBe(true)
    expect(calls.open).toBe(1)
  })

  it('leaves small streams to pako', () => {
    const small = text(2, ENGINE_MIN_INPUT - 1)
    const { engine, calls } = recordingEngine()
    const params: DeflateParams = candidateParams()[0]!
    expect(reproducesWith(small, pakoEngine.deflate(small, params), params, engine)).toBe(true)
    expect(calls.deflate).toBe(0)
  })

  it('rules out wrong settings on a prefix, before the engine deflates everything', () => {
    const { engine, calls } = recordingEngine()
    const [level9, level6] = candidateParams()
    const compressed = pakoEngine.deflate(target, level9!)
    expect(reproducesWith(target, compressed, level6!, engine)).toBe(false)
    expect(calls.inputs).toEqual([PREFIX_CHECK])
    expect(reproducesWith(target, compressed, level9!, engine)).toBe(true)
    expect(calls.inputs).toEqual([PREFIX_CHECK, PREFIX_CHECK, target.length])
  })

  it('accepts the right settings on a prefix, across levels, memLevels, hashes and stored blocks', () => {
    const raw = textWithStoredStretches(11)
    const { engine, calls } = recordingEngine()
    const settings = [1, 4, 6, 9].flatMap((level) =>
      [8, 5].flatMap((memLevel) =>
        [false, true].map((legacyHash) => ({ level, memLevel, windowBits: 15, strategy: 0, legacyHash })),
      ),
    )
    for (const params of settings) {
      calls.inputs.length = 0
      expect(reproducesWith(raw, pakoEngine.deflate(raw, params), params, engine)).toBe(true)
      expect(calls.inputs).toEqual([PREFIX_CHECK, raw.length])
    }
  })

  it('compares a prefix only up to blocks it settles, however close the prefix ends to one', () => {
    const raw = textWithStoredStretches(21)
    const [level9, level6] = candidateParams()
    const compressed = pakoEngine.deflate(raw, level9!)
    const boundaries = blockBoundaries(compressed, raw.length)
    expect(boundaries.length).toBeGreaterThan(10)
    for (const b of boundaries.filter((_, i) => i % 3 === 1)) {
      for (const past of [0, 1, 200, 300]) {
        const prefix = b.raw + PREFIX_SETTLED + past
        if (prefix > raw.length) continue
        expect(enginePrefixVerdict(raw, compressed, level9!, pakoEngine, prefix)).toBe('undecided')
        expect(enginePrefixVerdict(raw, compressed, level6!, pakoEngine, prefix)).toBe('mismatch')
      }
    }
  })

  it('settlingBoundary answers as the two blockBoundaries calls it replaces', () => {
    // Streams with blocks of ≈ 4–260 KB (memLevel 1–9), and limits before, on and past their ends.
    const streams = [1, 4, 6, 8, 9].map((memLevel) => {
      const raw = text(memLevel, 300_000 + memLevel * 50_000)
      const params: DeflateParams = { level: 6, memLevel, windowBits: 15, strategy: 0, legacyHash: false }
      const compressed = pakoEngine.deflate(raw, params)
      return { raw, compressed, ends: blockBoundaries(compressed, raw.length).map((b) => b.raw) }
    })
    const near = (ends: number[]) =>
      fc.oneof(
        fc.integer({ min: -70_000, max: 700_000 }),
        fc.tuple(fc.constantFrom(...ends, 0), fc.integer({ min: -2, max: 2 })).map(([e, d]) => e + d),
      )
    fc.assert(
      fc.property(
        fc
          .integer({ min: 0, max: streams.length - 1 })
          .chain((k) => fc.tuple(fc.constant(k), near(streams[k]!.ends), near(streams[k]!.ends))),
        ([k, until, reach]) => {
          const { raw, compressed } = streams[k]!
          const within = blockBoundaries(compressed, raw.length, until).at(-1)
          const settled = within ?? blockBoundaries(compressed, raw.length, reach, 1)[0]
          const got = settlingBoundary(compressed, raw.length, until, reach)
          expect(got).toEqual(settled ? { boundary: settled, within: within !== undefined } : undefined)
        },
      ),
      { numRuns: 300 },
    )
  })

  it('stretches the prefix to the first block boundary when no block ends within it', () => {
    // memLevel 9 doubles zlib's block: about 259 KB of this text, past what PREFIX_CHECK settles.
    const raw = text(1, 900_000)
    const right: DeflateParams = { level: 6, memLevel: 9, windowBits: 15, strategy: 0, legacyHash: false }
    const compressed = pakoEngine.deflate(raw, right)
    const first = blockBoundaries(compressed, raw.length)[0]!
    expect(first.raw).toBeGreaterThan(PREFIX_CHECK - PREFIX_SETTLED)
    const { engine, calls } = recordingEngine()
    expect(enginePrefixVerdict(raw, compressed, right, engine, PREFIX_CHECK)).toBe('undecided')
    expect(enginePrefixVerdict(raw, compressed, { ...right, level: 9 }, engine, PREFIX_CHECK)).toBe(
      'mismatch',
    )
    expect(enginePrefixVerdict(raw, compressed, { ...right, legacyHash: true }, engine, PREFIX_CHECK)).toBe(
      'mismatch',
    )
    // The engine, not pako's streamed compare, did the work: one deflate to just past the boundary each.
    expect(calls.inputs).toEqual(Array(3).fill(first.raw + PREFIX_SETTLED))
  })

  it('a broken engine costs the delta or the rebuild, never wrong bytes', async () => {
    // Creating: its proof fails, so the stream is not claimed reproducible by parameters; it is
    // rebuilt from its tokens instead, which needs no engine.
    const broken = recordingEngine(true).engine
    const refused = createArchiveDelta(gzSource, gzTarget, { ...whole, deflateEngine: broken })
    if (!('delta' in refused)) throw new Error('expected a token-segment delta')
    expect(refused.details.reproduced).toBe(0)
    expect(refused.details.puffed).toBe(1)
    expect(applyArchiveDelta(gzSource, refused.delta, undefined, undefined, broken)).toEqual(gzTarget)

    // Applying a good delta through it: the rebuild fails with the codec's typed error.
    const good = createArchiveDelta(gzSource, gzTarget, whole)
    if (!('delta' in good)) throw new Error('expected a delta')
    expect(() => applyArchiveDelta(gzSource, good.delta, undefined, undefined, broken)).toThrow(
      DeltaFormatError,
    )
    const failure = await applyArchiveDeltaToSink(
      gzSource,
      good.delta,
      collectingSink(),
      undefined,
      undefined,
      recordingEngine(true).engine,
    ).catch((e: unknown) => e)
    expect(failure).toBeInstanceOf(DeltaFormatError)
  })
})
