/**
 * Takes a raw DEFLATE stream apart into its tokens and blocks (see parse-types.ts), decoding it on
 * the way. The decoder is raw-inflate.ts's design (two-level tables built by its `build`, a small
 * hot function per compressed block, module-level bit state) plus a token per literal or match.
 *
 * Contract (as inflateRawInto's): the stream must inflate to exactly `expectedSize` bytes and end
 * exactly at the end of `raw`; anything else throws DeltaFormatError 'bad-stream', and no buffer
 * grows past what `expectedSize` bounds (the content, and at most one token per content byte).
 *
 * The parse is only useful if encodeDeflate(parse) gives back `raw` bit for bit, so it also rejects
 * (DeltaFormatError 'bad-stream', message "… cannot be re-encoded: …") valid streams whose bits a
 * token list does not determine:
 * - length 258 sent as symbol 284 with extra bits 31 (the encoder, like every deflater, uses 285);
 * - nonzero bits skipped to reach a byte boundary, before a stored block's LEN or after the final
 *   block (the encoder pads with zeros);
 * - dynamic headers that zlib's inflate would reject although RFC 1951 allows them (incomplete
 *   codes), see header.ts.
 * Anything else the encoder might still spell differently shows up as different bytes, which the
 * publisher checks before trusting a parse.
 *
 * A dynamic block keeps its header only when it differs from the header zlib's tree construction
 * gives for the block's tokens (what zlibHeaderFor in encode.ts returns, computed here from the
 * symbol counts gathered while decoding), so parses of zlib, pako and GNU gzip streams carry no
 * headers at all (other deflaters, e.g. fflate, keep most of theirs: about 0.4 % of the stream).
 */
import { build, FIXED_DIST, FIXED_LIT, ROOT_BITS, type Table } from '../approx/raw-inflate.ts'
import { DeltaFormatError } from '../errors.ts'
import { sameBits, sliceBits } from './bits.ts'
import { decodeHeader } from './header.ts'
import { BLOCK_DYNAMIC, BLOCK_FIXED, BLOCK_STORED, type Block, type DeflateParse } from './parse-types.ts'
import { D_CODES, DIST_BASE, DIST_EXTRA, LENGTH_BASE, LENGTH_EXTRA, MAX_BITS } from './tables.ts'
import { dynamicHeaderBits, zlibDynamicCode } from './zlib-trees.ts'

const litTable: Table = { table: new Int32Array((1 << ROOT_BITS) + (1 << MAX_BITS)), bits: 0, sub: 0 }
const distTable: Table = { table: new Int32Array((1 << ROOT_BITS) + (1 << MAX_BITS)), bits: 0, sub: 0 }
const lengths = new Uint8Array(320)
/**
 * Symbol counts of the block being decoded, end-of-block included, for zlib's trees. Counting while
 * decoding costs far less than zlibHeaderFor's second pass over the tokens (≈ 30 ms for 20 MB) and
 * gives the same numbers, since each token has exactly one spelling. Fixed blocks count too (unused;
 * 288 entries because their symbols 286 and 287 decode before being rejected).
 */
const litFreq = new Int32Array(288)
const distFreq = new Int32Array(D_CODES)

const EMPTY = new Uint8Array(0)
const EMPTY_TOKENS = new Uint32Array(0)

/** Bit reader and token output, module-level so the block functions share them without allocating. */
let src: Uint8Array = EMPTY
let pos = 0
let bitBuf = 0
let bitCount = 0
let tokens: Uint32Array = EMPTY_TOKENS
let tokenCount = 0
let tokenLimit = 0

/**
 * parseDeflate, or null when the stream is damaged or uses something a token list cannot express
 * (the callers then keep the stream as it is or expand it another way).
 */
export function tryParseDeflate(
  raw: Uint8Array,
  expectedSize: number,
  what: string,
  dictionary?: Uint8Array,
): DeflateParse | null {
  try {
    return parseDeflate(raw, expectedSize, what, dictionary)
  } catch (err) {
    if (err instanceof DeltaFormatError) return null
    throw err
  }
}

