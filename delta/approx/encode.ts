/**
 * createApproxDelta: index the source, match, then cut the segment list into fixed-size target blocks,
 * each carrying its own independently compressed control, diff and extra streams so a decoder never
 * needs more than one block in memory.
 */
import { deflateRaw } from 'pako'
import { type KnownCopy, KnownCopyCursor, splitSource, usableKnownCopies } from '../known-copies.ts'
import {
  type ApproxIndex,
  type ApproxIndexKind,
  buildApproxIndex,
  chooseApproxIndex,
} from './approx-index.ts'
import { subtractWithCarry } from './arith.ts'
import { ByteWriter } from './bytes.ts'
import { crc32 } from './crc32.ts'
import { type BlockHeader, defaultBlockSize, encodeBlockHeader, encodeHeader, maxPieces } from './format.ts'
import { matchSegments, type Segments } from './match.ts'

export interface CreateApproxOptions {
  /**
   * Target bytes per block (default: the whole target up to 16 MiB, else 4 MiB; see
   * `defaultBlockSize`). Smaller blocks cut decoder memory and cost a little size.
   */
  blockSize?: number
  /** DEFLATE level 0–9 (default 9). */
  level?: 0 | 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9
  /**
   * Where matches are looked up (default: `chooseApproxIndex`, the suffix array for executables and
   * hash chains for the rest). The delta format is the same either way.
   */
  index?: ApproxIndexKind
  /** Stretches known to be unchanged: copied where their bytes agree, and left out of the hash index. */
  knownCopies?: readonly KnownCopy[]
  /** A faster deflate for the block streams (default: pako). */
  deflateHost?: DeflateHost
}

/**
 * Whoever can lend a faster raw deflate: the agent's Node zlib, through its DeflateEngine
 * (archive/deflate-engine.ts, deflateHostOf). Any valid raw deflate stream will do, since decoders
 * only inflate; Node's zlib at the same settings took a tenth off the esbuild binary's make time and
 * made the same bytes.
 */
export interface DeflateHost {
  deflateRaw(raw: Uint8Array, level: number, memLevel: number): Uint8Array
}

export function createApproxDelta(
  source: Uint8Array,
  target: Uint8Array,
  options?: CreateApproxOptions,
): Uint8Array {
  const blockSize = options?.blockSize ?? defaultBlockSize(target.length)
  if (!Number.isInteger(blockSize) || blockSize < 1 || blockSize > 0xffff_ffff) {
    throw new RangeError(`blockSize must be a positive 32-bit integer, got ${blockSize}`)
  }
  const level = options?.level ?? 9
  // With nothing to match against, skip building an index of nothing.
  const segments: Segments =
    source.length === 0 || target.length === 0
      ? target.length === 0
        ? []
        : [0, target.length, 0]
      : matchWithKnownCopies(source, target, options)

  const out = new ByteWriter()
  out.bytes(
    encodeHeader({
      sourceLength: source.length,
      sourceCrc: crc32(source),
      targetLength: target.length,
      targetCrc: crc32(target),
      blockSize,
    }),
  )
  const compress = compressorFor(level, options?.deflateHost)
  for (const block of splitIntoBlocks(segments, target.length, blockSize)) {
    writeBlock(out, block, { bytes: source, base: 0 }, { bytes: target, base: 0 }, compress)
  }
  return out.finish()
}

function matchWithKnownCopies(
  source: Uint8Array,
  target: Uint8Array,
  options?: CreateApproxOptions,
): Segments {
  const kind = options?.index ?? chooseApproxIndex(source, target)
  const known = usableKnownCopies(options?.knownCopies, source.length, target.length)
  if (known.length === 0) return matchSegments(buildApproxIndex(source, kind), target)
  const index = buildApproxIndex(source, kind, splitSource(known, source.length).searched)
  return matchSegments(index, target, undefined, new KnownCopyCursor(known))
}

/** Bytes that stand for a stretch of a larger file starting at `base` (the whole file when 0). */
export interface Stretch {
  bytes: Uint8Array
  base: number
}

/**
 * Matches one target block against a window of the source and writes it as a DPAX block: the building
 * block of the streaming create (delta/stream-create.ts), where neither file is held whole. Copy
 * positions are absolute in the source, so the result is an ordinary block any decoder applies.
 */
export function writeWindowedBlock(
  out: ByteWriter,
  source: Stretch,
  target: Stretch,
  /** The window's index when the caller already has it (consecutive blocks often share a window). */
  index?: ApproxIndex,
  level: CreateApproxOptions['level'] & number = 9,
): void {
  const n = target.bytes.length
  const segments: Segments =
    source.bytes.length === 0 || n === 0
      ? [0, n, 0]
      : matchSegments(
          index ?? buildApproxIndex(source.bytes, chooseApproxIndex(source.bytes, target.bytes)),
          target.bytes,
        )
  // matchSegments works in window coordinates; the container wants file positions.
  for (let i = 2; i < segments.length; i += 3) segments[i]! += source.base
  const [block] = splitIntoBlocks(segments, n, Math.max(n, 1))
  const planned = block ?? { start: 0, end: 0, pieces: [] }
  writeBlock(
    out,
    { start: target.base, end: target.base + n, pieces: planned.pieces },
    source,
    target,
    compressorFor(level),
  )
}

