import { describe, expect, it } from 'vitest'
import { DeltaFormatError } from '../errors.ts'
import type { RandomAccessReader } from '../io.ts'
import { collectingSink, concatBytes, readerFromBytes, sourceFromBytes } from '../io.ts'
import { adler32 } from './adler32.ts'
import { ADD, COPY, DEFAULT_TABLE, DEFAULT_TABLE_STRING, NOOP, RUN } from './code-table.ts'
import { E } from './errors.ts'
import { editedCopy, rng } from './fuzz.ts'
import { decodeVcdiff, decodeVcdiffStream, encodeVcdiff, readVcdiffHeader } from './index.ts'
import type { VcdiffLimits } from './limits.ts'
import { ByteWriter, cursor, readVarint } from './varint.ts'

const enc = new TextEncoder()
const MAGIC = [0xd6, 0xc3, 0xc4, 0x00]

interface WindowSpec {
  indicator?: number
  srcLen?: number
  srcPos?: number
  tgtLen: number
  data?: number[] | Uint8Array
  inst: number[]
  addr?: number[]
  checksum?: number
}

/** Builds a window byte by byte, so tests can express exactly the malformed input they need. */
function window(w: WindowSpec): number[] {
  const body = new ByteWriter()
  const data = Uint8Array.from(w.data ?? [])
  const addr = w.addr ?? []
  body.varint(w.tgtLen)
  body.byte(0)
  body.varint(data.length)
  body.varint(w.inst.length)
  body.varint(addr.length)
  if (w.checksum !== undefined) body.u32be(w.checksum)
  body.bytes(data)
  body.bytes(Uint8Array.from(w.inst))
  body.bytes(Uint8Array.from(addr))
  const out = new ByteWriter()
  const ind = (w.indicator ?? 0) | (w.checksum !== undefined ? 4 : 0)
  out.byte(ind)
  if (ind & 3) {
    out.varint(w.srcLen ?? 0)
    out.varint(w.srcPos ?? 0)
  }
  out.varint(body.length)
  out.bytes(body.view())
  return [...out.view()]
}

function file(hdr: number, ...parts: number[][]): Uint8Array {
  return Uint8Array.from([...MAGIC, hdr, ...parts.flat()])
}

function code(err: unknown): string {
  expect(err).toBeInstanceOf(DeltaFormatError)
  return (err as DeltaFormatError).code
}

function failCode(source: Uint8Array, delta: Uint8Array, limits?: VcdiffLimits): string {
  try {
    decodeVcdiff(source, delta, limits)
  } catch (e) {
    return code(e)
  }
  throw new Error('expected a DeltaFormatError')
}

async function streamFailCode(source: Uint8Array, delta: Uint8Array, limits?: VcdiffLimits): Promise<string> {
  try {
    await decodeVcdiffStream(readerFromBytes(source), sourceFromBytes(delta, 3), collectingSink(), limits)
  } catch (e) {
    return code(e)
  }
  throw new Error('expected a DeltaFormatError')
}

const EMPTY = new Uint8Array(0)
// Opcodes of the default table used by the hand-built windows below.
const ADD_0 = 1 // ADD with explicit size
const ADD_N = (n: number) => 1 + n // ADD sizes 1..17
const COPY_SELF_0 = 19 // COPY mode 0 with explicit size
const COPY_HERE_0 = 35 // COPY mode 1 (VCD_HERE) with explicit size

