import type { ByteSink, ByteSource } from '../io.ts'
import { type KnownCopy, KnownCopyCursor, splitSource, usableKnownCopies } from '../known-copies.ts'
import { WindowEmitter } from './emit.ts'
import { MAGIC, VCD_APPHEADER } from './header.ts'
import { SourceIndex, WindowMatcher } from './matcher.ts'
import { OpList } from './ops.ts'
import { ByteWriter } from './varint.ts'

export interface VcdiffEncodeOptions {
  /** Target bytes per window. Default 8 MiB, within xdelta3's 16 MiB decoder maximum. */
  windowSize?: number
  /** Write xdelta3's adler32 per window (Win_Indicator 0x04). Default true. */
  checksum?: boolean
  /** Optional application header (VCD_APPHEADER, an xdelta3 extension). */
  appHeader?: Uint8Array
}

const MAX_WINDOW = 16 * 1024 * 1024

function windowSizeOf(options: VcdiffEncodeOptions): number {
  const requested = options.windowSize ?? 8 * 1024 * 1024
  if (!Number.isFinite(requested)) return 8 * 1024 * 1024
  return Math.max(1, Math.min(Math.floor(requested), MAX_WINDOW))
}

/** The file header: magic, version, indicator and the optional application header. */
export function writeVcdiffHeader(out: ByteWriter, options: VcdiffEncodeOptions): void {
  for (const b of MAGIC) out.byte(b)
  const app = options.appHeader
  out.byte(app ? VCD_APPHEADER : 0)
  if (app) {
    out.varint(app.length)
    out.bytes(app)
  }
}

export interface VcdiffWholeEncodeOptions extends VcdiffEncodeOptions {
  /** Stretches known to be unchanged: copied where their bytes agree, and left out of the index. */
  knownCopies?: readonly KnownCopy[]
}

/**
 * Encodes `target` as a VCDIFF delta against `source` (default code table, no secondary
 * compression), decodable by xdelta3 -d and by decodeVcdiff.
 */
export function encodeVcdiff(
  source: Uint8Array,
  target: Uint8Array,
  options: VcdiffWholeEncodeOptions = {},
): Uint8Array {
  const windowSize = windowSizeOf(options)
  const out = new ByteWriter(Math.min(1 << 20, 64 + (target.length >> 2)))
  writeVcdiffHeader(out, options)
  const known = usableKnownCopies(options.knownCopies, source.length, target.length)
  const cursor = known.length > 0 ? new KnownCopyCursor(known) : undefined
  const matcher = new WindowMatcher(new SourceIndex(source, splitSource(known, source.length)))
  const emitter = new WindowEmitter(options.checksum ?? true)
  const ops = new OpList()
  // An empty target still gets one empty window: xdelta3 -d rejects a delta with no windows.
  const windows = Math.max(1, Math.ceil(target.length / windowSize))
  for (let w = 0; w < windows; w++) {
    const start = w * windowSize
    const end = Math.min(target.length, start + windowSize)
    ops.reset()
    matcher.match(target, start, end, ops, 0, cursor)
    emitter.emit(out, target, start, end, ops)
  }
  return out.view().slice()
}

/**
 * Streaming form: reads the target as it arrives and writes each encoded window to `sink` as soon
 * as a full window of target is buffered, so memory is the source, its index and one window.
 * The output is byte-identical to encodeVcdiff over the concatenated target.
 */
export async function encodeVcdiffStream(
  source: Uint8Array,
  target: ByteSource,
  sink: ByteSink,
  options: VcdiffEncodeOptions = {},
): Promise<void> {
  const windowSize = windowSizeOf(options)
  const out = new ByteWriter(1 << 16)
  writeVcdiffHeader(out, options)
  const matcher = new WindowMatcher(new SourceIndex(source))
  const emitter = new WindowEmitter(options.checksum ?? true)
  const ops = new OpList()
  let window = new Uint8Array(Math.min(windowSize, 1 << 16))
  let filled = 0
  let windows = 0
  let origin = 0
  const flush = async () => {
    ops.reset()
    matcher.match(window, 0, filled, ops, origin)
    origin += filled
    emitter.emit(out, window, 0, filled, ops)
    await sink.write(out.view().slice())
    out.reset()
    filled = 0
    windows++
  }
  for await (const chunk of target) {
    let at = 0
    while (at < chunk.length) {
      if (filled === window.length && filled < windowSize) {
        // Grow toward windowSize only as data arrives, so small targets stay small.
        const next = new Uint8Array(Math.min(windowSize, window.length * 2))
        next.set(window)
        window = next
      }
      const n = Math.min(chunk.length - at, window.length - filled)
      window.set(chunk.subarray(at, at + n), filled)
      filled += n
      at += n
      if (filled === windowSize) await flush()
    }
  }
  if (filled > 0 || windows === 0) await flush()
}