function fail(what: string, message: string): never {
  throw new DeltaFormatError('bad-stream', `${what} stream is not valid DEFLATE: ${message}`)
}

function unrepresentable(what: string, message: string): never {
  throw new DeltaFormatError('bad-stream', `${what} stream cannot be re-encoded: ${message}`)
}

function truncated(what: string): never {
  throw new DeltaFormatError('bad-stream', `${what} stream ends early (truncated DEFLATE)`)
}

/** Set when a parse stops because its output buffer is full (parseDeflatePrefix then grows it). */
let outputFull = false

function overflow(what: string): never {
  outputFull = true
  throw new DeltaFormatError('bad-stream', `${what} stream inflates past its declared size`)
}

function refill(): void {
  while (bitCount <= 22 && pos < src.length) {
    bitBuf |= src[pos++]! << bitCount
    bitCount += 8
  }
}

function bits(n: number, what: string): number {
  if (bitCount < n) {
    refill()
    if (bitCount < n) truncated(what)
  }
  const v = bitBuf & ((1 << n) - 1)
  bitBuf >>>= n
  bitCount -= n
  return v
}

/** Bits consumed so far (whole bytes in the bit buffer were only read ahead). */
function bitPosition(): number {
  return pos * 8 - bitCount
}

/** Restarts the bit reader at bit `p`. */
function seek(p: number): void {
  pos = p >>> 3
  bitBuf = 0
  bitCount = 0
  const shift = p & 7
  if (shift > 0) {
    bitBuf = src[pos++]! >>> shift
    bitCount = 8 - shift
  }
}

/** Skips to the byte boundary; the skipped bits must be zero for the encoder to reproduce them. */
function align(what: string, where: string): void {
  const skip = bitCount & 7
  if ((bitBuf & ((1 << skip) - 1)) !== 0) unrepresentable(what, `nonzero padding bits ${where}`)
  bitBuf >>>= skip
  bitCount -= skip
}

/** A token buffer twice as large (at most one token per content byte), keeping the first `used`. */
function growTokens(used: number): Uint32Array {
  const grown = new Uint32Array(Math.min(tokenLimit, Math.max(1024, tokens.length * 2)))
  grown.set(tokens.subarray(0, used))
  tokens = grown
  return grown
}

/**
 * Decodes the raw DEFLATE stream `raw` (no zlib or gzip wrapper), which must inflate to exactly
 * `expectedSize` bytes, into tokens, blocks and content. Throws DeltaFormatError 'bad-stream' when
 * it is malformed, has the wrong size, or cannot be re-encoded bit for bit (see the module comment).
 * With `dictionary`, the stream was made with it as a preset window (zlib's deflateSetDictionary):
 * back-references may reach into it, and the content is what follows it.
 */
export function parseDeflate(
  raw: Uint8Array,
  expectedSize: number,
  what: string,
  dictionary: Uint8Array = EMPTY,
): DeflateParse {
  return wholeParse(raw, expectedSize, what, dictionary, true)
}

/**
 * parseDeflate without the block list's headers, for callers that keep only the tokens (a spliced
 * gap's deflate, splice.ts): see tokenizeDeflatePrefix.
 */
export function tokenizeDeflate(
  raw: Uint8Array,
  expectedSize: number,
  what: string,
  dictionary: Uint8Array = EMPTY,
): DeflateParse {
  return wholeParse(raw, expectedSize, what, dictionary, false)
}

function wholeParse(
  raw: Uint8Array,
  expectedSize: number,
  what: string,
  dictionary: Uint8Array,
  headers: boolean,
): DeflateParse {
  if (!Number.isSafeInteger(expectedSize) || expectedSize < 0) {
    throw new DeltaFormatError('bad-stream', `${what} stream has an invalid expected size ${expectedSize}`)
  }
  const start = dictionary.length
  const out = new Uint8Array(start + expectedSize)
  out.set(dictionary)
  const { parse, end } = parseInto(raw, out, start, what, false, headers)
  if (end - start !== expectedSize) {
    throw new DeltaFormatError(
      'bad-stream',
      `${what} stream inflates to ${end - start}, expected ${expectedSize}`,
    )
  }
  return parse
}

