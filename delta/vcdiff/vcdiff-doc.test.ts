import { describe, expect, it } from 'vitest'
import { DeltaFormatError, isLimitError } from '../errors.ts'
import { collectingSink, readerFromBytes, sourceFromBytes } from '../io.ts'
import type { VcdiffLimits } from './index.ts'
import { decodeVcdiff, decodeVcdiffStream, readVcdiffHeader } from './index.ts'

/**
 * docs/formats/vcdiff.md checked byte by byte: every delta here is written by hand from the document and
 * RFC 3284 (opcode numbers of the default code table, base-128 big-endian integers, the adler32 after the
 * address-section length), with no helper from delta/vcdiff/. Each refusal the document lists is provoked
 * once and must come back as DeltaFormatError with the documented `vcdiff/...` code, from both decoders.
 */

const MAGIC = [0xd6, 0xc3, 0xc4, 0x00]
const SOURCE = new TextEncoder().encode('ABCDEFGH')
const ascii = (s: string) => [...s].map((c) => c.charCodeAt(0))

/** RFC 3284 §2: base 128, most significant digit first, bit 7 set on every byte but the last. */
function varint(n: number): number[] {
  const digits = [n % 128]
  for (let v = Math.floor(n / 128); v > 0; v = Math.floor(v / 128)) digits.unshift((v % 128) | 0x80)
  return digits
}

/** zlib's adler32, from its definition (mod 65521 sums), written out here rather than imported. */
function adler32(bytes: readonly number[]): number {
  let a = 1
  let b = 0
  for (const x of bytes) {
    a = (a + x) % 65521
    b = (b + a) % 65521
  }
  return (b * 65536 + a) >>> 0
}

interface Win {
  indicator: number
  segment?: [length: number, position: number]
  targetLength: number
  data: number[]
  inst: number[]
  addr: number[]
  /** Big-endian adler32 after the address-section length (the document's VCD_ADLER32 layout). */
  checksum?: number
  deltaIndicator?: number
  /** Added to the delta encoding length as written, to break the "lengths add up" rule. */
  lengthSkew?: number
}

function win(w: Win): number[] {
  const body = [
    ...varint(w.targetLength),
    w.deltaIndicator ?? 0,
    ...varint(w.data.length),
    ...varint(w.inst.length),
    ...varint(w.addr.length),
    ...(w.checksum === undefined
      ? []
      : [w.checksum >>> 24, (w.checksum >>> 16) & 0xff, (w.checksum >>> 8) & 0xff, w.checksum & 0xff]),
    ...w.data,
    ...w.inst,
    ...w.addr,
  ]
  const segment = w.segment ? [...varint(w.segment[0]), ...varint(w.segment[1])] : []
  return [w.indicator, ...segment, ...varint(body.length + (w.lengthSkew ?? 0)), ...body]
}

// Default code table (RFC 3284 §5.6): 0 = RUN size 0, 1 + n = ADD size n (n ≤ 17),
// 19 + 16·mode + (size − 3) = COPY of that size (4..18) in that mode, 19 + 16·mode = COPY size 0.
const RUN0 = 0
const add = (n: number) => 1 + n
const copy = (mode: number, size: number) => 19 + 16 * mode + (size === 0 ? 0 : size - 3)

/** ADD "xyz", COPY 4 of the segment "CDEF" (SELF 0), RUN 5 × "r", COPY 6 overlapping (HERE − 1). */
const EXPECTED = ascii('xyzCDEFrrrrrrrrrrr')
const GOOD: Win = {
  indicator: 0x01 | 0x04, // VCD_SOURCE | VCD_ADLER32
  segment: [4, 2],
  targetLength: 18,
  data: [...ascii('xyz'), ...ascii('r')],
  inst: [add(3), copy(0, 4), RUN0, ...varint(5), copy(1, 6)],
  addr: [...varint(0), ...varint(1)], // SELF 0 (segment start); HERE: 4 + 12 − 1 = the last 'r'
  checksum: adler32(EXPECTED),
}
const file = (indicator: number, ...windows: Win[]) =>
  Uint8Array.from([...MAGIC, indicator, ...windows.flatMap(win)])

async function both(delta: Uint8Array, limits?: VcdiffLimits): Promise<Uint8Array> {
  const whole = decodeVcdiff(SOURCE, delta, limits)
  const sink = collectingSink()
  await decodeVcdiffStream(readerFromBytes(SOURCE), sourceFromBytes(delta, 3), sink, limits)
  expect(sink.bytes()).toEqual(whole)
  return whole
}

async function refusedBoth(delta: Uint8Array, code: string, limits?: VcdiffLimits): Promise<void> {
  const want = expect.objectContaining({ name: 'DeltaFormatError', code })
  let thrown: unknown
  try {
    decodeVcdiff(SOURCE, delta, limits)
  } catch (e) {
    thrown = e
  }
  expect(thrown).toBeInstanceOf(DeltaFormatError)
  expect(thrown).toEqual(want)
  await expect(
    decodeVcdiffStream(readerFromBytes(SOURCE), sourceFromBytes(delta, 3), collectingSink(), limits),
  ).rejects.toEqual(want)
}

