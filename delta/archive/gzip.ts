/**
 * gzip (RFC 1952) member parsing. We keep every header byte verbatim (the rebuild must reproduce
 * them exactly) but also decode the fields so callers and tests can see what the producer wrote.
 */
import { check } from '../errors.ts'
import { ByteReader } from './bytes.ts'
import { crc32 } from './crc32.ts'
import { type Inflater, inflateRawPrefix } from './inflate.ts'
import { ARCHIVE_TOO_LARGE } from './limits.ts'

const FTEXT = 1
const FHCRC = 2
const FEXTRA = 4
const FNAME = 8
const FCOMMENT = 16
const RESERVED = 0xe0

export interface GzipHeader {
  flags: number
  mtime: number
  xfl: number
  os: number
  text: boolean
  extra: Uint8Array | null
  name: Uint8Array | null
  comment: Uint8Array | null
  headerCrc: number | null
}

export interface GzipMember {
  header: GzipHeader
  /** Offsets in the file: header at [start, dataStart), deflate at [dataStart, dataEnd), trailer 8 bytes. */
  start: number
  dataStart: number
  dataEnd: number
  end: number
  content: Uint8Array
}

export interface GzipFile {
  members: GzipMember[]
  /** Bytes after the last member (often zero padding from tape-era tools); kept verbatim. */
  trailingStart: number
}

export function isGzip(bytes: Uint8Array): boolean {
  return bytes.length >= 18 && bytes[0] === 0x1f && bytes[1] === 0x8b && bytes[2] === 8
}

function zeroTerminated(r: ByteReader, what: string): Uint8Array {
  const start = r.pos
  while (r.u8(what) !== 0) {
    /* scan to the terminator */
  }
  return r.bytes.subarray(start, r.pos - 1)
}

export function parseGzipHeader(r: ByteReader): GzipHeader {
  const start = r.pos
  check(r.u8('magic') === 0x1f && r.u8('magic') === 0x8b, 'gzip-header', 'not a gzip member')
  check(r.u8('method') === 8, 'gzip-header', 'gzip compression method is not deflate')
  const flags = r.u8('flags')
  check((flags & RESERVED) === 0, 'gzip-header', 'reserved gzip flag bits set')
  const mtime = r.u32('mtime')
  const xfl = r.u8('xfl')
  const os = r.u8('os')
  const extra = flags & FEXTRA ? r.take(r.u16('xlen'), 'extra field') : null
  const name = flags & FNAME ? zeroTerminated(r, 'file name') : null
  const comment = flags & FCOMMENT ? zeroTerminated(r, 'comment') : null
  let headerCrc: number | null = null
  if (flags & FHCRC) {
    const expected = crc32(r.bytes.subarray(start, r.pos)) & 0xffff
    headerCrc = r.u16('header crc')
    check(headerCrc === expected, 'gzip-header', 'gzip header CRC16 mismatch')
  }
  return { flags, mtime, xfl, os, text: (flags & FTEXT) !== 0, extra, name, comment, headerCrc }
}

/**
 * Parses every member (concatenated gzip is legal and `cat a.gz b.gz` is common); stops at the first
 * byte that does not start a member and reports the rest as trailing data.
 */
export function parseGzip(
  bytes: Uint8Array,
  maxContent: number,
  inflate: Inflater = inflateRawPrefix,
): GzipFile {
  check(isGzip(bytes), 'gzip-header', 'not a gzip file')
  const members: GzipMember[] = []
  let pos = 0
  let budget = maxContent
  while (pos < bytes.length && (members.length === 0 || isGzip(bytes.subarray(pos)))) {
    const r = new ByteReader(bytes, 'gzip-truncated', pos)
    const header = parseGzipHeader(r)
    const dataStart = r.pos
    // Past the budget is the archive being too big for the caller's limit, not a damaged member.
    const { data, consumed } = inflate(bytes.subarray(dataStart), budget, 'gzip-deflate', ARCHIVE_TOO_LARGE)
    budget -= data.length
    const dataEnd = dataStart + consumed
    r.pos = dataEnd
    const crc = r.u32('trailer crc')
    const isize = r.u32('trailer size')
    check(crc === crc32(data), 'gzip-trailer', 'gzip CRC32 does not match the content')
    check(isize === data.length % 2 ** 32, 'gzip-trailer', 'gzip ISIZE does not match the content')
    members.push({ header, start: pos, dataStart, dataEnd, end: r.pos, content: data })
    pos = r.pos
  }
  return { members, trailingStart: pos }
}
