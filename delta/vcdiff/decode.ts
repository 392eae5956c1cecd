import { check, DeltaFormatError } from '../errors.ts'
import type { ByteSink, ByteSource, RandomAccessReader } from '../io.ts'
import { AddressCache } from './address-cache.ts'
import type { CodeTable } from './code-table.ts'
import { DEFAULT_TABLE, DEFAULT_TABLE_STRING, tableFromString } from './code-table.ts'
import { E, NeedMore } from './errors.ts'
import type { FileHeader, VcdiffHeaderInfo, WindowHeader } from './header.ts'
import { parseFileHeader, parseWindowHeader, readHeaderInfo, VCD_SOURCE, VCD_TARGET } from './header.ts'
import { TargetHistory } from './history.ts'
import type { ResolvedLimits, VcdiffLimits } from './limits.ts'
import { resolveLimits } from './limits.ts'
import { SourcePages } from './source-pages.ts'
import { cursor, readVarint } from './varint.ts'
import type { SegmentReader } from './window.ts'
import { executeBatch, OpBatch, verifyChecksum, WindowParser } from './window.ts'

const EMPTY_SEGMENT: SegmentReader = { copy() {} }

/**
 * RFC 3284 section 7: a custom table is two cache sizes followed by a VCDIFF delta that turns the
 * default table's 1536-byte string into the new one. That inner delta must use the default table.
 */
function decodeCodeTable(data: Uint8Array): CodeTable {
  check(data.length >= 2, E.codeTable, 'vcdiff: custom code table data is too short')
  const nearSize = data[0]!
  const sameSize = data[1]!
  const limits = { maxWindowSize: 1536, maxTargetSize: 1536, maxHeaderDataSize: 0 }
  const bytes = decodeWith(DEFAULT_TABLE_STRING, data.subarray(2), resolveLimits(limits), false)
  return tableFromString(bytes, nearSize, sameSize)
}

function tableOf(header: FileHeader, allowCustom: boolean): CodeTable {
  if (header.codeTableData === undefined) return DEFAULT_TABLE
  check(allowCustom, E.codeTable, 'vcdiff: a custom code table may not itself use a custom code table')
  return decodeCodeTable(header.codeTableData)
}

function sourceSegment(source: Uint8Array, h: WindowHeader): SegmentReader {
  check(
    h.sourcePosition + h.sourceLength <= source.length,
    E.window,
    'vcdiff: source segment lies beyond the end of the source',
  )
  const base = h.sourcePosition
  return {
    copy(offset, len, dst, at) {
      const from = base + offset
      if (len < 32) for (let k = 0; k < len; k++) dst[at + k] = source[from + k]!
      else dst.set(source.subarray(from, from + len), at)
    },
  }
}

/** Allocation failures become limit errors, so hostile sizes never surface as RangeError. */
function allocate(size: number): Uint8Array {
  try {
    return new Uint8Array(size)
  } catch {
    throw new DeltaFormatError(E.limit, `vcdiff: cannot allocate ${size} bytes of output`)
  }
}

/**
 * In memory, a first pass reads each window's declared target length (checked against the limits)
 * so windows can decode straight into one output array; VCD_TARGET segments are then just earlier
 * parts of it. The array grows by doubling as windows actually decode rather than being sized from
 * the declarations, so a short hostile delta declaring gigabytes fails before it costs gigabytes.
 */
function decodeWith(
  source: Uint8Array,
  delta: Uint8Array,
  limits: ResolvedLimits,
  allowCustom: boolean,
): Uint8Array {
  const c = cursor(delta)
  const table = tableOf(parseFileHeader(c, limits, false), allowCustom)
  const firstWindow = c.pos
  let total = 0
  while (c.pos < c.end) {
    const h = parseWindowHeader(c, limits, false)
    check(c.end - c.pos >= h.deltaLength, E.truncated, 'vcdiff: input ends inside a window')
    const length = readVarint(cursor(delta, c.pos, c.pos + h.deltaLength), 'target window length')
    check(
      length <= limits.maxWindowSize,
      E.limit,
      `vcdiff: target window of ${length} bytes exceeds maxWindowSize`,
    )
    check(length <= limits.maxTargetSize - total, E.limit, 'vcdiff: output would exceed maxTargetSize')
    total += length
    c.pos += h.deltaLength
  }

  let out = allocate(Math.min(total, 1 << 20))
  const cache = new AddressCache(table.nearSize, table.sameSize)
  const parser = new WindowParser()
  const batch = new OpBatch()
  let produced = 0
  c.pos = firstWindow
  while (c.pos < c.end) {
    const h = parseWindowHeader(c, limits, false)
    const body = delta.subarray(c.pos, c.pos + h.deltaLength)
    c.pos += h.deltaLength
    parser.begin(h, body, table, cache, limits, total - produced)
    const end = produced + parser.targetLength
    if (end > out.length) {
      const grown = allocate(Math.min(total, Math.max(end, out.length * 2)))
      grown.set(out.subarray(0, produced))
      out = grown
    }
    const segment =
      h.indicator & VCD_SOURCE
        ? sourceSegment(source, h)
        : h.indicator & VCD_TARGET
          ? sourceSegment(out.subarray(0, produced), h)
          : EMPTY_SEGMENT
    const target = out.subarray(produced, end)
    while (!parser.done()) {
      parser.next(batch)
      executeBatch(batch, parser.data, h.sourceLength, segment, target)
    }
    parser.finish()
    verifyChecksum(parser.checksum, target)
    produced = end
  }
  return out.length === produced ? out : out.slice(0, produced)
}