describe('default code table (RFC 3284 5.6)', () => {
  const t = DEFAULT_TABLE
  const row = (i: number) => [t.type1[i], t.size1[i], t.mode1[i], t.type2[i], t.size2[i], t.mode2[i]]
  it('matches the RFC rows at their boundaries', () => {
    expect(row(0)).toEqual([RUN, 0, 0, NOOP, 0, 0])
    expect(row(1)).toEqual([ADD, 0, 0, NOOP, 0, 0])
    expect(row(18)).toEqual([ADD, 17, 0, NOOP, 0, 0])
    expect(row(19)).toEqual([COPY, 0, 0, NOOP, 0, 0])
    expect(row(20)).toEqual([COPY, 4, 0, NOOP, 0, 0])
    expect(row(34)).toEqual([COPY, 18, 0, NOOP, 0, 0])
    expect(row(35)).toEqual([COPY, 0, 1, NOOP, 0, 0])
    expect(row(162)).toEqual([COPY, 18, 8, NOOP, 0, 0])
    expect(row(163)).toEqual([ADD, 1, 0, COPY, 4, 0])
    expect(row(174)).toEqual([ADD, 4, 0, COPY, 6, 0])
    expect(row(234)).toEqual([ADD, 4, 0, COPY, 6, 5])
    expect(row(235)).toEqual([ADD, 1, 0, COPY, 4, 6])
    expect(row(246)).toEqual([ADD, 4, 0, COPY, 4, 8])
    expect(row(247)).toEqual([COPY, 4, 0, ADD, 1, 0])
    expect(row(255)).toEqual([COPY, 4, 8, ADD, 1, 0])
  })
})

describe('integers and checksums', () => {
  it('round-trips varints up to 2^53 - 1', () => {
    for (const v of [0, 1, 127, 128, 16383, 16384, 2 ** 32, Number.MAX_SAFE_INTEGER]) {
      const w = new ByteWriter()
      w.varint(v)
      expect(readVarint(cursor(w.view()), 'x')).toBe(v)
    }
  })

  it('rejects overlong, oversized and truncated varints', () => {
    const err = (bytes: number[]) => {
      try {
        readVarint(cursor(Uint8Array.from(bytes)), 'x')
      } catch (e) {
        return code(e)
      }
      return 'none'
    }
    expect(err([0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01])).toBe(E.varint)
    expect(err([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f])).toBe(E.varint)
    expect(err([0x81])).toBe(E.truncated)
  })

  it('computes adler32 like zlib', () => {
    expect(adler32(enc.encode('Wikipedia'))).toBe(0x11e60398)
    expect(adler32(EMPTY)).toBe(1)
    // Against the textbook definition (modulo every byte) on input long enough to need reductions.
    const big = new Uint8Array(100_000).map((_, i) => (i * 7919) & 0xff)
    let a = 1
    let b = 0
    for (const x of big) {
      a = (a + x) % 65521
      b = (b + a) % 65521
    }
    expect(adler32(big)).toBe(((b << 16) | a) >>> 0)
  })
})

