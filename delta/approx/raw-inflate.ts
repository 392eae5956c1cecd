/**
 * A raw DEFLATE (RFC 1951) decoder into a caller-sized buffer, used for the DPAX streams instead of
 * pako's inflate because a delta is applied once per process, so the decoder always runs cold: pako
 * decodes in one very large function that V8 optimises late (the esbuild block's three streams took
 * ≈30 ms in a fresh process against ≈5 ms warm), while the hot loop here is a small function of its
 * own that is optimised early (≈15 ms cold, median of fresh processes on a shared machine), and its
 * tables are cheap to rebuild for each of pako's many small blocks.
 *
 * Decoding uses a two-level lookup table per Huffman code (see Table), so a symbol costs one lookup,
 * two for the rare codes longer than ten bits. Every length and distance is checked against the
 * output buffer, which is never grown: hostile input costs at most the declared output. Pure JS, so
 * it runs the same in Node and workerd; raw-inflate.test.ts checks it against zlib.
 */
import {
  CLEN_ORDER,
  DIST_BASE,
  DIST_EXTRA,
  FIXED_LIT_LENS,
  LENGTH_BASE,
  LENGTH_EXTRA,
  MAX_BITS,
} from '../deflate/tables.ts'
import { DeltaFormatError } from '../errors.ts'

/** Bits the first-level table is indexed by; longer codes continue in a second-level table. */
export const ROOT_BITS = 10

/**
 * A Huffman decoding table. `table[next bits & ((1 << bits) - 1)]` is symbol << 4 | code length, 0 for
 * no code, or (for codes longer than ROOT_BITS) second-level offset << 4 with a zero length: the entry
 * is then `table[offset + ((next bits >>> ROOT_BITS) & sub)]`. Two levels keep building a table cheap
 * (about 1 Ki entries instead of up to 32 Ki per code, and pako's encoder starts a new block every few
 * thousand symbols, each with new codes).
 */
export interface Table {
  table: Int32Array
  bits: number
  sub: number
}

/** Scratch shared by every decode (decoding is synchronous, so one set is enough). */
const litTable: Table = { table: new Int32Array((1 << ROOT_BITS) + (1 << MAX_BITS)), bits: 0, sub: 0 }
const distTable: Table = { table: new Int32Array((1 << ROOT_BITS) + (1 << MAX_BITS)), bits: 0, sub: 0 }
const clenTable: Table = { table: new Int32Array(1 << 7), bits: 0, sub: 0 }
/** Second-level offset per first-level index while building (0 = none yet). */
const subOffset = new Int32Array(1 << ROOT_BITS)
const lengths = new Uint8Array(288 + 32)
const counts = new Uint16Array(MAX_BITS + 1)
const nextCode = new Uint16Array(MAX_BITS + 1)

export const FIXED_LIT: Table = { table: new Int32Array(1 << 9), bits: 0, sub: 0 }
export const FIXED_DIST: Table = { table: new Int32Array(1 << 5), bits: 0, sub: 0 }
build(FIXED_LIT_LENS, 0, 288, FIXED_LIT)
// 30 and 31 are not valid distances, but the fixed code assigns them lengths; decode rejects them.
build(new Uint8Array(32).fill(5), 0, 32, FIXED_DIST)

function fail(what: string, message: string): never {
  throw new DeltaFormatError('bad-stream', `${what} stream is not valid DEFLATE: ${message}`)
}

/**
 * Builds the canonical Huffman table for code lengths lengths[start, start + n) (also used by
 * delta/deflate/parse.ts, which decodes with these tables and constants). Over-subscribed
 * codes are rejected; incomplete ones are allowed (their unused entries decode as errors).
 */
export function build(lens: Uint8Array, start: number, n: number, out: Table): boolean {
  counts.fill(0)
  let maxLen = 0
  for (let i = 0; i < n; i++) {
    const len = lens[start + i]!
    counts[len]!++
    if (len > maxLen) maxLen = len
  }
  counts[0] = 0
  let left = 1
  let code = 0
  for (let len = 1; len <= MAX_BITS; len++) {
    left = (left << 1) - counts[len]!
    if (left < 0) return false
    code = (code + counts[len - 1]!) << 1
    nextCode[len] = code
  }
  const root = Math.min(maxLen, ROOT_BITS)
  const rootSize = 1 << root
  // Every second-level table spans the longest code's remaining bits (at most 32 entries).
  const subBits = maxLen - root
  const subSize = 1 << subBits
  const table = out.table
  table.fill(0, 0, rootSize)
  if (subBits > 0) subOffset.fill(0)
  let used = rootSize
  for (let sym = 0; sym < n; sym++) {
    const len = lens[start + sym]!
    if (len === 0) continue
    let c = nextCode[len]!++
    // Codes are sent most significant bit first; the table is indexed by bits in arrival order.
    let rev = 0
    for (let k = 0; k < len; k++) {
      rev = (rev << 1) | (c & 1)
      c >>>= 1
    }
    const entry = (sym << 4) | len
    if (len <= root) {
      for (let i = rev; i < rootSize; i += 1 << len) table[i] = entry
      continue
    }
    const first = rev & (rootSize - 1)
    let at = subOffset[first]!
    if (at === 0) {
      at = used
      used += subSize
      subOffset[first] = at
      table.fill(0, at, at + subSize)
      table[first] = at << 4
    }
    for (let i = rev >>> root; i < subSize; i += 1 << (len - root)) table[at + i] = entry
  }
  out.bits = root
  out.sub = subSize - 1
  return true
}