/**
 * parseDeflate for a stream at the start of `input` whose end and size are unknown (a gzip member
 * before its trailer): parses until the final block and reports the bytes it took, like
 * inflate.ts's inflaters, so one pass gives both the content and the tokens. `sizeHint` (e.g. a gzip
 * trailer's ISIZE) sizes the output; a wrong hint costs a restart with twice the room, up to
 * `maxOutput` (beyond it: DeltaFormatError).
 */
export function parseDeflatePrefix(
  input: Uint8Array,
  maxOutput: number,
  what: string,
  sizeHint: number,
): { parse: DeflateParse; consumed: number } {
  return prefixParse(input, maxOutput, what, sizeHint, true)
}

/**
 * parseDeflatePrefix without the block list's headers, for callers that only want the tokens and
 * the content (an archive source's streams, whose tokens spliced target streams copy): the same
 * tokens, content and length, and the same streams refused (a header only decides whether a block
 * keeps its bits, never whether the stream parses), but no zlib trees built per block to compare
 * headers with (≈ 20 ms of typescript's 23 MB). Its blocks carry no headers. Every parse decodes
 * with the one loop (`codes`, which also counts symbols for that comparison): the apply runs cold,
 * and a second copy of the loop without the counts measured no faster once V8 had to warm up both.
 */
export function tokenizeDeflatePrefix(
  input: Uint8Array,
  maxOutput: number,
  what: string,
  sizeHint: number,
): { parse: DeflateParse; consumed: number } {
  return prefixParse(input, maxOutput, what, sizeHint, false)
}

function prefixParse(
  input: Uint8Array,
  maxOutput: number,
  what: string,
  sizeHint: number,
  headers: boolean,
): { parse: DeflateParse; consumed: number } {
  let room = Math.max(1024, Math.min(maxOutput, sizeHint))
  for (;;) {
    outputFull = false
    try {
      const { parse, consumed } = parseInto(input, new Uint8Array(room), 0, what, true, headers)
      return { parse, consumed }
    } catch (err) {
      if (!outputFull) throw err
      if (room >= maxOutput) {
        throw new DeltaFormatError('bad-stream', `${what} stream inflates past ${maxOutput} bytes`)
      }
      room = Math.min(maxOutput, room * 2)
    }
  }
}

/**
 * The parse proper: decodes `raw` into `out` from `start` (what precedes it is the dictionary) until
 * the final block; `prefix` allows bytes after the stream. Returns the output end and the bytes taken.
 */
