/**
 * The DPAX container layout (docs/formats/approx-delta.md is the byte-for-byte reference) and the checks
 * a decoder runs on it before trusting any length. Everything here is shared by the in-memory and the
 * streaming decoder so both reject exactly the same inputs.
 */
import { check } from '../errors.ts'
import { ByteReader, ByteWriter } from './bytes.ts'
import { crc32 } from './crc32.ts'

export const MAGIC = [0x44, 0x50, 0x41, 0x58] // 'DPAX'
export const VERSION = 1
/** Stream codec id: 1 = raw DEFLATE (RFC 1951). The only one defined so far. */
export const CODEC_DEFLATE = 1
export const HEADER_SIZE = 40
export const BLOCK_HEADER_SIZE = 28
/**
 * Encoder default: one block for targets up to SINGLE_BLOCK_MAX (every block restarts its three
 * DEFLATE streams, and on a 4.4 MB tar one block instead of five saves 10%), 4 MiB blocks above it
 * (streaming apply holds about three blocks' worth of bytes; on the 120 MB Node binary 4 MiB blocks
 * are 0.5% smaller than 1 MiB ones and keep apply well inside 64 MiB).
 */
export const DEFAULT_BLOCK_SIZE = 4 << 20
export const SINGLE_BLOCK_MAX = 16 << 20

export function defaultBlockSize(targetLength: number): number {
  return targetLength <= SINGLE_BLOCK_MAX ? Math.max(1, targetLength) : DEFAULT_BLOCK_SIZE
}

/**
 * DEFLATE cannot expand data by more than this factor (a 258-byte match costs at least 2 bits), so any
 * claimed raw size beyond it is a lie we can reject before allocating.
 */
export const MAX_INFLATE_RATIO = 1040

export interface ApproxLimits {
  /** Largest target we agree to produce. Default 1 GiB. */
  maxTargetSize?: number
  /** Largest block (target bytes per block) we agree to buffer; bounds streaming memory. Default 16 MiB. */
  maxBlockSize?: number
}

export interface ResolvedLimits {
  maxTargetSize: number
  maxBlockSize: number
}

export function resolveLimits(limits: ApproxLimits | undefined): ResolvedLimits {
  return {
    maxTargetSize: limits?.maxTargetSize ?? 1 << 30,
    maxBlockSize: limits?.maxBlockSize ?? 16 << 20,
  }
}

export interface Header {
  sourceLength: number
  sourceCrc: number
  targetLength: number
  targetCrc: number
  blockSize: number
}

export function blockCount(h: Header): number {
  return Math.ceil(h.targetLength / h.blockSize)
}

export function encodeHeader(h: Header): Uint8Array {
  const w = new ByteWriter()
  for (const b of MAGIC) w.u8(b)
  w.u8(VERSION)
  w.u8(CODEC_DEFLATE)
  w.u8(0)
  w.u8(0)
  w.u64(h.sourceLength)
  w.u32(h.sourceCrc)
  w.u64(h.targetLength)
  w.u32(h.targetCrc)
  w.u32(h.blockSize)
  const body = w.finish()
  w.u32(crc32(body))
  return w.finish()
}

export function parseHeader(bytes: Uint8Array, limits: ResolvedLimits): Header {
  check(bytes.length >= HEADER_SIZE, 'truncated', 'delta shorter than the DPAX header')
  const r = new ByteReader(bytes.subarray(0, HEADER_SIZE))
  for (const b of MAGIC) check(r.u8() === b, 'bad-magic', 'not a DPAX approximate delta')
  const version = r.u8()
  check(version === VERSION, 'bad-version', `unsupported DPAX version ${version}`)
  check(r.u8() === CODEC_DEFLATE, 'bad-codec', 'unknown stream codec')
  check(r.u8() === 0 && r.u8() === 0, 'bad-header', 'reserved header bytes must be zero')
  const sourceLength = r.u64()
  const sourceCrc = r.u32()
  const targetLength = r.u64()
  const targetCrc = r.u32()
  const blockSize = r.u32()
  const headerCrc = r.u32()
  check(headerCrc === crc32(bytes.subarray(0, HEADER_SIZE - 4)), 'bad-header', 'header checksum mismatch')
  check(
    targetLength <= limits.maxTargetSize,
    'too-large',
    `target of ${targetLength} bytes exceeds the limit`,
  )
  check(blockSize >= 1, 'bad-header', 'block size must be positive')
  check(blockSize <= limits.maxBlockSize, 'too-large', `block size ${blockSize} exceeds the limit`)
  return { sourceLength, sourceCrc, targetLength, targetCrc, blockSize }
}

