import { describe, expect, it } from 'vitest'
import { DeltaFormatError, isLimitError } from '../errors.ts'
import { collectingSink, readerFromBytes, sourceFromBytes } from '../io.ts'
import { bitwiseCrc32, CRC32 } from '../test/doc-reader.ts'
import type { ApproxLimits } from './index.ts'
import { applyApproxDelta, applyApproxDeltaStream } from './index.ts'

/**
 * docs/formats/approx-delta.md, the other way round from approx-doc.test.ts: DPAX deltas written by hand
 * from the document (header table, block table, LEB128/zigzag controls, sparse diff, guarded carry),
 * their streams compressed by the platform's CompressionStream rather than our encoder. Both decoders must
 * apply the good one to the documented bytes and refuse each documented fault with its documented code.
 */

const crc = (b: Uint8Array | number[]) => bitwiseCrc32(Uint8Array.from(b), CRC32)
const u32 = (v: number) => [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, v >>> 24]
const u64 = (v: number) => [...u32(v % 2 ** 32), ...u32(Math.floor(v / 2 ** 32))]
const varint = (v: number): number[] => (v < 0x80 ? [v] : [(v % 128) | 0x80, ...varint(Math.floor(v / 128))])
const svarint = (v: number) => varint(v >= 0 ? 2 * v : -2 * v - 1)

async function deflateRaw(raw: number[]): Promise<number[]> {
  if (raw.length === 0) return []
  const stream = new Blob([Uint8Array.from(raw)]).stream().pipeThrough(new CompressionStream('deflate-raw'))
  return [...new Uint8Array(await new Response(stream).arrayBuffer())]
}

type Sizes = [
  targetBytes: number,
  ctrlRaw: number,
  ctrlComp: number,
  diffRaw: number,
  diffComp: number,
  extraRaw: number,
  extraComp: number,
]

interface Block {
  ctrl: number[]
  diff: number[]
  extra: number[]
  /** Rewrites the seven u32 of the block header before they are written. */
  sizes?: (s: Sizes) => Sizes
  /** Replaces the compressed control stream (to make a stream that inflates wrongly). */
  ctrlComp?: number[]
}

interface Spec {
  magic?: number[]
  version?: number
  codec?: number
  reserved?: number
  sourceLength?: number
  targetLength: number
  targetCrc: number
  blockSize: number
  headerCrcXor?: number
  blocks: Block[]
  trailing?: number[]
}

/** Source: the carry cases need a 0x80 and a 0x41 next to each other. */
const SOURCE = Uint8Array.from([0x11, 0x80, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46])

async function dpax(s: Spec): Promise<Uint8Array> {
  const head = [
    ...(s.magic ?? [0x44, 0x50, 0x41, 0x58]),
    s.version ?? 1,
    s.codec ?? 1,
    s.reserved ?? 0,
    0,
    ...u64(s.sourceLength ?? SOURCE.length),
    ...u32(crc(SOURCE)),
    ...u64(s.targetLength),
    ...u32(s.targetCrc),
    ...u32(s.blockSize),
  ]
  const out = [...head, ...u32((crc(head) ^ (s.headerCrcXor ?? 0)) >>> 0)]
  for (const b of s.blocks) {
    const ctrlC = b.ctrlComp ?? (await deflateRaw(b.ctrl))
    const diffC = await deflateRaw(b.diff)
    const extraC = await deflateRaw(b.extra)
    const extraRaw = b.extra.length
    const sizes: Sizes = [
      s.blocks.length === 1 ? s.targetLength : s.blockSize,
      b.ctrl.length,
      ctrlC.length,
      b.diff.length,
      diffC.length,
      extraRaw,
      extraC.length,
    ]
    out.push(...(b.sizes ?? ((x) => x))(sizes).flatMap(u32), ...ctrlC, ...diffC, ...extraC)
  }
  out.push(...(s.trailing ?? []))
  return Uint8Array.from(out)
}

/**
 * startPos 1, one triple: copy 4 from source[1..5) = 80 41 42 43 with diff 80 FF 00 00, then 3 literals.
 * Guarded carry: 0x80 + 0x80 = 0x100 → 00, carry 1; 0x41 + 0xFF + 1 = 0x141 → 41, which equals the
 * source byte, so no carry leaves it; 0x42 stays 0x42 (plain addition would have made it 0x43).
 */
const TARGET = [0x00, 0x41, 0x42, 0x43, 0x78, 0x79, 0x7a]
const GOOD_BLOCK: Block = {
  ctrl: [...svarint(1), ...varint(4), ...varint(3), ...svarint(0)],
  diff: [...varint(0), 0x80, ...varint(0), 0xff],
  extra: [0x78, 0x79, 0x7a],
}
const GOOD: Spec = { targetLength: 7, targetCrc: crc(TARGET), blockSize: 7, blocks: [GOOD_BLOCK] }

