/**
 * createDeltaStream: deltas between files larger than memory. Neither file is ever held whole: the
 * target is read one window (VCDIFF) or block (approx) at a time, and each is matched against a
 * window of the source around the same relative position, read through the RandomAccessReader. Memory
 * is about `sourceWindow` plus its index (VCDIFF: at most 24 MiB of hash tables; approx: a suffix
 * array, 4 bytes per window byte) plus one target window, whatever the file sizes.
 *
 * The price is reach: a match must lie inside the source window, so content that moved further than
 * a quarter of a window (guaranteed; up to three quarters one way, see SourceWindows) is sent as new
 * bytes. xdelta3 makes the same trade with its source window (-B, 64 MiB
 * by default). The output is an ordinary VCDIFF or DPAX delta: applyDelta/applyDeltaStream read it
 * like any other, and VCDIFF stays decodable by `xdelta3 -d`.
 *
 * Archive deltas need both archives expanded in memory, so this form offers the two byte methods;
 * createDelta remains the entry point for anything that fits in memory.
 */

import { buildApproxIndex, chooseApproxIndex } from './approx/approx-index.ts'
import { ByteWriter as ApproxWriter } from './approx/bytes.ts'
import { crc32Update } from './approx/crc32.ts'
import { writeWindowedBlock } from './approx/encode.ts'
import { encodeHeader } from './approx/format.ts'
import { looksExecutable } from './effort.ts'
import { DeltaFormatError, isAllocationFailure, OUT_OF_MEMORY } from './errors.ts'
import { type ByteSink, type RandomAccessReader, readFully } from './io.ts'
import { COPY } from './vcdiff/code-table.ts'
import { WindowEmitter } from './vcdiff/emit.ts'
import { writeVcdiffHeader } from './vcdiff/encode.ts'
import { SourceIndex, WindowMatcher } from './vcdiff/matcher.ts'
import { OpList } from './vcdiff/ops.ts'
import { ByteWriter as VcdiffWriter } from './vcdiff/varint.ts'

export type StreamDeltaMethod = 'vcdiff' | 'approx'

export interface CreateDeltaStreamOptions {
  /**
   * Default: approx for executables (ELF, Mach-O, PE: shifted addresses defeat exact copies), VCDIFF
   * for everything else. Both byte methods are never run over the whole file: that would read both
   * files twice and hold a second delta.
   */
  method?: StreamDeltaMethod
  /** Source bytes matched against per target window. Default 32 MiB. */
  sourceWindow?: number
  /** Target bytes per VCDIFF window / DPAX block. Default 8 MiB (VCDIFF), 4 MiB (approx). */
  targetWindow?: number
}

const DEFAULT_SOURCE_WINDOW = 32 << 20
/** Positions in a window's index are 32-bit signed (suffix array, hash chains). */
export const MAX_SOURCE_WINDOW = 2 ** 31 - 1
/** Within xdelta3's 16 MiB decoder maximum, like encodeVcdiff's default. */
const DEFAULT_VCDIFF_WINDOW = 8 << 20
/** The DPAX decoder buffers one block; 4 MiB is what createApproxDelta uses above 16 MiB. */
const DEFAULT_APPROX_BLOCK = 4 << 20
const MAX_TARGET_WINDOW = 16 << 20

function positiveInt(value: number | undefined, fallback: number, max: number, name: string): number {
  if (value === undefined) return fallback
  if (!Number.isInteger(value) || value < 1 || value > max)
    throw new RangeError(`${name} must be an integer in [1, ${max}], got ${value}`)
  return value
}

/**
 * The stretch of the source matched against target bytes [start, end): around the same relative
 * position (a release usually keeps its layout, scaled by the size change), clamped to the file.
 *
 * A window is kept for the next target windows while it still reaches a quarter of its length behind
 * and ahead of them; a new one starts a quarter behind. Centring a fresh window on every target window
 * read and indexed the whole source window again for each one: 8 times over with approx's 4 MiB blocks
 * in 32 MiB windows, which on a 5 GiB pair ran at 0.6 MB/s (hours); now each window serves half its
 * length of target. The price is reach: at least a quarter window either way (8 MiB by default)
 * instead of half the difference between the two windows (12–14 MiB).
 */