describe('decoding hand-built deltas', () => {
  it('decodes ADD, RUN, source COPY and an empty file', () => {
    const src = enc.encode('0123456789')
    const delta = file(
      0,
      window({
        indicator: 1,
        srcLen: 10,
        srcPos: 0,
        tgtLen: 12,
        data: [...enc.encode('ab'), 0x7a],
        inst: [ADD_N(2), COPY_SELF_0, 6, 0, 4],
        addr: [2],
      }),
    )
    expect(new TextDecoder().decode(decodeVcdiff(src, delta))).toBe('ab234567zzzz')
    expect(decodeVcdiff(src, file(0))).toEqual(EMPTY)
  })

  it('replicates patterns with overlapping target copies', () => {
    // Target-space address 0 with no source: copy 10 bytes starting at "ab" while it is written.
    const delta = file(
      0,
      window({ tgtLen: 12, data: enc.encode('ab'), inst: [ADD_N(2), COPY_HERE_0, 10], addr: [2] }),
    )
    expect(new TextDecoder().decode(decodeVcdiff(EMPTY, delta))).toBe('abababababab')
  })

  it('lets a COPY run from the source segment into the target window', () => {
    const delta = file(
      0,
      window({ indicator: 1, srcLen: 4, srcPos: 0, tgtLen: 8, inst: [COPY_SELF_0, 8], addr: [0] }),
    )
    expect(new TextDecoder().decode(decodeVcdiff(enc.encode('abcd'), delta))).toBe('abcdabcd')
  })

  it('decodes VCD_TARGET windows from earlier output, within maxTargetHistory', async () => {
    const delta = file(
      0,
      window({ tgtLen: 5, data: enc.encode('hello'), inst: [ADD_N(5)] }),
      window({ indicator: 2, srcLen: 4, srcPos: 1, tgtLen: 4, inst: [COPY_SELF_0, 4], addr: [0] }),
    )
    expect(new TextDecoder().decode(decodeVcdiff(EMPTY, delta))).toBe('helloello')
    const sink = collectingSink()
    await decodeVcdiffStream(readerFromBytes(EMPTY), sourceFromBytes(delta, 2), sink)
    expect(new TextDecoder().decode(sink.bytes())).toBe('helloello')
    expect(await streamFailCode(EMPTY, delta, { maxTargetHistory: 0 })).toBe(E.limit)
  })

  it('keeps VCD_TARGET history in a ring that wraps, and refuses what fell out of it', async () => {
    const w = (text: string) =>
      window({ tgtLen: text.length, data: enc.encode(text), inst: [ADD_N(text.length)] })
    const fromTarget = (pos: number, len: number) =>
      window({ indicator: 2, srcLen: len, srcPos: pos, tgtLen: len, inst: [COPY_SELF_0, len], addr: [0] })
    // Output: "hello" " world" then copies of earlier output that straddle windows and the ring's end.
    const delta = file(
      0,
      w('hello'),
      w(' world'),
      fromTarget(3, 6),
      w('!?'),
      fromTarget(12, 7),
      fromTarget(20, 5),
    )
    const expected = decodeVcdiff(EMPTY, delta)
    expect(new TextDecoder().decode(expected)).toBe('hello worldlo wor!?o wor!? wor!')
    for (const maxTargetHistory of [8, 9, 10, 64]) {
      const sink = collectingSink()
      await decodeVcdiffStream(readerFromBytes(EMPTY), sourceFromBytes(delta, 2), sink, { maxTargetHistory })
      expect(sink.bytes()).toEqual(expected)
    }
    // With 7 bytes kept, the first VCD_TARGET copy (from 3, after 11 bytes) starts too far back.
    expect(await streamFailCode(EMPTY, delta, { maxTargetHistory: 7 })).toBe(E.limit)
  })

  it('verifies the xdelta3 adler32 extension', () => {
    const good = file(
      0,
      window({ tgtLen: 2, data: [1, 2], inst: [ADD_N(2)], checksum: adler32(Uint8Array.from([1, 2])) }),
    )
    expect(decodeVcdiff(EMPTY, good)).toEqual(Uint8Array.from([1, 2]))
    const bad = file(0, window({ tgtLen: 2, data: [1, 2], inst: [ADD_N(2)], checksum: 12345 }))
    expect(failCode(EMPTY, bad)).toBe(E.checksum)
  })

  it('exposes and skips the application header', () => {
    const delta = file(4, [3, 0x61, 0x62, 0x63], window({ tgtLen: 1, data: [9], inst: [ADD_N(1)] }))
    expect(readVcdiffHeader(delta).appHeader).toEqual(enc.encode('abc'))
    expect(decodeVcdiff(EMPTY, delta)).toEqual(Uint8Array.from([9]))
  })
})

describe('custom code tables (VCD_CODETABLE)', () => {
  function withTable(table: Uint8Array, near: number, same: number, ...windows: number[][]): Uint8Array {
    const inner = encodeVcdiff(DEFAULT_TABLE_STRING, table, { checksum: false })
    const data = [near, same, ...inner]
    const w = new ByteWriter()
    w.varint(data.length)
    return file(2, [...w.view(), ...data], ...windows)
  }

  it('applies a table that redefines an opcode', () => {
    const table = DEFAULT_TABLE_STRING.slice()
    table[2] = RUN // opcode 2: ADD size 1 in the default table, RUN size 5 here
    table[512 + 2] = 5
    const delta = withTable(table, 4, 3, window({ tgtLen: 5, data: enc.encode('z'), inst: [2] }))
    expect(new TextDecoder().decode(decodeVcdiff(EMPTY, delta))).toBe('zzzzz')
  })

  it('decodes ordinary windows under an identical custom table', () => {
    const src = enc.encode('the quick brown fox jumps over the lazy dog '.repeat(20))
    const tgt = editedCopy(rng(9), src, 6)
    const plain = encodeVcdiff(src, tgt)
    const delta = withTable(DEFAULT_TABLE_STRING, 4, 3, [...plain.subarray(5)])
    expect(decodeVcdiff(src, delta)).toEqual(tgt)
  })

  it('rejects tables with modes outside the cache layout', () => {
    const table = DEFAULT_TABLE_STRING.slice()
    table[1024 + 20] = 9 // COPY mode 9 with s_near 4 + s_same 3 (modes 0..8)
    expect(failCode(EMPTY, withTable(table, 4, 3))).toBe(E.codeTable)
  })
})