interface PlannedBlock {
  start: number
  end: number
  /** Flat triples copyLen, extraLen, srcPos like Segments, but confined to this block. */
  pieces: number[]
}

/** Cuts segments at block boundaries; a literal run always attaches to the piece before it. */
function splitIntoBlocks(segments: Segments, targetLength: number, blockSize: number): PlannedBlock[] {
  const blocks: PlannedBlock[] = []
  for (let start = 0; start < targetLength; start += blockSize) {
    blocks.push({ start, end: Math.min(start + blockSize, targetLength), pieces: [] })
  }
  let t = 0
  let srcPos = 0
  for (let i = 0; i < segments.length; i += 3) {
    let copy = segments[i]!
    let extra = segments[i + 1]!
    srcPos = copy > 0 ? segments[i + 2]! : srcPos
    while (copy > 0) {
      const block = blocks[Math.floor(t / blockSize)]!
      const n = Math.min(copy, block.end - t)
      block.pieces.push(n, 0, srcPos)
      srcPos += n
      copy -= n
      t += n
    }
    while (extra > 0) {
      const block = blocks[Math.floor(t / blockSize)]!
      const n = Math.min(extra, block.end - t)
      const p = block.pieces
      if (p.length > 0) p[p.length - 2]! += n
      else p.push(0, n, srcPos)
      extra -= n
      t += n
    }
  }
  return blocks
}

type Compress = (raw: Uint8Array) => Uint8Array

function compressorFor(level: CreateApproxOptions['level'] & number, host?: DeflateHost): Compress {
  if (host) return (raw) => (raw.length === 0 ? raw : host.deflateRaw(raw, level, 9))
  return (raw) => (raw.length === 0 ? raw : deflateRaw(raw, { level, memLevel: 9 }))
}

/** `block` positions are file positions; `source` and `target` hold (at least) the bytes it covers. */
function writeBlock(
  out: ByteWriter,
  block: PlannedBlock,
  sourceStretch: Stretch,
  targetStretch: Stretch,
  compress: Compress,
): void {
  const { bytes: source, base: sBase } = sourceStretch
  const { bytes: target, base: tBase } = targetStretch
  const pieces = withinPieceLimit(block.pieces, block.end - block.start)
  const ctrl = new ByteWriter()
  let diffLen = 0
  for (let i = 0; i < pieces.length; i += 3) diffLen += pieces[i]!
  const diff = new Uint8Array(diffLen)
  const extra = new Uint8Array(block.end - block.start - diffLen)
  ctrl.svarint(pieces[2] ?? 0)
  let t = block.start - tBase
  let d = 0
  let e = 0
  for (let i = 0; i < pieces.length; i += 3) {
    const copy = pieces[i]!
    const lit = pieces[i + 1]!
    const pos = pieces[i + 2]!
    subtractWithCarry(target, t, source, pos - sBase, copy, diff, d)
    d += copy
    t += copy
    extra.set(target.subarray(t, t + lit), e)
    e += lit
    t += lit
    // Seek to where the next piece copies from (or nowhere: the decoder ignores the final position).
    const next = i + 3 < pieces.length ? pieces[i + 5]! : pos + copy
    ctrl.varint(copy)
    ctrl.varint(lit)
    ctrl.svarint(next - (pos + copy))
  }
  const ctrlRaw = ctrl.finish()
  const sparse = sparseDiff(diff)
  const streams = [compress(ctrlRaw), compress(sparse), compress(extra)] as const
  const header: BlockHeader = {
    targetBytes: block.end - block.start,
    ctrlRaw: ctrlRaw.length,
    ctrlComp: streams[0].length,
    diffRaw: sparse.length,
    diffComp: streams[1].length,
    extraRaw: extra.length,
    extraComp: streams[2].length,
  }
  encodeBlockHeader(out, header)
  for (const s of streams) out.bytes(s)
}

/**
 * A block's pieces as decoders accept them (format.ts, maxPieces): copies shorter than 2, 4, … bytes
 * are folded into the literals around them until few enough remain, which copies of 32 bytes or more
 * always are. Only blocks of thousands of tiny matches ever need it; their bytes stay the same, moved
 * from the diff stream to the extra stream.
 */
function withinPieceLimit(pieces: number[], targetBytes: number): number[] {
  const limit = 3 * maxPieces(targetBytes)
  let kept = pieces
  for (let minCopy = 2; kept.length > limit; minCopy *= 2) kept = foldShortCopies(pieces, minCopy)
  return kept
}

function foldShortCopies(pieces: readonly number[], minCopy: number): number[] {
  const kept: number[] = []
  for (let i = 0; i < pieces.length; i += 3) {
    const copy = pieces[i]!
    const literal = pieces[i + 1]!
    if (copy >= minCopy) kept.push(copy, literal, pieces[i + 2]!)
    else if (kept.length > 0) kept[kept.length - 2]! += copy + literal
    else kept.push(0, copy + literal, pieces[i + 2]!)
  }
  return kept
}

/** (gap, value) pairs for the nonzero diff bytes; see expandSparseDiff for why. */
function sparseDiff(diff: Uint8Array): Uint8Array {
  const w = new ByteWriter()
  let last = 0
  for (let i = 0; i < diff.length; i++) {
    const v = diff[i]!
    if (v === 0) continue
    w.varint(i - last)
    w.u8(v)
    last = i + 1
  }
  return w.finish()
}
