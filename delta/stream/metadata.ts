import { check } from '../errors.ts'
import { MAX_TOTAL_BLOCKS } from '../fec/index.ts'
import { HEADER_SIZE } from './header.ts'

/**
 * The first block's payload: UTF-8 JSON describing what the stream carries and how it is cut.
 * JSON keeps it readable in logs and extensible; it must fit in one block's payload area.
 */
export interface StreamMetadata {
  format: 'deltaport-stream'
  version: 1
  artifact: string
  fromVersion: string | null
  toVersion: string
  /** How the payload was produced, e.g. a delta codec name or 'full'. */
  method: string
  payloadLength: number
  /** Lower-case hex SHA-256 of the payload; its first 4 bytes are the stream tag. */
  sha256: string
  blockSize: number
  k: number
  m: number
  /** Control blocks placed right after the metadata block (0 or more). */
  controlBlocks: number
  blockCount: number
}

export const MIN_BLOCK_SIZE = 512
export const MAX_BLOCK_SIZE = 16 * 1024 * 1024
const MAX_STRING = 256

function isString(v: unknown, nullable = false): boolean {
  return (typeof v === 'string' && v.length > 0 && v.length <= MAX_STRING) || (nullable && v === null)
}

function isInt(v: unknown, min: number, max: number): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= min && v <= max
}

export function streamTagOf(sha256: string): number {
  return Number.parseInt(sha256.slice(0, 8), 16) >>> 0
}

export function dataBlockCount(payloadLength: number, blockSize: number): number {
  return Math.ceil(payloadLength / blockSize)
}

/** Total blocks: metadata + control + data + m parity per group of up to k data blocks. */
export function expectedBlockCount(
  m: Pick<StreamMetadata, 'payloadLength' | 'blockSize' | 'k' | 'm' | 'controlBlocks'>,
): number {
  const data = dataBlockCount(m.payloadLength, m.blockSize)
  return 1 + m.controlBlocks + data + Math.ceil(data / m.k) * m.m
}

/** Checks every field; throws DeltaFormatError('stream.bad-metadata'). */
export function validateMetadata(value: unknown): StreamMetadata {
  const bad = 'stream.bad-metadata'
  check(
    typeof value === 'object' && value !== null && !Array.isArray(value),
    bad,
    'metadata is not an object',
  )
  const m = value as Record<string, unknown>
  check(m.format === 'deltaport-stream' && m.version === 1, bad, 'not a deltaport-stream v1 metadata block')
  check(
    isString(m.artifact) && isString(m.toVersion) && isString(m.method),
    bad,
    'artifact/toVersion/method must be short strings',
  )
  check(isString(m.fromVersion, true), bad, 'fromVersion must be a short string or null')
  check(
    typeof m.sha256 === 'string' && /^[0-9a-f]{64}$/.test(m.sha256),
    bad,
    'sha256 must be 64 lower-case hex digits',
  )
  check(
    isInt(m.payloadLength, 0, Number.MAX_SAFE_INTEGER),
    bad,
    'payloadLength must be a non-negative integer',
  )
  check(
    isInt(m.blockSize, MIN_BLOCK_SIZE, MAX_BLOCK_SIZE),
    bad,
    `blockSize must be in ${MIN_BLOCK_SIZE}..${MAX_BLOCK_SIZE}`,
  )
  check(
    isInt(m.k, 1, MAX_TOTAL_BLOCKS) && isInt(m.m, 0, MAX_TOTAL_BLOCKS - m.k),
    bad,
    `k >= 1, m >= 0, k + m <= ${MAX_TOTAL_BLOCKS}`,
  )
  check(isInt(m.controlBlocks, 0, 16), bad, 'controlBlocks must be in 0..16')
  const meta = m as unknown as StreamMetadata
  const count = expectedBlockCount(meta)
  check(
    count <= 0xffffffff && m.blockCount === count,
    bad,
    `blockCount ${String(m.blockCount)} != computed ${count}`,
  )
  check(HEADER_SIZE + meta.blockSize <= Number.MAX_SAFE_INTEGER / count, bad, 'stream too large')
  return {
    format: 'deltaport-stream',
    version: 1,
    artifact: meta.artifact,
    fromVersion: meta.fromVersion,
    toVersion: meta.toVersion,
    method: meta.method,
    payloadLength: meta.payloadLength,
    sha256: meta.sha256,
    blockSize: meta.blockSize,
    k: meta.k,
    m: meta.m,
    controlBlocks: meta.controlBlocks,
    blockCount: meta.blockCount,
  }
}

export function encodeMetadata(meta: StreamMetadata): Uint8Array {
  const bytes = new TextEncoder().encode(JSON.stringify(validateMetadata(meta)))
  check(
    bytes.length <= meta.blockSize,
    'stream.metadata-too-large',
    `metadata JSON (${bytes.length} B) exceeds blockSize`,
  )
  return bytes
}

export function decodeMetadata(bytes: Uint8Array): StreamMetadata {
  let parsed: unknown
  try {
    parsed = JSON.parse(new TextDecoder('utf-8', { fatal: true, ignoreBOM: false }).decode(bytes))
  } catch {
    check(false, 'stream.bad-metadata', 'metadata is not valid UTF-8 JSON')
  }
  return validateMetadata(parsed)
}