describe('rejecting hostile input', () => {
  const src = enc.encode('source bytes')
  it('rejects bad magic, secondary compression and unknown bits', async () => {
    expect(failCode(src, Uint8Array.from([0xd6, 0xc3, 0xc4, 0x01, 0]))).toBe(E.magic)
    expect(failCode(src, Uint8Array.from([1, 2, 3]))).toBe(E.truncated)
    expect(failCode(src, file(1, [2]))).toBe(E.unsupported)
    expect(await streamFailCode(src, file(1, [2]))).toBe(E.unsupported)
    expect(failCode(src, file(0x10))).toBe(E.unsupported)
    expect(failCode(src, file(0, [0x08, 0]))).toBe(E.window)
    expect(failCode(src, file(0, [0x03, 0, 0, 0]))).toBe(E.window)
  })

  it('enforces maxWindowSize, maxTargetSize and header limits before allocating', async () => {
    const huge = file(0, window({ tgtLen: 2 ** 40, inst: [] }))
    expect(failCode(src, huge)).toBe(E.limit)
    expect(await streamFailCode(src, huge)).toBe(E.limit)
    const small = window({ tgtLen: 3, data: [1, 2, 3], inst: [ADD_N(3)] })
    expect(failCode(src, file(0, small), { maxWindowSize: 2 })).toBe(E.limit)
    expect(failCode(src, file(0, small, small), { maxTargetSize: 5 })).toBe(E.limit)
    // A window claiming a gigantic encoding length is refused without waiting for the bytes.
    expect(await streamFailCode(src, file(0, [0, 0xff, 0xff, 0xff, 0xff, 0x7f]))).toBe(E.limit)
    expect(failCode(src, file(4, [0xff, 0xff, 0x7f]))).toBe(E.limit)
  })

  it('fails a short delta declaring gigabytes of output before allocating them', () => {
    const hollow = window({ tgtLen: 64 << 20, inst: [] })
    const delta = file(0, ...Array.from({ length: 100 }, () => hollow))
    expect(failCode(src, delta, { maxTargetSize: 2 ** 40 })).toBe(E.window)
  })

  it('rejects bad addresses, overruns and leftover section bytes', () => {
    const cases: [WindowSpec, string][] = [
      [{ tgtLen: 4, inst: [COPY_SELF_0, 4], addr: [0] }, E.address], // nothing precedes "here"
      [{ tgtLen: 4, inst: [ADD_0, 5], data: [1, 2, 3, 4, 5] }, E.instruction],
      [{ tgtLen: 4, inst: [ADD_N(4)], data: [1, 2] }, E.truncated],
      [{ tgtLen: 4, inst: [ADD_N(2)], data: [1, 2] }, E.window],
      [{ tgtLen: 2, inst: [ADD_N(2)], data: [1, 2, 3] }, E.window],
      [{ tgtLen: 1, inst: [0, 1], data: [] }, E.truncated], // RUN with no data byte
      [{ tgtLen: 2, inst: [ADD_N(2)], data: [1, 2], addr: [0] }, E.window],
      [{ indicator: 1, srcLen: 100, srcPos: 0, tgtLen: 1, inst: [ADD_N(1)], data: [1] }, E.window],
    ]
    for (const [spec, want] of cases)
      expect([spec, failCode(src, file(0, window(spec)))]).toEqual([spec, want])
  })

  it('rejects truncation at every byte of a valid delta', async () => {
    const tgt = editedCopy(rng(11), src, 3)
    const delta = encodeVcdiff(src, tgt)
    for (let cut = 0; cut < delta.length; cut++) {
      // Cutting right after the 5-byte header leaves a valid delta with no windows.
      if (cut === 5) expect(decodeVcdiff(src, delta.subarray(0, cut))).toEqual(EMPTY)
      else expect(failCode(src, delta.subarray(0, cut))).toBe(E.truncated)
    }
    expect(await streamFailCode(src, delta.subarray(0, delta.length - 1))).toBe(E.truncated)
  })
})