export class SourceWindows {
  private current: { offset: number; length: number } | null = null
  private readonly scale: number
  private readonly length: number
  private readonly margin: number
  private readonly sourceSize: number

  constructor(targetSize: number, sourceSize: number, window: number) {
    this.scale = targetSize === 0 ? 1 : sourceSize / targetSize
    this.length = Math.min(window, sourceSize)
    this.margin = Math.floor(this.length / 4)
    this.sourceSize = sourceSize
  }

  for(start: number, end: number): { offset: number; length: number } {
    const lo = start * this.scale
    const hi = end * this.scale
    const c = this.current
    if (
      c !== null &&
      (c.offset === 0 || lo - c.offset >= this.margin) &&
      (c.offset + c.length === this.sourceSize || c.offset + c.length - hi >= this.margin)
    )
      return c
    const offset = Math.max(0, Math.min(this.sourceSize - this.length, Math.round(lo - this.margin)))
    this.current = { offset, length: this.length }
    return this.current
  }
}

/**
 * The last source window read and indexed: when the source fits in one window (or consecutive target
 * windows map to the same stretch) the index is built once, not once per target window.
 */
class WindowCache<Index> {
  private key = ''
  private value: { bytes: Uint8Array; index: Index } | null = null
  private readonly reader: RandomAccessReader
  private readonly build: (bytes: Uint8Array) => Index

  constructor(reader: RandomAccessReader, build: (bytes: Uint8Array) => Index) {
    this.reader = reader
    this.build = build
  }

  async get(offset: number, length: number): Promise<{ bytes: Uint8Array; index: Index }> {
    const key = `${offset}:${length}`
    if (this.value === null || key !== this.key) {
      this.value = null // let the old window go before reading the next
      this.value = await this.readAndIndex(offset, length)
      this.key = key
    }
    return this.value
  }

  /**
   * The window and its index are the allocations sourceWindow sizes (the index up to 4 bytes per
   * window byte): one the machine cannot hold is the caller's size to lower, said as such. Only an
   * allocation failure; every other RangeError (a reader's bug, an index over a typed-array maximum) is a
   * bug, and "choose a smaller sourceWindow" would send the user after the wrong cause.
   */
  private async readAndIndex(offset: number, length: number): Promise<{ bytes: Uint8Array; index: Index }> {
    try {
      const bytes = await readStretch(this.reader, offset, length)
      return { bytes, index: this.build(bytes) }
    } catch (error) {
      if (!isAllocationFailure(error)) throw error
      throw new DeltaFormatError(
        OUT_OF_MEMORY,
        `cannot allocate a source window of ${length} bytes and its index (${error.message}): choose a smaller sourceWindow`,
      )
    }
  }
}

async function readStretch(reader: RandomAccessReader, offset: number, length: number): Promise<Uint8Array> {
  const bytes = new Uint8Array(length)
  const got = await readFully(reader, offset, bytes)
  if (got !== length) throw new Error(`reader returned ${got} of ${length} bytes at ${offset}`)
  return bytes
}

/** The first `length` bytes of a file, or all of a shorter one. */
function readHead(reader: RandomAccessReader, length: number): Promise<Uint8Array> {
  return readStretch(reader, 0, Math.min(length, reader.size))
}

/** Streams a whole reader through crc32 in 1 MiB pieces (the DPAX header needs both CRCs first). */
async function crcOf(reader: RandomAccessReader): Promise<number> {
  const piece = new Uint8Array(Math.min(1 << 20, Math.max(1, reader.size)))
  let crc = 0
  for (let at = 0; at < reader.size; at += piece.length) {
    const n = Math.min(piece.length, reader.size - at)
    const got = await readFully(reader, at, piece.subarray(0, n))
    if (got !== n) throw new Error(`reader returned ${got} of ${n} bytes at ${at}`)
    crc = crc32Update(crc, piece.subarray(0, n))
  }
  return crc
}

