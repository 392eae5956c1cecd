import { describe, expect, it } from 'vitest'
import { DeltaFormatError } from '../errors.ts'
import { decodeContainer } from './container.ts'

/**
 * docs/formats/archive-delta.md, "Binary layout", written by hand: DPAR containers laid out field by field
 * from the table (LEB128 varints, little-endian u32, the five parameter bytes, tag 0 and tag 1 segments,
 * checkpoint deltas, recipe ranges), not by encodeContainer. decodeContainer must read the documented
 * values and refuse each rule of the table with the documented code.
 */

const limits = { maxTargetBytes: 1 << 20, maxExpandedBytes: 1 << 20 }
const varint = (v: number): number[] => (v < 0x80 ? [v] : [(v % 128) | 0x80, ...varint(Math.floor(v / 128))])
const u32 = (v: number) => [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, v >>> 24]
const ascii = (s: string) => [...s].map((c) => c.charCodeAt(0))

interface Spec {
  magic?: number[]
  version?: number
  kind?: number
  flags?: number
  differId?: number[]
  targetLength?: number[]
  expandedLength?: number[]
  params?: number[][]
  /** Raw bytes of the segment table after segmentCount. */
  segments?: number[]
  segmentCount?: number
  ranges?: [number, number][]
  innerLength?: number
  inner?: number[]
}

/** A literal of 10 bytes, then a deflate stream of 100 raw bytes in 20 compressed ones, parameters 0. */
const SEGMENTS = [0, ...varint(10), 1, ...varint(100), ...varint(20), ...varint(0)]

function dpar(s: Spec = {}): Uint8Array {
  const params = s.params ?? [[6, 8, 15, 0, 1]]
  const inner = s.inner ?? [7, 8, 9]
  const id = s.differId ?? ascii('vcdiff')
  const ranges = s.ranges ?? [[0, 5]]
  return Uint8Array.from([
    ...(s.magic ?? ascii('DPAR')),
    s.version ?? 1,
    s.kind ?? 1,
    s.flags ?? 0,
    id.length,
    ...id,
    ...varint(1000),
    ...u32(0xdeadbeef),
    ...(s.targetLength ?? varint(30)),
    ...u32(0x01020304),
    ...(s.expandedLength ?? varint(110)),
    ...varint(params.length),
    ...params.flat(),
    ...varint(s.segmentCount ?? 2),
    ...(s.segments ?? SEGMENTS),
    ...varint(ranges.length),
    ...ranges.flatMap(([o, l]) => [...varint(o), ...varint(l)]),
    ...varint(s.innerLength ?? inner.length),
    ...varint(inner.length),
    ...inner,
  ])
}

function code(bytes: Uint8Array, l = limits): string {
  try {
    decodeContainer(bytes, l)
  } catch (e) {
    expect(e).toBeInstanceOf(DeltaFormatError)
    return (e as DeltaFormatError).code
  }
  return 'accepted'
}

