/**
 * Decoding a dynamic block's header (HLIT, HDIST, HCLEN, the code-length code, the run-length coded
 * code lengths) from any bit range: the parse reads it from the stream, the encoder from a
 * HeaderBits it was given. One decoder for both means both accept exactly the same headers, namely
 * those zlib's inflate accepts: the code-length code complete; the literal/length and distance
 * codes not over-subscribed and complete, except a single code of one bit (and a distance code with
 * no codes at all); END_BLOCK present; at most 286 and 30 lengths.
 */
import { build, type Table } from '../approx/raw-inflate.ts'
import { DeltaFormatError } from '../errors.ts'
import { BL_CODES, CLEN_ORDER, D_CODES, L_CODES, MAX_BITS } from './tables.ts'

export interface DecodedHeader {
  /** Bit position just after the header. */
  end: number
  /** Literal/length lengths in lens[0, nlen), distance lengths in lens[nlen, nlen + ndist). */
  nlen: number
  ndist: number
}

const clenLens = new Uint8Array(BL_CODES)
const clenTable: Table = { table: new Int32Array(1 << 7), bits: 0, sub: 0 }
const lengthCount = new Int32Array(MAX_BITS + 1)

function invalid(what: string, message: string): never {
  throw new DeltaFormatError('bad-stream', `${what} stream is not valid DEFLATE: ${message}`)
}

function truncated(what: string): never {
  throw new DeltaFormatError('bad-stream', `${what} stream ends early (truncated DEFLATE)`)
}

/** At least 17 bits of `bytes` from bit `p` on, zeros past the end. */
function peek(bytes: Uint8Array, p: number): number {
  const i = p >>> 3
  return ((bytes[i] ?? 0) | ((bytes[i + 1] ?? 0) << 8) | ((bytes[i + 2] ?? 0) << 16)) >>> (p & 7)
}

/**
 * Kraft check of lens[start, start + n): the unused fraction of the code space in units of
 * 2^-15 (negative: over-subscribed), and the longest length via maxLength.
 */
let maxLength = 0
function codeSpaceLeft(lens: Uint8Array, start: number, n: number): number {
  lengthCount.fill(0)
  maxLength = 0
  for (let i = 0; i < n; i++) {
    const len = lens[start + i]!
    lengthCount[len]!++
    if (len > maxLength) maxLength = len
  }
  let left = 1
  for (let len = 1; len <= MAX_BITS; len++) {
    left = (left << 1) - lengthCount[len]!
    if (left < 0) return -1
  }
  return left
}

/** zlib's rule for literal/length and distance codes (inflate_table's LENS/DISTS checks). */
function checkCode(lens: Uint8Array, start: number, n: number, what: string, name: string): void {
  const left = codeSpaceLeft(lens, start, n)
  if (maxLength === 0) return // no codes: only an error if a symbol is used
  if (left < 0) invalid(what, `over-subscribed ${name} code`)
  if (left > 0 && maxLength !== 1) invalid(what, `incomplete ${name} code`)
}

/**
 * Decodes the header in bits [start, limit) of `bytes` (start: the bit after the block type), code
 * lengths into lens (≥ 316 entries). Throws DeltaFormatError bad-stream when it is invalid or does
 * not fit before `limit`.
 */
export function decodeHeader(
  bytes: Uint8Array,
  start: number,
  limit: number,
  lens: Uint8Array,
  what: string,
): DecodedHeader {
  let p = start
  if (p + 14 > limit) truncated(what)
  const counts = peek(bytes, p)
  p += 14
  const nlen = (counts & 31) + 257
  const ndist = ((counts >>> 5) & 31) + 1
  const ncode = ((counts >>> 10) & 15) + 4
  if (nlen > L_CODES || ndist > D_CODES) invalid(what, 'too many length or distance symbols')
  if (p + 3 * ncode > limit) truncated(what)
  clenLens.fill(0)
  for (let i = 0; i < ncode; i++) {
    clenLens[CLEN_ORDER[i]!] = peek(bytes, p) & 7
    p += 3
  }
  if (codeSpaceLeft(clenLens, 0, BL_CODES) !== 0) invalid(what, 'invalid code lengths set')
  build(clenLens, 0, BL_CODES, clenTable)
  const table = clenTable.table
  const mask = (1 << clenTable.bits) - 1
  const total = nlen + ndist
  for (let i = 0; i < total; ) {
    const v = peek(bytes, p)
    const entry = table[v & mask]!
    const len = entry & 15
    if (p + len > limit) truncated(what)
    p += len
    const sym = entry >>> 4
    if (sym < 16) {
      lens[i++] = sym
      continue
    }
    const extraBits = sym === 16 ? 2 : sym === 17 ? 3 : 7
    if (p + extraBits > limit) truncated(what)
    const extra = (v >>> len) & ((1 << extraBits) - 1)
    p += extraBits
    let value = 0
    let repeat: number
    if (sym === 16) {
      if (i === 0) invalid(what, 'repeat with no previous length')
      value = lens[i - 1]!
      repeat = 3 + extra
    } else repeat = (sym === 17 ? 3 : 11) + extra
    if (i + repeat > total) invalid(what, 'code lengths repeat past the end')
    lens.fill(value, i, i + repeat)
    i += repeat
  }
  if (lens[256] === 0) invalid(what, 'missing end-of-block code')
  checkCode(lens, 0, nlen, what, 'literal/length')
  checkCode(lens, nlen, ndist, what, 'distance')
  return { end: p, nlen, ndist }
}
