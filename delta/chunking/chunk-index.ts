import { check } from '../errors.ts'
import type { ByteSource } from '../io.ts'
import { crc32c } from '../stream/crc32c.ts'
import {
  type ChunkerOptions,
  chunkLengths,
  chunkSource,
  DEFAULT_CHUNKER,
  validateChunker,
} from './fastcdc.ts'

/** One chunk of an artifact; `hash` is the hex of the first 16 bytes of its SHA-256. */
export interface ChunkEntry {
  offset: number
  length: number
  hash: string
}

export interface ChunkIndex {
  chunker: ChunkerOptions
  totalLength: number
  chunks: ChunkEntry[]
}

export const HASH_BYTES = 16
const MAGIC = [0x44, 0x50, 0x43, 0x58] // "DPCX"
const VERSION = 1
const HASH_SHA256_16 = 1
const HEADER = 32
const ENTRY = 4 + HASH_BYTES

function toHex(bytes: Uint8Array): string {
  let hex = ''
  for (const b of bytes) hex += b.toString(16).padStart(2, '0')
  return hex
}

/** SHA-256 truncated to 16 bytes, via WebCrypto (present in Node 22 and workerd). */
export async function chunkHash(bytes: Uint8Array): Promise<string> {
  // Bare `crypto` is globalThis.crypto; workerd's typings declare it only as a global const.
  // WebCrypto's typings refuse views that might be SharedArrayBuffer-backed; ours never are.
  const digest = await crypto.subtle.digest('SHA-256', bytes as Uint8Array<ArrayBuffer>)
  return toHex(new Uint8Array(digest, 0, HASH_BYTES))
}

/** Chunks and hashes an artifact, from memory or streamed (bounded memory). */
export async function buildChunkIndex(
  input: Uint8Array | ByteSource,
  chunker: ChunkerOptions = DEFAULT_CHUNKER,
): Promise<ChunkIndex> {
  const options = validateChunker(chunker)
  const chunks: ChunkEntry[] = []
  let totalLength = 0
  if (input instanceof Uint8Array) {
    let offset = 0
    for (const length of chunkLengths(input, options)) {
      chunks.push({ offset, length, hash: '' })
      offset += length
    }
    // Digest in bounded batches: concurrent enough to keep WebCrypto busy, without a promise per chunk.
    for (let i = 0; i < chunks.length; i += 256) {
      const batch = chunks.slice(i, i + 256)
      const hashes = await Promise.all(
        batch.map((c) => chunkHash(input.subarray(c.offset, c.offset + c.length))),
      )
      batch.forEach((c, j) => {
        c.hash = hashes[j]!
      })
    }
    totalLength = input.length
  } else {
    for await (const { offset, bytes } of chunkSource(input, options)) {
      chunks.push({ offset, length: bytes.length, hash: await chunkHash(bytes) })
      totalLength = offset + bytes.length
    }
  }
  return { chunker: options, totalLength, chunks }
}

/**
 * Binary form, little-endian (see docs/formats/chunk-index.md): a 32-byte header, 20 bytes per chunk
 * (u32 length + 16-byte hash; offsets are the running sum), then a CRC32C of everything before it.
 */
export function encodeChunkIndex(index: ChunkIndex): Uint8Array {
  const n = index.chunks.length
  const out = new Uint8Array(HEADER + n * ENTRY + 4)
  const v = new DataView(out.buffer)
  out.set(MAGIC, 0)
  v.setUint8(4, VERSION)
  v.setUint8(5, HASH_SHA256_16)
  v.setUint32(8, index.chunker.minSize, true)
  v.setUint32(12, index.chunker.avgSize, true)
  v.setUint32(16, index.chunker.maxSize, true)
  v.setUint32(20, n, true)
  v.setUint32(24, index.totalLength % 2 ** 32, true)
  v.setUint32(28, Math.floor(index.totalLength / 2 ** 32), true)
  let at = HEADER
  let offset = 0
  for (const c of index.chunks) {
    check(
      c.offset === offset && /^[0-9a-f]{32}$/.test(c.hash),
      'chunking.bad-index',
      'chunks must be contiguous with 16-byte hex hashes',
    )
    v.setUint32(at, c.length, true)
    for (let i = 0; i < HASH_BYTES; i++) out[at + 4 + i] = Number.parseInt(c.hash.slice(2 * i, 2 * i + 2), 16)
    at += ENTRY
    offset += c.length
  }
  check(offset === index.totalLength, 'chunking.bad-index', 'chunk lengths do not add up to totalLength')
  v.setUint32(at, crc32c(out.subarray(0, at)), true)
  return out
}

export function decodeChunkIndex(bytes: Uint8Array): ChunkIndex {
  const bad = 'chunking.bad-index'
  check(bytes.length >= HEADER + 4, bad, 'chunk index truncated')
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.length)
  check(
    MAGIC.every((b, i) => bytes[i] === b),
    bad,
    'not a chunk index (bad magic)',
  )
  check(
    v.getUint8(4) === VERSION && v.getUint8(5) === HASH_SHA256_16,
    bad,
    'unsupported chunk index version or hash',
  )
  check(v.getUint16(6, true) === 0, bad, 'reserved chunk index bytes must be zero')
  const n = v.getUint32(20, true)
  check(bytes.length === HEADER + n * ENTRY + 4, bad, `length ${bytes.length} does not fit ${n} chunks`)
  check(
    v.getUint32(bytes.length - 4, true) === crc32c(bytes.subarray(0, bytes.length - 4)),
    bad,
    'chunk index checksum mismatch',
  )
  const chunker = validateChunker({
    minSize: v.getUint32(8, true),
    avgSize: v.getUint32(12, true),
    maxSize: v.getUint32(16, true),
  })
  const totalLength = v.getUint32(24, true) + v.getUint32(28, true) * 2 ** 32
  check(Number.isSafeInteger(totalLength), bad, 'totalLength too large')
  const chunks: ChunkEntry[] = []
  let offset = 0
  for (let i = 0, at = HEADER; i < n; i++, at += ENTRY) {
    const length = v.getUint32(at, true)
    check(length >= 1 && length <= chunker.maxSize, bad, `chunk ${i} has length ${length}`)
    chunks.push({ offset, length, hash: toHex(bytes.subarray(at + 4, at + 4 + HASH_BYTES)) })
    offset += length
  }
  check(offset === totalLength, bad, 'chunk lengths do not add up to totalLength')
  return { chunker, totalLength, chunks }
}
