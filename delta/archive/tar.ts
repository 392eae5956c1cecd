/**
 * Tar entry enumeration (ustar, pax extended headers, GNU long names). Only what matching needs:
 * where each entry's bytes live and what it is called. Meta entries (pax 'x', GNU 'L'/'K') are folded
 * into the entry they describe so an entry's byte range covers everything that belongs to it.
 */
import { check } from '../errors.ts'

const BLOCK = 512

export interface TarEntry {
  path: string
  type: string
  /** Start of the first header block belonging to this entry (including pax / GNU long-name blocks). */
  headerOffset: number
  dataOffset: number
  size: number
  /** dataOffset + size rounded up to the next block: where the next entry starts. */
  end: number
}

export interface TarFile {
  entries: TarEntry[]
  /** Where the end-of-archive marker (or EOF) begins. */
  end: number
}

const utf8 = new TextDecoder('utf-8')

function cString(b: Uint8Array, at: number, len: number): string {
  let end = at
  while (end < at + len && b[end] !== 0) end++
  return utf8.decode(b.subarray(at, end))
}

function parseNumber(b: Uint8Array, at: number, len: number): number {
  // GNU base-256: high bit of the first byte set; used for sizes >= 8 GiB.
  if (b[at]! & 0x80) {
    check((b[at]! & 0x40) === 0, 'tar-header', 'negative base-256 tar number')
    let v = b[at]! & 0x3f
    for (let i = 1; i < len; i++) {
      v = v * 256 + b[at + i]!
      check(v <= Number.MAX_SAFE_INTEGER, 'tar-header', 'tar number too large')
    }
    return v
  }
  let v = 0
  let i = at
  while (i < at + len && (b[i] === 0x20 || b[i] === 0)) i++
  for (; i < at + len; i++) {
    const c = b[i]!
    if (c === 0 || c === 0x20) break
    check(c >= 0x30 && c <= 0x37, 'tar-header', 'bad octal digit in tar header')
    v = v * 8 + (c - 0x30)
  }
  return v
}

function checksumOk(b: Uint8Array, at: number): boolean {
  let sum = 0
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : b[at + i]!
  return sum === parseNumber(b, at + 148, 8)
}

function isZeroBlock(b: Uint8Array, at: number): boolean {
  for (let i = at; i < at + BLOCK; i++) if (b[i] !== 0) return false
  return true
}

/** Looks like a ustar/GNU tar: the magic at 257 plus a valid first-header checksum. */
export function looksLikeTar(b: Uint8Array): boolean {
  if (b.length < BLOCK) return false
  const magic = String.fromCharCode(...b.subarray(257, 262))
  return magic === 'ustar' && checksumOk(b, 0)
}

function paxPath(data: Uint8Array): string | null {
  // Records are "<len> <key>=<value>\n"; the length counts the whole record.
  let pos = 0
  let path: string | null = null
  while (pos < data.length) {
    let sp = pos
    while (sp < data.length && data[sp] !== 0x20) sp++
    const len = Number(utf8.decode(data.subarray(pos, sp)))
    check(Number.isInteger(len) && len > sp - pos && pos + len <= data.length, 'tar-pax', 'bad pax record')
    const record = utf8.decode(data.subarray(sp + 1, pos + len - 1))
    const eq = record.indexOf('=')
    if (eq > 0 && record.slice(0, eq) === 'path') path = record.slice(eq + 1)
    pos += len
  }
  return path
}

export function parseTar(b: Uint8Array): TarFile {
  const entries: TarEntry[] = []
  let pos = 0
  let pendingStart = -1
  let longName: string | null = null
  while (pos + BLOCK <= b.length) {
    if (isZeroBlock(b, pos)) return { entries, end: pos }
    check(checksumOk(b, pos), 'tar-header', `bad tar header checksum at ${pos}`)
    const type = String.fromCharCode(b[pos + 156]! || 0x30)
    const size = parseNumber(b, pos + 124, 12)
    const dataOffset = pos + BLOCK
    const end = dataOffset + Math.ceil(size / BLOCK) * BLOCK
    check(dataOffset + size <= b.length, 'tar-truncated', 'tar entry data runs past the end')
    if (pendingStart < 0) pendingStart = pos
    const data = b.subarray(dataOffset, dataOffset + size)
    if (type === 'x' || type === 'L') {
      const name = type === 'x' ? paxPath(data) : cString(data, 0, data.length)
      if (name !== null) longName = name
    } else if (type !== 'g' && type !== 'K') {
      let path = longName
      if (path === null) {
        const prefix = String.fromCharCode(...b.subarray(pos + 257, pos + 262)) === 'ustar'
        const pre = prefix ? cString(b, pos + 345, 155) : ''
        const name = cString(b, pos, 100)
        path = pre ? `${pre}/${name}` : name
      }
      entries.push({ path, type, headerOffset: pendingStart, dataOffset, size, end: Math.min(end, b.length) })
      pendingStart = -1
      longName = null
    }
    pos = Math.min(end, b.length)
  }
  return { entries, end: pos }
}