function parseInto(
  raw: Uint8Array,
  out: Uint8Array,
  start: number,
  what: string,
  prefix: boolean,
  headers = true,
): { parse: DeflateParse; end: number; consumed: number } {
  const capacity = out.length - start
  src = raw
  pos = 0
  bitBuf = 0
  bitCount = 0
  tokenLimit = capacity
  // Text and code deflate to a token per 8–10 bytes, so a sixteenth of the content fits after one
  // doubling; binaries (3–4 bytes a token) double two or three times. Starting at a quarter held
  // 23 MB for typescript's 9.5 MB of tokens, kept alive as long as the source's tokens are.
  tokens = new Uint32Array(Math.min(capacity, Math.max(1024, capacity >>> 4)))
  tokenCount = 0
  const blocks: Block[] = []
  let op = start
  try {
    for (;;) {
      const final = bits(1, what) === 1
      const type = bits(2, what)
      if (type === BLOCK_STORED) {
        op = storedBlock(out, op, what)
        blocks.push({ type, final, end: tokenCount })
      } else if (type === BLOCK_FIXED) {
        op = codes(out, op, FIXED_LIT, FIXED_DIST, what)
        blocks.push({ type, final, end: tokenCount })
      } else if (type === BLOCK_DYNAMIC) {
        // The block's end-of-block code is counted as it is decoded.
        litFreq.fill(0)
        distFreq.fill(0)
        const headerStart = bitPosition()
        const header = decodeHeader(src, headerStart, src.length * 8, lengths, what)
        seek(header.end)
        build(lengths, 0, header.nlen, litTable)
        build(lengths, header.nlen, header.ndist, distTable)
        op = codes(out, op, litTable, distTable, what)
        const block: Block = { type, final, end: tokenCount }
        if (headers) {
          const zlib = dynamicHeaderBits(zlibDynamicCode(litFreq, distFreq))
          if (!sameBits(src, headerStart, header.end, zlib))
            block.header = sliceBits(src, headerStart, header.end)
        }
        blocks.push(block)
      } else fail(what, 'reserved block type')
      if (final) break
    }
    align(what, 'after the final block')
    const consumed = pos - (bitCount >>> 3)
    if (!prefix && consumed !== src.length) {
      throw new DeltaFormatError('bad-stream', `${what} stream has bytes after its end`)
    }
    return {
      parse: { tokens: tokens.subarray(0, tokenCount), blocks, content: out.subarray(start, op) },
      end: op,
      consumed,
    }
  } finally {
    src = EMPTY
    tokens = EMPTY_TOKENS
  }
}

function storedBlock(out: Uint8Array, op: number, what: string): number {
  align(what, 'before a stored block')
  // Hand back the whole bytes read ahead.
  pos -= bitCount >>> 3
  bitBuf = 0
  bitCount = 0
  if (pos + 4 > src.length) truncated(what)
  const len = src[pos]! | (src[pos + 1]! << 8)
  const nlen = src[pos + 2]! | (src[pos + 3]! << 8)
  pos += 4
  if ((len ^ 0xffff) !== nlen) fail(what, 'stored block length check fails')
  if (pos + len > src.length) truncated(what)
  if (op + len > out.length) overflow(what)
  out.set(src.subarray(pos, pos + len), op)
  let t = tokenCount
  let tok = tokens
  if (t + len > tok.length) {
    while (tok.length < t + len) tok = growTokens(t)
  }
  for (let i = 0; i < len; i++) tok[t++] = src[pos + i]!
  tokenCount = t
  pos += len
  return op + len
}

/**
 * Decodes one compressed block's symbols into `out` from `op` and a token each into `tokens`;
 * returns the new output position. Every token adds at least one content byte, so the token count
 * stays below the content size the overflow checks bound.
 */
function codes(out: Uint8Array, op: number, lit: Table, dist: Table, what: string): number {
  const lt = lit.table
  const lmask = (1 << lit.bits) - 1
  const lsub = lit.sub
  const dt = dist.table
  const dmask = (1 << dist.bits) - 1
  const dsub = dist.sub
  const lf = litFreq
  const df = distFreq
  const end = out.length
  const input = src
  const inEnd = input.length
  let tok = tokens
  let t = tokenCount
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
    lf[sym]!++
    if (sym < 256) {
      if (op >= end) overflow(what)
      if (t === tok.length) tok = growTokens(t)
      tok[t++] = sym
      out[op++] = sym
      continue
    }
    if (sym === 256) {
      pos = p
      bitBuf = buf
      bitCount = cnt
      tokenCount = t
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
    if (length === 258 && sym === 27) unrepresentable(what, 'length 258 sent as symbol 284')
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
    df[sym]!++
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
    if (t === tok.length) tok = growTokens(t)
    tok[t++] = (length << 16) | distance
    let from = op - distance
    const stop = op + length
    while (op < stop) out[op++] = out[from++]!
  }
  // Every way out of the loop above except the end-of-block code: a code that is missing from the
  // table or bits that ran out.
  pos = p
  bitBuf = buf
  bitCount = cnt
  if (p >= inEnd) truncated(what)
  return fail(what, 'invalid code')
}