async function applyBoth(delta: Uint8Array, limits?: ApproxLimits): Promise<number[]> {
  const whole = applyApproxDelta(SOURCE, delta, limits)
  const sink = collectingSink()
  await applyApproxDeltaStream(readerFromBytes(SOURCE), sourceFromBytes(delta, 5), sink, limits)
  expect(sink.bytes()).toEqual(whole)
  return [...whole]
}

async function refusedBoth(delta: Uint8Array, code: string, source = SOURCE, limits?: ApproxLimits) {
  const want = expect.objectContaining({ name: 'DeltaFormatError', code })
  let thrown: unknown
  try {
    applyApproxDelta(source, delta, limits)
  } catch (e) {
    thrown = e
  }
  expect(thrown).toBeInstanceOf(DeltaFormatError)
  expect(thrown).toEqual(want)
  await expect(
    applyApproxDeltaStream(readerFromBytes(source), sourceFromBytes(delta, 5), collectingSink(), limits),
  ).rejects.toEqual(want)
  return thrown
}

const withBlock = (b: Partial<Block>): Spec => ({ ...GOOD, blocks: [{ ...GOOD_BLOCK, ...b }] })
const setSize = (i: number, v: number) => (s: Sizes) => s.map((x, j) => (j === i ? v : x)) as Sizes

