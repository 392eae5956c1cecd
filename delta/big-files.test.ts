/**
 * Files past the sizes the decoders' in-memory defaults allow (4 GiB VCDIFF, 1 GiB approx) and source
 * offsets past 2^32, without the disk or the minutes: the source is a virtual reader that makes its
 * bytes from their position, and the deltas are built by hand (long RUNs, whole-block copies), so
 * gigabytes of output cost a few fills and checksums.
 */
import { crc32, deflateRawSync } from 'node:zlib'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ByteWriter as ApproxWriter } from './approx/bytes.ts'
import { adoptCrc32, useSoftwareCrc32 } from './approx/crc32.ts'
import { encodeBlockHeader, encodeHeader } from './approx/format.ts'
import { applyDeltaStream, DeltaFormatError } from './index.ts'
import { type ByteSink, type RandomAccessReader, readerFromBytes, sourceFromBytes } from './io.ts'
import { COPY, RUN } from './vcdiff/code-table.ts'
import { WindowEmitter } from './vcdiff/emit.ts'
import { writeVcdiffHeader } from './vcdiff/encode.ts'
import { OpList } from './vcdiff/ops.ts'
import { ByteWriter as VcdiffWriter } from './vcdiff/varint.ts'

const MiB = 2 ** 20
const GiB = 2 ** 30

/** Byte `p` of the virtual source: its high 32 bits count, so offsets taken mod 2^32 read other bytes. */
function byteAt(p: number): number {
  const lo = p % 2 ** 32
  const hi = Math.floor(p / 2 ** 32)
  let x = Math.imul(lo ^ Math.imul(hi + 1, 0x9e3779b1), 0x85ebca6b)
  x ^= x >>> 13
  return Math.imul(x, 0xc2b2ae35) >>> 24
}

function virtualBytes(offset: number, length: number): Uint8Array {
  const out = new Uint8Array(length)
  for (let i = 0; i < length; i++) out[i] = byteAt(offset + i)
  return out
}

/** A `size`-byte source that holds nothing: every read makes its bytes. */
function virtualSource(size: number): RandomAccessReader {
  const fill = (offset: number, into: Uint8Array): number => {
    const n = Math.max(0, Math.min(into.length, size - offset))
    for (let i = 0; i < n; i++) into[i] = byteAt(offset + i)
    return n
  }
  return {
    size,
    read: async (offset, length) => {
      const out = new Uint8Array(Math.max(0, Math.min(length, size - offset)))
      fill(offset, out)
      return out
    },
    readInto: async (offset, into) => fill(offset, into),
  }
}

/** Counts what it is given and keeps only the chunks that start at the offsets asked for. */
function countingSink(keepFrom: number): ByteSink & { total: number; kept: Uint8Array[] } {
  const sink = {
    total: 0,
    kept: [] as Uint8Array[],
    write: async (chunk: Uint8Array) => {
      if (sink.total >= keepFrom) sink.kept.push(chunk.slice())
      sink.total += chunk.length
    },
  }
  return sink
}

/**
 * A VCDIFF delta of `runs` windows, each a 64 MiB RUN of one byte, then one window copying
 * `copyLength` bytes from source offset `copyFrom` (checksummed, so a wrong byte fails the window).
 */
function vcdiffPastFourGiB(runs: number, copyFrom: number, copyLength: number): Uint8Array {
  const out = new VcdiffWriter(1 << 16)
  writeVcdiffHeader(out, {})
  const ops = new OpList()
  const plain = new WindowEmitter(false)
  for (let w = 0; w < runs; w++) {
    ops.reset()
    ops.push(RUN, 64 * MiB, 0x5a, 0)
    plain.emit(out, new Uint8Array(0), 0, 64 * MiB, ops)
  }
  ops.reset()
  ops.push(COPY, copyLength, copyFrom, 0)
  new WindowEmitter(true).emit(out, virtualBytes(copyFrom, copyLength), 0, copyLength, ops)
  return out.view().slice()
}

describe('streaming apply of big files', () => {
  // Gigabytes of CRC-32 at the hardware's speed, as the CLI and the agent sum them (ADR 0020).
  beforeAll(() => {
    expect(adoptCrc32((crc, chunk) => crc32(chunk, crc))).toBe(true)
  })
  afterAll(() => useSoftwareCrc32())

  it('rebuilds a VCDIFF target past 4 GiB, copying from a source offset past 2^32', async () => {
    const copyFrom = 4.5 * GiB + 12_345
    const delta = vcdiffPastFourGiB(64, copyFrom, MiB)
    const sink = countingSink(4 * GiB)
    expect(await applyDeltaStream(virtualSource(5 * GiB), sourceFromBytes(delta), sink)).toBe('vcdiff')
    expect(sink.total).toBe(4 * GiB + MiB)
    expect(sink.kept).toHaveLength(1)
    expect(Buffer.compare(sink.kept[0]!, virtualBytes(copyFrom, MiB))).toBe(0)
    // A ceiling the caller names still holds (here from the second window on).
    await expect(
      applyDeltaStream(virtualSource(5 * GiB), sourceFromBytes(delta), countingSink(0), {
        vcdiff: { maxTargetSize: 100 * MiB },
      }),
    ).rejects.toThrow(/maxTargetSize/)
  }, 60_000)

  it('rebuilds an approx target past 1 GiB', async () => {
    // 65 blocks of 16 MiB, each a copy of the whole 16 MiB source: 1040 MiB of target.
    const block = 16 * MiB
    const blocks = 65
    const source = virtualBytes(0, block)
    let targetCrc = 0
    for (let i = 0; i < blocks; i++) targetCrc = crc32(source, targetCrc)
    const w = new ApproxWriter()
    w.bytes(
      encodeHeader({
        sourceLength: block,
        sourceCrc: crc32(source),
        targetLength: blocks * block,
        targetCrc,
        blockSize: block,
      }),
    )
    const ctrl = new ApproxWriter()
    ctrl.svarint(0) // the first piece copies from source position 0
    ctrl.varint(block)
    ctrl.varint(0)
    ctrl.svarint(-block)
    const ctrlRaw = ctrl.finish()
    const ctrlComp = deflateRawSync(ctrlRaw)
    for (let i = 0; i < blocks; i++) {
      encodeBlockHeader(w, {
        targetBytes: block,
        ctrlRaw: ctrlRaw.length,
        ctrlComp: ctrlComp.length,
        diffRaw: 0,
        diffComp: 0,
        extraRaw: 0,
        extraComp: 0,
      })
      w.bytes(ctrlComp)
    }
    const delta = w.finish()
    const sink = countingSink(Number.POSITIVE_INFINITY)
    expect(await applyDeltaStream(readerFromBytes(source), sourceFromBytes(delta), sink)).toBe('approx')
    expect(sink.total).toBe(blocks * block)
    await expect(
      applyDeltaStream(readerFromBytes(source), sourceFromBytes(delta), countingSink(0), {
        approx: { maxTargetSize: GiB },
      }),
    ).rejects.toThrow(DeltaFormatError)
  }, 60_000)
})
