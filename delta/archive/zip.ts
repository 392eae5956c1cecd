/**
 * Zip structure: the central directory is authoritative (local headers may carry zero sizes when a
 * data descriptor follows), so entries come from it and are then located through their local headers.
 * Only the layout is decoded; every header byte stays verbatim in the rebuilt file.
 */
import { check, DeltaFormatError } from '../errors.ts'
import { ByteReader, readU32 } from './bytes.ts'

const EOCD_SIG = 0x06054b50
const CDH_SIG = 0x02014b50
const LFH_SIG = 0x04034b50
const ZIP64_LOCATOR_SIG = 0x07064b50

export const METHOD_STORED = 0
export const METHOD_DEFLATE = 8

export interface ZipEntry {
  path: string
  method: number
  flags: number
  crc: number
  compressedSize: number
  uncompressedSize: number
  localOffset: number
  dataOffset: number
}

export interface ZipFile {
  /** Sorted by position in the file. */
  entries: ZipEntry[]
  centralDirectoryOffset: number
}

const utf8 = new TextDecoder('utf-8')

export function isZip(bytes: Uint8Array): boolean {
  return bytes.length >= 22 && (readU32(bytes, 0) === LFH_SIG || readU32(bytes, 0) === EOCD_SIG)
}

function findEocd(b: Uint8Array): number {
  // The comment (at most 65535 bytes) is the only variable-length thing after the EOCD record.
  const lowest = Math.max(0, b.length - 22 - 0xffff)
  for (let at = b.length - 22; at >= lowest; at--) {
    if (readU32(b, at) === EOCD_SIG && at + 22 + (b[at + 20]! | (b[at + 21]! << 8)) === b.length) return at
  }
  throw new DeltaFormatError('zip-eocd', 'no end-of-central-directory record')
}

export function parseZip(b: Uint8Array): ZipFile {
  const eocd = findEocd(b)
  check(eocd < 20 || readU32(b, eocd - 20) !== ZIP64_LOCATOR_SIG, 'zip-unsupported', 'zip64 is not supported')
  const r = new ByteReader(b, 'zip-eocd', eocd + 4)
  const disk = r.u16()
  const cdDisk = r.u16()
  const onDisk = r.u16()
  const count = r.u16()
  const cdSize = r.u32()
  const cdOffset = r.u32()
  check(disk === 0 && cdDisk === 0 && onDisk === count, 'zip-unsupported', 'multi-disk zip is not supported')
  check(cdOffset + cdSize <= eocd, 'zip-eocd', 'central directory overlaps the end record')
  const cd = new ByteReader(b, 'zip-central', cdOffset)
  const entries: ZipEntry[] = []
  for (let i = 0; i < count; i++) {
    check(cd.u32('central header') === CDH_SIG, 'zip-central', 'bad central directory signature')
    cd.take(4, 'versions')
    const flags = cd.u16()
    const method = cd.u16()
    cd.take(4, 'time')
    const crc = cd.u32()
    const compressedSize = cd.u32()
    const uncompressedSize = cd.u32()
    const nameLen = cd.u16()
    const extraLen = cd.u16()
    const commentLen = cd.u16()
    cd.take(8, 'attributes')
    const localOffset = cd.u32()
    const path = utf8.decode(cd.take(nameLen, 'name'))
    cd.take(extraLen + commentLen, 'extra')
    check(
      compressedSize !== 0xffffffff && uncompressedSize !== 0xffffffff && localOffset !== 0xffffffff,
      'zip-unsupported',
      'zip64 entry is not supported',
    )
    const local = new ByteReader(b, 'zip-local', localOffset)
    check(local.u32('local header') === LFH_SIG, 'zip-local', `bad local header signature for ${path}`)
    local.take(22, 'local header')
    const localName = local.u16()
    const localExtra = local.u16()
    const dataOffset = localOffset + 30 + localName + localExtra
    check(
      dataOffset + compressedSize <= cdOffset,
      'zip-local',
      `entry ${path} runs into the central directory`,
    )
    entries.push({ path, method, flags, crc, compressedSize, uncompressedSize, localOffset, dataOffset })
  }
  entries.sort((a, b) => a.localOffset - b.localOffset)
  for (let i = 1; i < entries.length; i++) {
    const prev = entries[i - 1]!
    check(
      prev.dataOffset + prev.compressedSize <= entries[i]!.localOffset,
      'zip-layout',
      'overlapping zip entries',
    )
  }
  return { entries, centralDirectoryOffset: cdOffset }
}