describe('docs/formats/approx-delta.md: hand-written DPAX deltas', () => {
  it('the documented header, block, controls, sparse diff and guarded carry give the documented target', async () => {
    expect(await applyBoth(await dpax(GOOD))).toEqual(TARGET)
    // Non-minimal varints are accepted: startPos 1 (zigzag 2) as 82 80 00, copyLen 4 as 84 00.
    const padded = withBlock({ ctrl: [0x82, 0x80, 0x00, 0x84, 0x00, 3, 0] })
    expect(await applyBoth(await dpax(padded))).toEqual(TARGET)
  })

  it('blocks of blockSize, the last one shorter, each decodable with its own triples', async () => {
    // blockSize 4: block 0 copies 4 bytes (diff as above), block 1 is the 3 literals.
    const b0: Block = {
      ctrl: [...svarint(1), ...varint(4), ...varint(0), ...svarint(-3)],
      diff: GOOD_BLOCK.diff,
      extra: [],
      sizes: setSize(0, 4),
    }
    const b1: Block = {
      ctrl: [...svarint(0), ...varint(0), ...varint(3), ...svarint(0)],
      diff: [],
      extra: GOOD_BLOCK.extra,
      sizes: setSize(0, 3),
    }
    expect(await applyBoth(await dpax({ ...GOOD, blockSize: 4, blocks: [b0, b1] }))).toEqual(TARGET)
  })

  it('an empty target is the header alone', async () => {
    expect(await applyBoth(await dpax({ targetLength: 0, targetCrc: 0, blockSize: 1, blocks: [] }))).toEqual(
      [],
    )
  })

  it('header checks in the documented order, with the documented codes', async () => {
    const good = await dpax(GOOD)
    await refusedBoth(good.subarray(0, 39), 'truncated')
    await refusedBoth(await dpax({ ...GOOD, magic: [0x44, 0x50, 0x41, 0x52] }), 'bad-magic')
    await refusedBoth(await dpax({ ...GOOD, version: 2 }), 'bad-version')
    await refusedBoth(await dpax({ ...GOOD, codec: 0 }), 'bad-codec')
    await refusedBoth(await dpax({ ...GOOD, reserved: 1 }), 'bad-header')
    await refusedBoth(await dpax({ ...GOOD, sourceLength: 2 ** 53 }), 'bad-header')
    await refusedBoth(await dpax({ ...GOOD, headerCrcXor: 1 }), 'bad-header')
    await refusedBoth(await dpax({ ...GOOD, blockSize: 0 }), 'bad-header')
    // Order: magic before version before codec (all three wrong: bad-magic).
    await refusedBoth(await dpax({ ...GOOD, magic: [0, 0, 0, 0], version: 9, codec: 9 }), 'bad-magic')
  })

  it('too-large is a limit error; more room applies the delta', async () => {
    const good = await dpax(GOOD)
    const e = await refusedBoth(good, 'too-large', SOURCE, { maxTargetSize: 6 })
    expect(isLimitError(e)).toBe(true)
    await refusedBoth(good, 'too-large', SOURCE, { maxBlockSize: 6 })
    expect(await applyBoth(good, { maxTargetSize: 7, maxBlockSize: 7 })).toEqual(TARGET)
  })

  it('the source length and CRC are checked (source-mismatch)', async () => {
    const other = Uint8Array.from(SOURCE)
    other[7] = 0x47
    await refusedBoth(await dpax(GOOD), 'source-mismatch', other)
    await refusedBoth(await dpax(GOOD), 'source-mismatch', SOURCE.subarray(0, 7))
  })

  it('block headers: bad-block for the listed faults, truncated when cut off', async () => {
    await refusedBoth(await dpax(withBlock({ sizes: setSize(0, 6) })), 'bad-block') // targetBytes
    await refusedBoth(await dpax(withBlock({ sizes: setSize(5, 8) })), 'bad-block') // extraRaw > targetBytes
    await refusedBoth(await dpax(withBlock({ sizes: setSize(3, 9) })), 'bad-block') // diffRaw > 2·copyBytes
    await refusedBoth(await dpax(withBlock({ sizes: setSize(1, 0) })), 'bad-block') // ctrlRaw 0
    // ctrlRaw over 7 + 21·maxPieces, maxPieces = min(7, 4096 + 0) = 7: 155.
    await refusedBoth(await dpax(withBlock({ sizes: setSize(1, 155) })), 'bad-block')
    await refusedBoth(await dpax(withBlock({ sizes: setSize(4, 0) })), 'bad-block') // raw ≠ 0, comp = 0
    await refusedBoth(await dpax(withBlock({ sizes: (s) => [...s.slice(0, 6), 200] as Sizes })), 'bad-block') // comp > raw + raw/16 + 64
    const good = await dpax(GOOD)
    await refusedBoth(good.subarray(0, 50), 'truncated')
    await refusedBoth(good.subarray(0, good.length - 1), 'truncated')
  })

  it('a stream inflating to other than its declared size is bad-stream', async () => {
    await refusedBoth(await dpax(withBlock({ sizes: setSize(1, GOOD_BLOCK.ctrl.length + 1) })), 'bad-stream')
    const longer = await deflateRaw([...GOOD_BLOCK.ctrl, 0])
    await refusedBoth(await dpax(withBlock({ ctrlComp: longer })), 'bad-stream')
  })

  it('controls: bad-control for the listed faults, bad-varint for an 8-byte varint', async () => {
    const triple = (start: number, copy: number, extra: number, seek = 0) => [
      ...svarint(start),
      ...varint(copy),
      ...varint(extra),
      ...svarint(seek),
    ]
    await refusedBoth(await dpax(withBlock({ ctrl: triple(5, 4, 3) })), 'bad-control') // pos + copyLen > 8
    await refusedBoth(await dpax(withBlock({ ctrl: triple(-1, 4, 3) })), 'bad-control') // pos < 0
    const zero = [...triple(1, 4, 3), ...varint(0), ...varint(0), ...svarint(0)]
    await refusedBoth(await dpax(withBlock({ ctrl: zero })), 'bad-control') // copyLen + extraLen = 0
    await refusedBoth(await dpax(withBlock({ ctrl: triple(1, 3, 3) })), 'bad-control') // copies ≠ copyBytes
    await refusedBoth(await dpax(withBlock({ ctrl: triple(1, 4, 3, 2 ** 47) })), 'bad-control') // |pos| > 2^47
    const eight = [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00]
    await refusedBoth(
      await dpax(withBlock({ ctrl: [...svarint(1), ...eight, ...varint(3), 0] })),
      'bad-varint',
    )
  })

  it('sparse diff: bad-diff for a zero value, a pair past copyBytes or an 8-byte gap (diffRaw 8 = 2·copyBytes); truncated when cut', async () => {
    await refusedBoth(await dpax(withBlock({ diff: [0, 0x80, 0, 0x00] })), 'bad-diff')
    await refusedBoth(await dpax(withBlock({ diff: [0, 0x80, 3, 0x01] })), 'bad-diff') // lands at 4
    await refusedBoth(
      await dpax(withBlock({ diff: [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00] })),
      'bad-diff',
    )
    await refusedBoth(await dpax(withBlock({ diff: [0, 0x80, 0] })), 'truncated')
  })

  it('trailing-bytes after the last block; target-mismatch for a wrong target CRC', async () => {
    await refusedBoth(await dpax({ ...GOOD, trailing: [0] }), 'trailing-bytes')
    await refusedBoth(await dpax({ ...GOOD, targetCrc: (crc(TARGET) ^ 1) >>> 0 }), 'target-mismatch')
  })
})