export interface BlockHeader {
  targetBytes: number
  ctrlRaw: number
  ctrlComp: number
  diffRaw: number
  diffComp: number
  extraRaw: number
  extraComp: number
}

/** Target bytes that come from the source (source + diff); the rest are literals. */
export function copyBytes(b: BlockHeader): number {
  return b.targetBytes - b.extraRaw
}

export function payloadSize(b: BlockHeader): number {
  return b.ctrlComp + b.diffComp + b.extraComp
}

export function encodeBlockHeader(w: ByteWriter, b: BlockHeader): void {
  w.u32(b.targetBytes)
  w.u32(b.ctrlRaw)
  w.u32(b.ctrlComp)
  w.u32(b.diffRaw)
  w.u32(b.diffComp)
  w.u32(b.extraRaw)
  w.u32(b.extraComp)
}

/**
 * Most pieces a block may hold: 4096 plus one per 32 target bytes. Decoding a piece costs tens of bytes
 * of heap (its triple, then the block's read plan), so without this a 12 KB delta of one-byte pieces
 * held hundreds of MiB; with it a block's controls cost a few times its own size at most. Our encoder
 * folds short copies into literals when a block would need more (it never has on real pairs: they
 * average thousands of target bytes a piece).
 */
export function maxPieces(targetBytes: number): number {
  return Math.min(targetBytes, 4096 + Math.floor(targetBytes / 32))
}

/** Longest control a block can need: a zigzag start plus three varints per piece, 7 bytes each. */
function maxCtrlRaw(targetBytes: number): number {
  return 7 + 21 * maxPieces(targetBytes)
}

/**
 * DEFLATE falls back to stored blocks (5 bytes per 64 KiB) for incompressible data, so a compressed
 * stream larger than this is not one our encoder wrote, and the streaming decoder must not buffer it.
 */
export function maxCompressed(raw: number): number {
  return raw + (raw >>> 4) + 64
}

function checkStream(raw: number, comp: number, name: string): void {
  check(raw === 0 ? comp === 0 : comp > 0, 'bad-block', `${name} stream sizes are inconsistent`)
  check(comp <= maxCompressed(raw), 'bad-block', `${name} stream is larger than DEFLATE ever makes it`)
  check(raw <= comp * MAX_INFLATE_RATIO, 'bad-block', `${name} stream claims an impossible inflate ratio`)
}

/** Parses block `index` and checks every size against the header before anything is allocated. */
export function parseBlockHeader(bytes: Uint8Array, h: Header, index: number): BlockHeader {
  const r = new ByteReader(bytes)
  const b: BlockHeader = {
    targetBytes: r.u32(),
    ctrlRaw: r.u32(),
    ctrlComp: r.u32(),
    diffRaw: r.u32(),
    diffComp: r.u32(),
    extraRaw: r.u32(),
    extraComp: r.u32(),
  }
  const expected = Math.min(h.blockSize, h.targetLength - index * h.blockSize)
  check(b.targetBytes === expected, 'bad-block', `block ${index} must produce ${expected} bytes`)
  check(b.extraRaw <= b.targetBytes, 'bad-block', `block ${index} has more literals than bytes`)
  // Each sparse diff entry costs one value byte plus a gap varint no longer than the gap + 1 it covers.
  check(b.diffRaw <= 2 * copyBytes(b), 'bad-block', `block ${index} diff stream is too long`)
  check(b.ctrlRaw >= 1 && b.ctrlRaw <= maxCtrlRaw(b.targetBytes), 'bad-block', `block ${index} control size`)
  checkStream(b.ctrlRaw, b.ctrlComp, 'control')
  checkStream(b.diffRaw, b.diffComp, 'diff')
  checkStream(b.extraRaw, b.extraComp, 'extra')
  return b
}
