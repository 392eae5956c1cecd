import { check } from '../errors.ts'
import { E, NeedMore } from './errors.ts'
import type { ResolvedLimits } from './limits.ts'
import type { Cursor } from './varint.ts'
import { readByte, readVarint } from './varint.ts'

export const MAGIC = [0xd6, 0xc3, 0xc4, 0x00] as const

export const VCD_DECOMPRESS = 0x01
export const VCD_CODETABLE = 0x02
export const VCD_APPHEADER = 0x04 // xdelta3 extension, widely emitted

export const VCD_SOURCE = 0x01
export const VCD_TARGET = 0x02
export const VCD_ADLER32 = 0x04 // xdelta3 extension

export interface FileHeader {
  /** Raw custom code table data (near size, same size, embedded delta), when VCD_CODETABLE is set. */
  codeTableData: Uint8Array | undefined
  appHeader: Uint8Array | undefined
}

export interface WindowHeader {
  indicator: number
  sourceLength: number
  sourcePosition: number
  deltaLength: number
}

function need(c: Cursor, n: number, what: string, streaming: boolean): void {
  if (c.end - c.pos >= n) return
  if (streaming) throw new NeedMore(c.pos + n)
  check(false, E.truncated, `vcdiff: input ends inside ${what}`)
}

/** Parses the file header (RFC 3284 section 4.1). Lengths are checked against limits before reading. */
export function parseFileHeader(c: Cursor, limits: ResolvedLimits, streaming: boolean): FileHeader {
  need(c, 5, 'file header', streaming)
  for (let i = 0; i < 4; i++) {
    check(c.buf[c.pos + i] === MAGIC[i], E.magic, 'vcdiff: not a VCDIFF file (bad magic or version)')
  }
  c.pos += 4
  const ind = readByte(c, 'header indicator')
  check((ind & ~0x07) === 0, E.unsupported, `vcdiff: unknown header indicator bits 0x${ind.toString(16)}`)
  check(
    (ind & VCD_DECOMPRESS) === 0,
    E.unsupported,
    'vcdiff: secondary compression (VCD_DECOMPRESS) is not supported; encode with xdelta3 -S none',
  )
  let codeTableData: Uint8Array | undefined
  let appHeader: Uint8Array | undefined
  if (ind & VCD_CODETABLE) codeTableData = readBlock(c, limits, streaming, 'custom code table')
  if (ind & VCD_APPHEADER) appHeader = readBlock(c, limits, streaming, 'application header')
  return { codeTableData, appHeader }
}

function readBlock(c: Cursor, limits: ResolvedLimits, streaming: boolean, what: string): Uint8Array {
  const len = readVarint(c, `${what} length`, streaming)
  check(len <= limits.maxHeaderDataSize, E.limit, `vcdiff: ${what} of ${len} bytes exceeds the limit`)
  need(c, len, what, streaming)
  const out = c.buf.slice(c.pos, c.pos + len)
  c.pos += len
  return out
}

/** Parses a window's leading fields, up to and including the delta encoding length. */
export function parseWindowHeader(c: Cursor, limits: ResolvedLimits, streaming: boolean): WindowHeader {
  const indicator = readByte(c, 'window indicator', streaming)
  check((indicator & ~0x07) === 0, E.window, `vcdiff: unknown window indicator 0x${indicator.toString(16)}`)
  check(
    (indicator & (VCD_SOURCE | VCD_TARGET)) !== (VCD_SOURCE | VCD_TARGET),
    E.window,
    'vcdiff: window sets both VCD_SOURCE and VCD_TARGET',
  )
  let sourceLength = 0
  let sourcePosition = 0
  if (indicator & (VCD_SOURCE | VCD_TARGET)) {
    sourceLength = readVarint(c, 'source segment size', streaming)
    sourcePosition = readVarint(c, 'source segment position', streaming)
  }
  const deltaLength = readVarint(c, 'delta encoding length', streaming)
  check(
    deltaLength <= limits.maxDeltaWindowSize,
    E.limit,
    `vcdiff: encoded window of ${deltaLength} bytes exceeds the limit`,
  )
  return { indicator, sourceLength, sourcePosition, deltaLength }
}

/** What a caller may want from the file header without decoding: xdelta3 stores file names here. */
export interface VcdiffHeaderInfo {
  appHeader: Uint8Array | undefined
  customCodeTable: boolean
  /** Byte offset of the first window. */
  headerLength: number
}

export function readHeaderInfo(delta: Uint8Array, limits: ResolvedLimits): VcdiffHeaderInfo {
  const c = { buf: delta, pos: 0, end: delta.length }
  const h = parseFileHeader(c, limits, false)
  return { appHeader: h.appHeader, customCodeTable: h.codeTableData !== undefined, headerLength: c.pos }
}