async function streamVcdiff(
  source: RandomAccessReader,
  target: RandomAccessReader,
  sink: ByteSink,
  sourceWindow: number,
  targetWindow: number,
): Promise<void> {
  const out = new VcdiffWriter(1 << 16)
  writeVcdiffHeader(out, {})
  const emitter = new WindowEmitter(true)
  const ops = new OpList()
  const windowsOfSource = new WindowCache(source, (bytes) => new SourceIndex(bytes))
  // xdelta3 -d rejects a delta without windows, so an empty target still gets one (as encodeVcdiff).
  const windows = Math.max(1, Math.ceil(target.size / targetWindow))
  const plan = new SourceWindows(target.size, source.size, sourceWindow)
  for (let w = 0; w < windows; w++) {
    const start = w * targetWindow
    const end = Math.min(target.size, start + targetWindow)
    const tgt = await readStretch(target, start, end - start)
    const win = plan.for(start, end)
    const matcher = new WindowMatcher((await windowsOfSource.get(win.offset, win.length)).index)
    ops.reset()
    // First guess: the same file offset in the source, in window coordinates.
    matcher.match(tgt, 0, tgt.length, ops, start - win.offset)
    // The matcher saw the window only; the emitter wants source positions in the file.
    for (let i = 0; i < ops.count; i++)
      if (ops.types[i] === COPY && ops.self[i] === 0) ops.addrs[i]! += win.offset
    emitter.emit(out, tgt, 0, tgt.length, ops)
    await sink.write(out.view().slice())
    out.reset()
  }
}

/** Bytes at the head of each file that decide the approx index (tar members within it are looked at). */
const CHOICE_HEAD = 64 * 1024

async function streamApprox(
  source: RandomAccessReader,
  target: RandomAccessReader,
  sink: ByteSink,
  sourceWindow: number,
  blockSize: number,
): Promise<void> {
  const header = new ApproxWriter()
  header.bytes(
    encodeHeader({
      sourceLength: source.size,
      sourceCrc: await crcOf(source),
      targetLength: target.size,
      targetCrc: await crcOf(target),
      blockSize,
    }),
  )
  await sink.write(header.finish())
  // The index kind is chosen once, from the head of each file (where an executable's header is).
  const kind = chooseApproxIndex(await readHead(source, CHOICE_HEAD), await readHead(target, CHOICE_HEAD))
  const windowsOfSource = new WindowCache(source, (bytes) => buildApproxIndex(bytes, kind))
  const plan = new SourceWindows(target.size, source.size, sourceWindow)
  for (let start = 0; start < target.size; start += blockSize) {
    const end = Math.min(target.size, start + blockSize)
    const win = plan.for(start, end)
    const block = new ApproxWriter()
    const window = await windowsOfSource.get(win.offset, win.length)
    writeWindowedBlock(
      block,
      { bytes: window.bytes, base: win.offset },
      { bytes: await readStretch(target, start, end - start), base: start },
      window.index,
    )
    await sink.write(block.finish())
  }
}

/**
 * Writes a delta turning `source` into `target` to `sink`, window by window; returns the method used.
 * On a throw the sink holds a partial delta and must be discarded (write to a temporary file).
 */
export async function createDeltaStream(
  source: RandomAccessReader,
  target: RandomAccessReader,
  sink: ByteSink,
  options: CreateDeltaStreamOptions = {},
): Promise<StreamDeltaMethod> {
  const sourceWindow = positiveInt(
    options.sourceWindow,
    DEFAULT_SOURCE_WINDOW,
    MAX_SOURCE_WINDOW,
    'sourceWindow',
  )
  let method = options.method
  if (!method) {
    method =
      looksExecutable(await readHead(source, 4)) && looksExecutable(await readHead(target, 4))
        ? 'approx'
        : 'vcdiff'
  }
  // A target window wider than half the source window would leave part of it without its source.
  const fitting = (preferred: number) => Math.max(1, Math.min(preferred, Math.floor(sourceWindow / 2)))
  const targetWindow = positiveInt(
    options.targetWindow,
    fitting(method === 'vcdiff' ? DEFAULT_VCDIFF_WINDOW : DEFAULT_APPROX_BLOCK),
    MAX_TARGET_WINDOW,
    'targetWindow',
  )
  if (method === 'vcdiff') await streamVcdiff(source, target, sink, sourceWindow, targetWindow)
  else await streamApprox(source, target, sink, sourceWindow, targetWindow)
  return method
}