describe('docs/formats/vcdiff.md: hand-written deltas', () => {
  it('ADD, source COPY, RUN and an overlapping HERE copy, with the adler32 where the document puts it', async () => {
    expect([...(await both(file(0, GOOD)))]).toEqual(EXPECTED)
    // The same window without the checksum bit and bytes decodes to the same target.
    expect([...(await both(file(0, { ...GOOD, indicator: 0x01, checksum: undefined })))]).toEqual(EXPECTED)
  })

  it('a delta with no windows is an empty target; an empty window too; size-0 instructions are allowed', async () => {
    expect((await both(Uint8Array.from([...MAGIC, 0]))).length).toBe(0)
    const empty: Win = { indicator: 0, targetLength: 0, data: [], inst: [add(0), ...varint(0)], addr: [] }
    expect((await both(file(0, empty))).length).toBe(0)
  })

  it('VCD_APPHEADER (0x04): varint length and bytes, skipped by the decoder, exposed by readVcdiffHeader', async () => {
    const app = ascii('tgt//src/')
    const delta = Uint8Array.from([...MAGIC, 0x04, ...varint(app.length), ...app, ...win(GOOD)])
    expect([...(await both(delta))]).toEqual(EXPECTED)
    const info = readVcdiffHeader(delta)
    expect([...(info.appHeader ?? [])]).toEqual(app)
    expect(info.headerLength).toBe(5 + 1 + app.length)
  })

  it('a COPY may run from the source segment on into the target window', async () => {
    // Segment "GH" (length 2 at 6), ADD "ab", COPY 4 from SELF 0: G H a b.
    const w: Win = {
      indicator: 0x01,
      segment: [2, 6],
      targetLength: 6,
      data: ascii('ab'),
      inst: [add(2), copy(0, 4)],
      addr: [0],
    }
    expect([...(await both(file(0, w)))]).toEqual(ascii('abGHab'))
  })

  it('VCD_TARGET takes its segment from earlier output', async () => {
    const first: Win = { indicator: 0, targetLength: 4, data: ascii('wxyz'), inst: [add(4)], addr: [] }
    const second: Win = {
      indicator: 0x02,
      segment: [2, 1],
      targetLength: 4,
      data: [],
      inst: [copy(0, 4)],
      addr: [0],
    }
    // Copies "xy" then, overlapping, its own output: x y x y.
    expect([...(await both(file(0, first, second)))]).toEqual(ascii('wxyzxyxy'))
  })

  it('refuses a wrong magic or a version other than 0 as vcdiff/bad-magic', async () => {
    await refusedBoth(Uint8Array.from([0xd6, 0xc3, 0xc5, 0x00, 0]), 'vcdiff/bad-magic')
    await refusedBoth(Uint8Array.from([0xd6, 0xc3, 0xc4, 0x01, 0]), 'vcdiff/bad-magic')
  })

  it('refuses VCD_DECOMPRESS, other header bits and a non-zero Delta_Indicator as vcdiff/unsupported', async () => {
    await refusedBoth(file(0x01, GOOD), 'vcdiff/unsupported')
    await refusedBoth(file(0x08, GOOD), 'vcdiff/unsupported')
    await refusedBoth(file(0, { ...GOOD, deltaIndicator: 1 }), 'vcdiff/unsupported')
  })

  it('refuses the window faults the document lists as vcdiff/bad-window', async () => {
    // Both bits, on a window that would decode under either one of them alone.
    const first: Win = { indicator: 0, targetLength: 4, data: ascii('wxyz'), inst: [add(4)], addr: [] }
    const either: Win = {
      indicator: 0x03,
      segment: [2, 1],
      targetLength: 4,
      data: [],
      inst: [copy(0, 4)],
      addr: [0],
    }
    expect((await both(file(0, first, { ...either, indicator: 0x01 }))).length).toBe(8)
    expect((await both(file(0, first, { ...either, indicator: 0x02 }))).length).toBe(8)
    await refusedBoth(file(0, first, either), 'vcdiff/bad-window')
    await refusedBoth(file(0, { ...GOOD, indicator: 0x01 | 0x04 | 0x08 }), 'vcdiff/bad-window') // bit above 0x04
    await refusedBoth(file(0, { ...GOOD, segment: [4, 5] }), 'vcdiff/bad-window') // beyond the 8-byte source
    const early: Win = { indicator: 0x02, segment: [1, 0], targetLength: 0, data: [], inst: [], addr: [] }
    await refusedBoth(file(0, early), 'vcdiff/bad-window') // VCD_TARGET beyond the output so far
    // Lengths that do not add up to the delta encoding length (one byte more declared, and present).
    await refusedBoth(
      Uint8Array.from([...MAGIC, 0, ...win({ ...GOOD, lengthSkew: 1 }), 0]),
      'vcdiff/bad-window',
    )
    await refusedBoth(file(0, { ...GOOD, data: [...GOOD.data, 0x21] }), 'vcdiff/bad-window') // data left over
    await refusedBoth(file(0, { ...GOOD, addr: [...GOOD.addr, 0] }), 'vcdiff/bad-window') // addresses left over
    await refusedBoth(file(0, { ...GOOD, targetLength: 19 }), 'vcdiff/bad-window') // window not filled
  })

  it('refuses an instruction past the target window as vcdiff/bad-instruction', async () => {
    await refusedBoth(file(0, { ...GOOD, targetLength: 17 }), 'vcdiff/bad-instruction')
  })

  it('refuses an ADD or RUN past the data section, and a cut file, as vcdiff/truncated', async () => {
    const w: Win = { indicator: 0, targetLength: 4, data: ascii('abc'), inst: [add(4)], addr: [] }
    await refusedBoth(file(0, w), 'vcdiff/truncated')
    const r: Win = { indicator: 0, targetLength: 4, data: [], inst: [RUN0, 4], addr: [] }
    await refusedBoth(file(0, r), 'vcdiff/truncated')
    const whole = file(0, GOOD)
    await refusedBoth(whole.subarray(0, whole.length - 1), 'vcdiff/truncated')
    await refusedBoth(whole.subarray(0, 3), 'vcdiff/truncated')
    // VCD_ADLER32 set, but the window (delta encoding length 5) ends before the 4 checksum bytes.
    await refusedBoth(Uint8Array.from([...MAGIC, 0, 0x05, 4, 2, 5, 0, 0, 0, 0, 0]), 'vcdiff/truncated')
  })

  it('refuses a COPY address outside [0, here) as vcdiff/bad-address', async () => {
    // here = 4 (segment) + 3 (the ADD) = 7 when the COPY runs; SELF 7 is one past.
    await refusedBoth(file(0, { ...GOOD, addr: [...varint(7), ...varint(1)] }), 'vcdiff/bad-address')
    // The second COPY runs at here = 4 + 12 = 16: HERE 17 would be 16 − 17 = −1.
    await refusedBoth(file(0, { ...GOOD, addr: [...varint(0), ...varint(17)] }), 'vcdiff/bad-address')
  })

  it('refuses a wrong adler32 as vcdiff/bad-checksum', async () => {
    await refusedBoth(file(0, { ...GOOD, checksum: (adler32(EXPECTED) ^ 1) >>> 0 }), 'vcdiff/bad-checksum')
  })

  it('integers are at most 8 bytes and at most 2^53 − 1, else vcdiff/bad-varint', async () => {
    // The largest 8-byte integer, 2^56 − 1, as a delta encoding length.
    const tooBig = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]
    await refusedBoth(Uint8Array.from([...MAGIC, 0, 0, ...tooBig]), 'vcdiff/bad-varint')
    // 9 bytes for the value 1.
    const long = [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]
    await refusedBoth(Uint8Array.from([...MAGIC, 0, 0, ...long]), 'vcdiff/bad-varint')
    // 2^53 − 1 in 8 bytes is a valid integer: here it only breaks the (default) window limit.
    const max = varint(2 ** 53 - 1)
    expect(max.length).toBe(8)
    await refusedBoth(Uint8Array.from([...MAGIC, 0, 0, ...max]), 'vcdiff/limit-exceeded')
  })

  it('a limit reached is vcdiff/limit-exceeded, a limit error, and more room applies the delta', async () => {
    await refusedBoth(file(0, GOOD), 'vcdiff/limit-exceeded', { maxWindowSize: 17 })
    await refusedBoth(file(0, GOOD), 'vcdiff/limit-exceeded', { maxTargetSize: 17 })
    const app = Uint8Array.from([...MAGIC, 0x04, ...varint(5), ...ascii('12345'), ...win(GOOD)])
    await refusedBoth(app, 'vcdiff/limit-exceeded', { maxHeaderDataSize: 4 })
    let limitError: unknown
    try {
      decodeVcdiff(SOURCE, file(0, GOOD), { maxWindowSize: 17 })
    } catch (e) {
      limitError = e
    }
    expect(isLimitError(limitError)).toBe(true)
    expect([...(await both(file(0, GOOD), { maxWindowSize: 18, maxTargetSize: 18 }))]).toEqual(EXPECTED)
  })

  it('refuses a custom code table under 2 bytes, or with a mode past the caches, as vcdiff/bad-code-table', async () => {
    await refusedBoth(Uint8Array.from([...MAGIC, 0x02, ...varint(1), 4]), 'vcdiff/bad-code-table')
    // s_near 0, s_same 0, then an inner delta with no windows: it does not decode to 1536 bytes.
    await refusedBoth(
      Uint8Array.from([...MAGIC, 0x02, ...varint(7), 0, 0, ...MAGIC, 0]),
      'vcdiff/bad-code-table',
    )
  })
})