describe('docs/formats/archive-delta.md: a hand-written container', () => {
  it('decodes to the documented values', () => {
    const c = decodeContainer(dpar(), limits)
    expect(c).toMatchObject({
      sourceKind: 'gzip',
      differId: 'vcdiff',
      sourceLength: 1000,
      sourceCrc: 0xdeadbeef,
      targetLength: 30,
      targetCrc: 0x01020304,
      expandedLength: 110,
      sourcePuffed: false,
      innerDeflated: false,
      innerLength: 3,
      recipe: [{ offset: 0, length: 5 }],
    })
    expect([...c.inner]).toEqual([7, 8, 9])
    expect(c.segments).toMatchObject([
      { kind: 'literal', length: 10 },
      {
        kind: 'deflate',
        rawLength: 100,
        compressedLength: 20,
        params: { level: 6, memLevel: 8, windowBits: 15, strategy: 0, legacyHash: true },
      },
    ])
    expect(decodeContainer(dpar({ kind: 2, flags: 4 }), limits)).toMatchObject({
      sourceKind: 'zip',
      sourcePuffed: true,
    })
  })

  it('flag bit 1: every deflate segment carries checkpoint deltas, strictly inside the stream', () => {
    const withPoints = (points: number[]) =>
      dpar({ flags: 2, segments: [...SEGMENTS, ...varint(points.length / 2), ...points.flatMap(varint)] })
    const c = decodeContainer(withPoints([50, 40, 10, 8]), limits)
    expect(c.segments[1]).toMatchObject({
      checkpoints: [
        { raw: 50, bit: 40 },
        { raw: 60, bit: 48 },
      ],
    })
    expect(code(withPoints([]))).toBe('accepted')
    expect(code(withPoints([100, 40]))).toBe('archive-container') // raw = rawLength
    expect(code(withPoints([50, 160]))).toBe('archive-container') // bit = 8 × compressedLength
    expect(code(withPoints([50, 40, 0, 8]))).toBe('archive-container') // raw not increasing
    expect(code(withPoints([0, 40]))).toBe('archive-container') // raw = 0
    expect(code(dpar({ flags: 2, segments: [...SEGMENTS, ...varint(1025)] }))).toBe('archive-container')
  })

  it('refuses magic, version and every other table rule with the documented codes', () => {
    expect(code(dpar({ magic: ascii('DPAX') }))).toBe('archive-magic')
    expect(code(dpar({ version: 2 }))).toBe('archive-version')
    const container = [
      dpar({ kind: 3 }),
      dpar({ flags: 8 }),
      dpar({ differId: [] }),
      dpar({ params: [[10, 8, 15, 0, 0]] }), // level
      dpar({ params: [[6, 0, 15, 0, 0]] }), // memLevel
      dpar({ params: [[6, 8, 8, 0, 0]] }), // windowBits
      dpar({ params: [[6, 8, 16, 0, 0]] }),
      dpar({ params: [[6, 8, 15, 5, 0]] }), // strategy
      dpar({ params: [[6, 8, 15, 0, 2]] }), // hash
      dpar({ segments: [0, 0, 1, ...varint(110), ...varint(30), 0] }), // empty literal
      dpar({ segments: [0, ...varint(10), 1, ...varint(100), ...varint(1), 0], targetLength: varint(11) }), // compressedLength 1
      dpar({ segments: [0, ...varint(10), 1, ...varint(100), ...varint(20), 1] }), // paramsIndex = paramsCount
      dpar({ segments: [5, ...varint(10), 1, ...varint(100), ...varint(20), 0] }), // unknown tag
      dpar({ expandedLength: varint(111) }), // segments expand to 110
      dpar({ targetLength: varint(31) }), // segments re-encode to 30
      dpar({ ranges: [[0, 0]] }), // empty range
      dpar({ innerLength: 4 }), // not deflated: innerLength = storedLength
      Uint8Array.from([...dpar(), 0]), // bytes after the inner delta
      dpar().subarray(0, 30), // cut off
      dpar({ targetLength: [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00] }), // 9-byte varint
      dpar({ targetLength: [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f] }), // 2^56 − 1 > 2^53 − 1
    ]
    expect(container.map((b) => code(b))).toEqual(container.map(() => 'archive-container'))
    // 2^53 − 1 itself is a valid varint: it is then only over the target limit.
    expect(varint(2 ** 53 - 1).length).toBe(8)
    expect(code(dpar({ targetLength: varint(2 ** 53 - 1) }))).toBe('archive-limit')
  })

  it('limits: target, expanded, inner length and recipe ranges are archive-limit', () => {
    expect(code(dpar(), { ...limits, maxTargetBytes: 29 })).toBe('archive-limit')
    expect(code(dpar(), { ...limits, maxTargetBytes: 30, maxExpandedBytes: 109 })).toBe('archive-limit')
    expect(code(dpar({ innerLength: 2 * limits.maxExpandedBytes + 1025, flags: 1 }))).toBe('archive-limit')
    expect(code(dpar({ ranges: [[limits.maxExpandedBytes, 1]] }))).toBe('archive-limit')
    expect(code(dpar(), { ...limits, maxTargetBytes: 30, maxExpandedBytes: 110 })).toBe('accepted')
  })
})
