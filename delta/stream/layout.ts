import { check } from '../errors.ts'
import { HEADER_SIZE } from './header.ts'
import { dataBlockCount, type StreamMetadata } from './metadata.ts'

/**
 * Where everything sits. Block order: [metadata][control × c] then per group g: its k' data blocks
 * (k' = k except possibly the last group) followed by its m parity blocks. All blocks have the same
 * framed size, so block n spans bytes [n × framedSize, (n+1) × framedSize).
 */
export interface StreamLayout {
  blockSize: number
  framedSize: number
  k: number
  m: number
  controlBlocks: number
  dataBlocks: number
  groups: number
  blockCount: number
  payloadLength: number
  totalBytes: number
}

export interface ByteRange {
  offset: number
  length: number
}

/** A run of consecutive blocks by sequence number. */
export interface BlockRange {
  firstBlock: number
  count: number
}

export type BlockRole =
  | { kind: 'metadata' }
  | { kind: 'control'; index: number }
  | { kind: 'data'; group: number; index: number; dataIndex: number }
  | { kind: 'parity'; group: number; index: number }

export function layoutOf(meta: StreamMetadata): StreamLayout {
  const dataBlocks = dataBlockCount(meta.payloadLength, meta.blockSize)
  const framedSize = HEADER_SIZE + meta.blockSize
  return {
    blockSize: meta.blockSize,
    framedSize,
    k: meta.k,
    m: meta.m,
    controlBlocks: meta.controlBlocks,
    dataBlocks,
    groups: Math.ceil(dataBlocks / meta.k),
    blockCount: meta.blockCount,
    payloadLength: meta.payloadLength,
    totalBytes: meta.blockCount * framedSize,
  }
}

/** The byte range covering `count` blocks starting at block `firstBlock`. */
export function blockRangeFor(firstBlock: number, count: number, layout: StreamLayout): ByteRange {
  check(
    Number.isInteger(firstBlock) &&
      Number.isInteger(count) &&
      firstBlock >= 0 &&
      count >= 1 &&
      firstBlock + count <= layout.blockCount,
    'stream.bad-range',
    `blocks ${firstBlock}+${count} outside 0..${layout.blockCount}`,
  )
  return { offset: firstBlock * layout.framedSize, length: count * layout.framedSize }
}

/** An HTTP Range header value for a byte range. */
export function rangeHeader(range: ByteRange): string {
  return `bytes=${range.offset}-${range.offset + range.length - 1}`
}

export function groupFirstBlock(group: number, layout: StreamLayout): number {
  return 1 + layout.controlBlocks + group * (layout.k + layout.m)
}

export function groupDataCount(group: number, layout: StreamLayout): number {
  return Math.min(layout.k, layout.dataBlocks - group * layout.k)
}

/** The blocks (data and parity) of one FEC group: the unit that decodes independently. */
export function groupBlockRange(group: number, layout: StreamLayout): BlockRange {
  check(
    Number.isInteger(group) && group >= 0 && group < layout.groups,
    'stream.bad-range',
    `no group ${group}`,
  )
  return { firstBlock: groupFirstBlock(group, layout), count: groupDataCount(group, layout) + layout.m }
}

/** True payload bytes in data block `dataIndex` (only the last one can be short). */
export function dataLengthOf(dataIndex: number, layout: StreamLayout): number {
  return Math.min(layout.blockSize, layout.payloadLength - dataIndex * layout.blockSize)
}

export function roleOf(sequence: number, layout: StreamLayout): BlockRole {
  check(
    Number.isInteger(sequence) && sequence >= 0 && sequence < layout.blockCount,
    'stream.bad-range',
    `no block ${sequence}`,
  )
  if (sequence === 0) return { kind: 'metadata' }
  if (sequence <= layout.controlBlocks) return { kind: 'control', index: sequence - 1 }
  const rel = sequence - 1 - layout.controlBlocks
  const group = Math.floor(rel / (layout.k + layout.m))
  const index = rel - group * (layout.k + layout.m)
  if (index < groupDataCount(group, layout))
    return { kind: 'data', group, index, dataIndex: group * layout.k + index }
  return { kind: 'parity', group, index }
}