/** Decodes a whole VCDIFF delta held in memory. Throws DeltaFormatError on any malformed input. */
export function decodeVcdiff(source: Uint8Array, delta: Uint8Array, limits?: VcdiffLimits): Uint8Array {
  return decodeWith(source, delta, resolveLimits(limits), true)
}

/** Buffers an async byte stream so the sync parsers can see a contiguous run of bytes. */
class StreamBuffer {
  private readonly it: AsyncIterator<Uint8Array>
  buf = new Uint8Array(0)
  pos = 0
  end = 0

  constructor(source: ByteSource) {
    this.it = source[Symbol.asyncIterator]()
  }

  /**
   * Makes at least `n` bytes available from `pos`; false when the stream ends first. The buffer
   * grows with the data actually received, so a hostile length field alone allocates nothing.
   */
  async ensure(n: number): Promise<boolean> {
    if (this.end - this.pos >= n) return true
    this.buf.copyWithin(0, this.pos, this.end)
    this.end -= this.pos
    this.pos = 0
    while (this.end < n) {
      const r = await this.it.next()
      if (r.done) return false
      const chunk = r.value
      if (this.end + chunk.length > this.buf.length) {
        const next = new Uint8Array(Math.max(this.end + chunk.length, this.buf.length * 2, 64 * 1024))
        next.set(this.buf.subarray(0, this.end))
        this.buf = next
      }
      this.buf.set(chunk, this.end)
      this.end += chunk.length
    }
    return true
  }

  /** Runs a sync parser over the buffered bytes, pulling more input whenever it asks for it. */
  async parse<T>(fn: (c: ReturnType<typeof cursor>) => T, what: string): Promise<T> {
    for (;;) {
      const c = cursor(this.buf, this.pos, this.end)
      try {
        const value = fn(c)
        this.pos = c.pos
        return value
      } catch (e) {
        if (!(e instanceof NeedMore)) throw e
        const ok = await this.ensure(e.needed - this.pos)
        check(ok, E.truncated, `vcdiff: input ends inside ${what}`)
      }
    }
  }

  async atEnd(): Promise<boolean> {
    return !(await this.ensure(1))
  }
}

/**
 * Streaming decode: reads the delta front to back and writes each target window to `sink` once it
 * is complete and its checksum verified. Memory is bounded by the window sizes and limits.
 */
export async function decodeVcdiffStream(
  source: RandomAccessReader,
  delta: ByteSource,
  sink: ByteSink,
  limitsIn?: VcdiffLimits,
): Promise<void> {
  const limits = resolveLimits(limitsIn)
  const sb = new StreamBuffer(delta)
  const header = await sb.parse((c) => parseFileHeader(c, limits, true), 'file header')
  const table = tableOf(header, true)
  const cache = new AddressCache(table.nearSize, table.sameSize)
  const history = new TargetHistory(limits.maxTargetHistory)
  const parser = new WindowParser()
  const batch = new OpBatch()
  const pages = new SourcePages(source, limits.maxSourceCache)
  while (!(await sb.atEnd())) {
    const h = await sb.parse((c) => parseWindowHeader(c, limits, true), 'window header')
    check(await sb.ensure(h.deltaLength), E.truncated, 'vcdiff: input ends inside a window')
    // The body stays valid until sb.pos moves: nothing else touches the buffer meanwhile.
    const body = sb.buf.subarray(sb.pos, sb.pos + h.deltaLength)
    parser.begin(h, body, table, cache, limits, limits.maxTargetSize - history.produced)
    const fromSource = (h.indicator & VCD_SOURCE) !== 0
    check(
      !fromSource || h.sourcePosition + h.sourceLength <= source.size,
      E.window,
      'vcdiff: source segment lies beyond the end of the source',
    )
    const fixed = h.indicator & VCD_TARGET ? history.segment(h.sourcePosition, h.sourceLength) : EMPTY_SEGMENT
    const target = pages.window(parser.targetLength, fromSource)
    if (fromSource) await pages.beginWindow(h.sourcePosition, h.sourceLength)
    while (!parser.done()) {
      parser.next(batch)
      if (!fromSource) {
        executeBatch(batch, parser.data, h.sourceLength, fixed, target)
        continue
      }
      // In runs whose source pages all fit in the cache at once (usually the whole batch).
      for (let i = 0, pos = batch.start; i < batch.count; ) {
        const end = await pages.load(batch, i, pos, h.sourceLength, target)
        pos = executeBatch(batch, parser.data, h.sourceLength, pages, target, i, end, pos)
        i = end
      }
    }
    parser.finish()
    verifyChecksum(parser.checksum, target)
    sb.pos += h.deltaLength
    history.push(target)
    await sink.write(target)
  }
}

/** Parses only the file header, exposing the application header (xdelta3 puts file names there). */
export function readVcdiffHeader(delta: Uint8Array, limits?: VcdiffLimits): VcdiffHeaderInfo {
  return readHeaderInfo(delta, resolveLimits(limits))
}
