import { check } from '../errors.ts'
import { crc32c } from './crc32c.ts'

/**
 * The fixed 32-byte block header (little-endian). Every block on the wire is this header followed by
 * a payload area of exactly `blockSize` bytes, so block n always starts at n × (32 + blockSize).
 *
 *   0  u8   magic/version (0xD1: high nibble 0xD = DeltaStream, low nibble = format version 1)
 *   1  u8   type (1 metadata, 2 control, 3 data, 4 parity; 0 is invalid so zeroed bytes never parse)
 *   2  u8   flags (bit 0: final data block; other bits must be 0)
 *   3  u8   reserved, 0
 *   4  u32  sequence: the block's index in the stream, which must match its byte position
 *   8  u32  group index (data/parity), 0 otherwise
 *  12  u16  index in group: 0..k'-1 data, k'..k'+m-1 parity
 *  14  u16  reserved, 0
 *  16  u32  payload length: true bytes in the payload area (<= blockSize; the rest is zero padding)
 *  20  u32  stream tag: first 4 bytes of the payload's SHA-256, so blocks of another stream are refused
 *  24  u32  CRC32C of the whole payload area, padding included (parity is computed over it)
 *  28  u32  CRC32C of bytes 0..27
 */

export const HEADER_SIZE = 32
export const MAGIC_VERSION = 0xd1

export const BLOCK_TYPE = { metadata: 1, control: 2, data: 3, parity: 4 } as const
export type BlockType = keyof typeof BLOCK_TYPE
const TYPE_NAMES: readonly (BlockType | undefined)[] = [undefined, 'metadata', 'control', 'data', 'parity']

export const FLAG_FINAL_DATA = 1

export interface BlockHeader {
  type: BlockType
  flags: number
  sequence: number
  group: number
  indexInGroup: number
  payloadLength: number
  streamTag: number
  payloadCrc: number
}

export function writeHeader(out: Uint8Array, h: BlockHeader): void {
  const v = new DataView(out.buffer, out.byteOffset, HEADER_SIZE)
  v.setUint8(0, MAGIC_VERSION)
  v.setUint8(1, BLOCK_TYPE[h.type])
  v.setUint8(2, h.flags)
  v.setUint8(3, 0)
  v.setUint32(4, h.sequence, true)
  v.setUint32(8, h.group, true)
  v.setUint16(12, h.indexInGroup, true)
  v.setUint16(14, 0, true)
  v.setUint32(16, h.payloadLength, true)
  v.setUint32(20, h.streamTag, true)
  v.setUint32(24, h.payloadCrc, true)
  v.setUint32(28, crc32c(out.subarray(0, 28)), true)
}

/**
 * Parses a header, checking only what the header alone can tell (checksum, magic, known type, zero
 * reserved bits). Throws DeltaFormatError('stream.bad-header'); callers decide whether that is fatal.
 */
export function readHeader(bytes: Uint8Array): BlockHeader {
  check(bytes.length >= HEADER_SIZE, 'stream.bad-header', 'truncated block header')
  const v = new DataView(bytes.buffer, bytes.byteOffset, HEADER_SIZE)
  check(
    v.getUint32(28, true) === crc32c(bytes.subarray(0, 28)),
    'stream.bad-header',
    'header checksum mismatch',
  )
  check(
    v.getUint8(0) === MAGIC_VERSION,
    'stream.bad-header',
    `unknown magic/version 0x${v.getUint8(0).toString(16)}`,
  )
  const type = TYPE_NAMES[v.getUint8(1)]
  check(type !== undefined, 'stream.bad-header', `unknown block type ${v.getUint8(1)}`)
  const flags = v.getUint8(2)
  check(
    (flags & ~FLAG_FINAL_DATA) === 0 && v.getUint8(3) === 0 && v.getUint16(14, true) === 0,
    'stream.bad-header',
    'reserved bits set',
  )
  return {
    type,
    flags,
    sequence: v.getUint32(4, true),
    group: v.getUint32(8, true),
    indexInGroup: v.getUint16(12, true),
    payloadLength: v.getUint32(16, true),
    streamTag: v.getUint32(20, true),
    payloadCrc: v.getUint32(24, true),
  }
}