/** Bit reader state, module-level so the decode functions share it without allocating. */
let src: Uint8Array = new Uint8Array(0)
let pos = 0
let bitBuf = 0
let bitCount = 0

/**
 * Tops the bit buffer up to at least 23 bits, or as many as the input still has. Bits 30 and 31 are
 * never filled, so the buffer stays a small integer: `>>>` never turns it into a double, and code
 * that V8 has not optimised yet does not allocate a heap number per symbol.
 */
function refill(): void {
  while (bitCount <= 22 && pos < src.length) {
    bitBuf |= src[pos++]! << bitCount
    bitCount += 8
  }
}

function bits(n: number, what: string): number {
  if (bitCount < n) {
    refill()
    if (bitCount < n)
      throw new DeltaFormatError('bad-stream', `${what} stream ends early (truncated DEFLATE)`)
  }
  const v = bitBuf & ((1 << n) - 1)
  bitBuf >>>= n
  bitCount -= n
  return v
}

/**
 * Inflates the raw DEFLATE stream `input` into `out`, which must end exactly where the stream does.
 * Throws DeltaFormatError (code bad-stream) when the stream is malformed, too short or too long.
 */
export function inflateRawInto(input: Uint8Array, out: Uint8Array, what: string): void {
  src = input
  pos = 0
  bitBuf = 0
  bitCount = 0
  let op = 0
  try {
    for (;;) {
      const final = bits(1, what)
      const type = bits(2, what)
      if (type === 0) op = storedBlock(out, op, what)
      else if (type === 1) op = codes(out, op, FIXED_LIT, FIXED_DIST, what)
      else if (type === 2) {
        readDynamic(what)
        op = codes(out, op, litTable, distTable, what)
      } else fail(what, 'reserved block type')
      if (final) break
    }
    // Whole bytes still in the bit buffer were read ahead, not consumed.
    if (pos - (bitCount >>> 3) !== src.length) {
      throw new DeltaFormatError('bad-stream', `${what} stream has bytes after its end`)
    }
    if (op !== out.length) {
      throw new DeltaFormatError('bad-stream', `${what} stream inflates to ${op}, expected ${out.length}`)
    }
  } finally {
    src = new Uint8Array(0)
  }
}

function storedBlock(out: Uint8Array, op: number, what: string): number {
  // Drop to the byte boundary and hand back whole bytes read ahead.
  bitBuf = 0
  pos -= bitCount >>> 3
  bitCount = 0
  if (pos + 4 > src.length)
    throw new DeltaFormatError('bad-stream', `${what} stream ends early (truncated DEFLATE)`)
  const len = src[pos]! | (src[pos + 1]! << 8)
  const nlen = src[pos + 2]! | (src[pos + 3]! << 8)
  pos += 4
  if ((len ^ 0xffff) !== nlen) fail(what, 'stored block length check fails')
  if (pos + len > src.length)
    throw new DeltaFormatError('bad-stream', `${what} stream ends early (truncated DEFLATE)`)
  if (op + len > out.length) overflow(what)
  out.set(src.subarray(pos, pos + len), op)
  pos += len
  return op + len
}

function overflow(what: string): never {
  throw new DeltaFormatError('bad-stream', `${what} stream inflates past its declared size`)
}

