/**
 * createApproxDelta: index the source, match, then cut the segment list into fixed-size target blocks,
 * each carrying its own independently compressed control, diff and extra streams so a decoder never
 * needs more than one block in memory.
 */
import { deflateRaw } from 'pako'
import { subtractWithCarry } from './arith.ts'
import { ByteWriter } from './bytes.ts'
import { crc32 } from './crc32.ts'
import { type BlockHeader, defaultBlockSize, encodeBlockHeader, encodeHeader } from './format.ts'
import { matchSegments, type Segments } from './match.ts'
import { indexSource } from './source-index.ts'

export interface CreateApproxOptions {
  /**
   * Target bytes per block (default: the whole target up to 16 MiB, else 4 MiB; see
   * `defaultBlockSize`). Smaller blocks cut decoder memory and cost a little size.
   */
  blockSize?: number
  /** DEFLATE level 0–9 (default 9). */
  level?: 0 | 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9
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
      : matchSegments(indexSource(source), target)

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
  for (const block of splitIntoBlocks(segments, target.length, blockSize)) {
    writeBlock(out, block, source, target, level)
  }
  return out.finish()
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

function compress(raw: Uint8Array, level: CreateApproxOptions['level'] & number): Uint8Array {
  return raw.length === 0 ? raw : deflateRaw(raw, { level, memLevel: 9 })
}

function writeBlock(
  out: ByteWriter,
  block: PlannedBlock,
  source: Uint8Array,
  target: Uint8Array,
  level: CreateApproxOptions['level'] & number,
): void {
  const { pieces } = block
  const ctrl = new ByteWriter()
  let diffLen = 0
  for (let i = 0; i < pieces.length; i += 3) diffLen += pieces[i]!
  const diff = new Uint8Array(diffLen)
  const extra = new Uint8Array(block.end - block.start - diffLen)
  ctrl.svarint(pieces[2] ?? 0)
  let t = block.start
  let d = 0
  let e = 0
  for (let i = 0; i < pieces.length; i += 3) {
    const copy = pieces[i]!
    const lit = pieces[i + 1]!
    const pos = pieces[i + 2]!
    subtractWithCarry(target, t, source, pos, copy, diff, d)
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
  const streams = [compress(ctrlRaw, level), compress(sparse, level), compress(extra, level)] as const
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