describe('streaming decode', () => {
  it('decodes windows with more instructions than one batch', async () => {
    // Every 10th byte changed: ~60k instructions in a single window, mixing ADD and short COPYs.
    const r = rng(31)
    const source = Uint8Array.from({ length: 300_000 }, () => (r() * 256) | 0)
    const target = source.slice()
    for (let i = 0; i < target.length; i += 10) target[i] = target[i]! ^ 0x5a
    const delta = encodeVcdiff(source, target)
    expect(Buffer.compare(decodeVcdiff(source, delta), target)).toBe(0)
    const sink = collectingSink()
    await decodeVcdiffStream(readerFromBytes(source), sourceFromBytes(delta, 4096), sink)
    expect(Buffer.compare(sink.bytes(), target)).toBe(0)
  })

  /** A reader that counts what the decoder asks of it (no readInto, so reads arrive as read()). */
  function countingReader(source: Uint8Array) {
    const inner = readerFromBytes(source)
    const stats = { largestRead: 0, bytesRead: 0 }
    const reader: RandomAccessReader = {
      size: inner.size,
      read: (offset, length) => {
        stats.largestRead = Math.max(stats.largestRead, length)
        stats.bytesRead += length
        return inner.read(offset, length)
      },
    }
    return { reader, stats }
  }

  it('reads a segment that fits the source cache once, whatever the windows copy', async () => {
    const r = rng(21)
    const source = new Uint8Array(1 << 20)
    for (let i = 0; i < source.length; i++) source[i] = (r() * 256) | 0
    const target = editedCopy(rng(22), source, 30)
    const delta = encodeVcdiff(source, target, { windowSize: 64 * 1024 })
    const { reader, stats } = countingReader(source)
    const sink = collectingSink()
    await decodeVcdiffStream(reader, sourceFromBytes(delta, 1000), sink)
    expect(Buffer.compare(sink.bytes(), target)).toBe(0)
    // Sixteen windows, each with its own segment, but every page comes from the reader once.
    expect(stats.bytesRead).toBeLessThanOrEqual(source.length)
  })

  it('pages a segment larger than the source cache in and out, within the cache bound', async () => {
    const r = rng(23)
    const source = new Uint8Array(1 << 20)
    for (let i = 0; i < source.length; i++) source[i] = (r() * 256) | 0
    // Scattered 3 KiB pieces of the source (pages are evicted and read again), then a 300 KiB
    // unchanged run (copies longer than a page bypass the cache), with edits all over.
    const pieces: Uint8Array[] = []
    for (let k = 0; k < 200; k++) {
      const from = Math.floor(r() * (source.length - 3072))
      pieces.push(source.subarray(from, from + 3072))
    }
    pieces.push(source.subarray(100_000, 400_000))
    const joined = concatBytes(pieces)
    const target = editedCopy(rng(24), joined, 40)
    for (const windowSize of [64 * 1024, 512 * 1024]) {
      const delta = encodeVcdiff(source, target, { windowSize })
      for (const maxSourceCache of [0, 128 * 1024, 1 << 19]) {
        const { reader, stats } = countingReader(source)
        const sink = collectingSink()
        await decodeVcdiffStream(reader, sourceFromBytes(delta, 1000), sink, { maxSourceCache })
        expect(Buffer.compare(sink.bytes(), target)).toBe(0)
        // Reads are whole pages (at most the cache's worth at once) or one long copy's bytes.
        expect(stats.largestRead).toBeLessThanOrEqual(Math.max(2 * 64 * 1024, maxSourceCache, windowSize))
      }
    }
  })
})