function readDynamic(what: string): void {
  const nlen = bits(5, what) + 257
  const ndist = bits(5, what) + 1
  const ncode = bits(4, what) + 4
  if (nlen > 286 || ndist > 30) fail(what, 'too many length or distance symbols')
  lengths.fill(0, 0, 19)
  for (let i = 0; i < ncode; i++) lengths[CLEN_ORDER[i]!] = bits(3, what)
  if (!build(lengths, 0, 19, clenTable)) fail(what, 'invalid code lengths set')
  const ct = clenTable.table
  const cmask = (1 << clenTable.bits) - 1
  const total = nlen + ndist
  for (let i = 0; i < total; ) {
    if (bitCount < 7) refill()
    const entry = ct[bitBuf & cmask]!
    const len = entry & 15
    if (len === 0 || len > bitCount) {
      if (len > bitCount)
        throw new DeltaFormatError('bad-stream', `${what} stream ends early (truncated DEFLATE)`)
      fail(what, 'invalid code lengths code')
    }
    bitBuf >>>= len
    bitCount -= len
    const sym = entry >>> 4
    if (sym < 16) {
      lengths[i++] = sym
      continue
    }
    let value = 0
    let repeat: number
    if (sym === 16) {
      if (i === 0) fail(what, 'repeat with no previous length')
      value = lengths[i - 1]!
      repeat = 3 + bits(2, what)
    } else if (sym === 17) repeat = 3 + bits(3, what)
    else repeat = 11 + bits(7, what)
    if (i + repeat > total) fail(what, 'code lengths repeat past the end')
    lengths.fill(value, i, i + repeat)
    i += repeat
  }
  if (lengths[256] === 0) fail(what, 'missing end-of-block code')
  if (!build(lengths, 0, nlen, litTable)) fail(what, 'invalid literal/length code')
  if (!build(lengths, nlen, ndist, distTable)) fail(what, 'invalid distance code')
}

/** Decodes one compressed block's symbols into `out` from `op`; returns the new output position. */
function codes(out: Uint8Array, op: number, lit: Table, dist: Table, what: string): number {
  const lt = lit.table
  const lmask = (1 << lit.bits) - 1
  const lsub = lit.sub
  const dt = dist.table
  const dmask = (1 << dist.bits) - 1
  const dsub = dist.sub
  const end = out.length
  const input = src
  const inEnd = input.length
  let p = pos
  let buf = bitBuf
  let cnt = bitCount
  for (;;) {
    // 23+ bits cover a literal/length code (≤ 15) and its extra bits (≤ 5).
    while (cnt <= 22 && p < inEnd) {
      buf |= input[p++]! << cnt
      cnt += 8
    }
    let entry = lt[buf & lmask]!
    if ((entry & 15) === 0 && entry !== 0) entry = lt[(entry >>> 4) + ((buf >>> ROOT_BITS) & lsub)]!
    let len = entry & 15
    if (len === 0 || len > cnt) break
    buf >>>= len
    cnt -= len
    let sym = entry >>> 4
    if (sym < 256) {
      if (op >= end) overflow(what)
      out[op++] = sym
      continue
    }
    if (sym === 256) {
      pos = p
      bitBuf = buf
      bitCount = cnt
      return op
    }
    sym -= 257
    if (sym >= 29) {
      pos = p
      fail(what, 'invalid literal/length symbol')
    }
    let extra = LENGTH_EXTRA[sym]!
    if (extra > cnt) break
    const length = LENGTH_BASE[sym]! + (buf & ((1 << extra) - 1))
    buf >>>= extra
    cnt -= extra
    while (cnt <= 22 && p < inEnd) {
      buf |= input[p++]! << cnt
      cnt += 8
    }
    entry = dt[buf & dmask]!
    if ((entry & 15) === 0 && entry !== 0) entry = dt[(entry >>> 4) + ((buf >>> ROOT_BITS) & dsub)]!
    len = entry & 15
    if (len === 0 || len > cnt) break
    buf >>>= len
    cnt -= len
    sym = entry >>> 4
    if (sym >= 30) fail(what, 'invalid distance symbol')
    extra = DIST_EXTRA[sym]!
    if (extra > cnt) {
      while (cnt <= 22 && p < inEnd) {
        buf |= input[p++]! << cnt
        cnt += 8
      }
      if (extra > cnt) break
    }
    const distance = DIST_BASE[sym]! + (buf & ((1 << extra) - 1))
    buf >>>= extra
    cnt -= extra
    if (distance > op) fail(what, 'distance too far back')
    if (op + length > end) overflow(what)
    // Byte by byte: overlapping copies repeat the last `distance` bytes, and at most 258 bytes a
    // call to copyWithin would not pay for itself (nor would its first use mid-stream, which costs
    // an on-stack deoptimisation of this loop).
    let from = op - distance
    const stop = op + length
    while (op < stop) out[op++] = out[from++]!
  }
  // Every way out of the loop above except the end-of-block code: a code that is missing from the
  // table or bits that ran out.
  pos = p
  bitBuf = buf
  bitCount = cnt
  if (p >= inEnd) throw new DeltaFormatError('bad-stream', `${what} stream ends early (truncated DEFLATE)`)
  return fail(what, 'invalid code')
}
