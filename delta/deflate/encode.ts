/**
 * Writes a DEFLATE stream back from its tokens and blocks (parse-types.ts), bit for bit as the
 * parse found it when the parse came from parseDeflate: stored blocks aligned with zero bits, then
 * LEN, NLEN and the bytes; fixed blocks with RFC 1951's fixed code; dynamic blocks with the header
 * given, or else the header zlib's tree construction gives for the block's tokens (zlib-trees.ts),
 * the codes then being the ones that header describes; zero bits after the final block.
 *
 * The input may come from an untrusted delta, so everything is checked and every failure is a
 * DeltaFormatError 'bad-stream' (never another exception): block ends in order and within the
 * tokens, the last block final and only it, tokens well formed (literal 0..255, length 3..258,
 * distance 1..32768 and within the content so far), stored blocks of literals only and at most
 * 65535 bytes, headers only on dynamic blocks and only ones zlib's inflate accepts (header.ts) that
 * give every symbol the block uses a code. Output is allocated per block from the block's exact
 * size, so it never grows beyond twice the stream it writes.
 */
import { DeltaFormatError } from '../errors.ts'
import { BitWriter } from './bits.ts'
import { decodeHeader } from './header.ts'
import {
  BLOCK_DYNAMIC,
  BLOCK_FIXED,
  BLOCK_STORED,
  type DeflateParse,
  type HeaderBits,
  type Tokens,
} from './parse-types.ts'
import {
  canonicalCodes,
  D_CODES,
  DIST_BASE,
  DIST_EXTRA,
  DISTANCE_SYMBOL,
  END_BLOCK,
  FIXED_DIST_CODES,
  FIXED_DIST_LENS,
  FIXED_LIT_CODES,
  FIXED_LIT_LENS,
  L_CODES,
  LENGTH_BASE,
  LENGTH_EXTRA,
  LENGTH_SYMBOL,
  MAX_DISTANCE,
  MAX_MATCH,
  MIN_MATCH,
} from './tables.ts'
import { type CountedBlock, cutZlibBlocks, type ZlibBlockOptions } from './zlib-blocks.ts'
import {
  type DynamicCode,
  dynamicHeaderBits,
  MAX_HEADER_BITS,
  writeDynamicHeader,
  zlibDynamicCode,
} from './zlib-trees.ts'

const WHAT = 'deflate re-encode'

function bad(message: string): never {
  throw new DeltaFormatError('bad-stream', `${WHAT}: ${message}`)
}

/** Symbol frequencies of the block being encoded (END_BLOCK counted once), and its extra bits. */
const litFreq = new Int32Array(L_CODES)
const distFreq = new Int32Array(D_CODES)
let extraBits = 0

/**
 * Counts the symbols of tokens[start, end) into litFreq/distFreq/extraBits, checking each token;
 * `content` is how many bytes come before the block (a distance may not reach further back).
 * Returns the content size after the block.
 */
function countSymbols(tokens: Tokens, start: number, end: number, content: number): number {
  litFreq.fill(0)
  distFreq.fill(0)
  litFreq[END_BLOCK] = 1
  let extra = 0
  for (let i = start; i < end; i++) {
    const t = tokens[i]!
    if (t < 256) {
      litFreq[t]!++
      content++
      continue
    }
    const length = t >>> 16
    const distance = t & 0xffff
    if (length < MIN_MATCH || length > MAX_MATCH || distance === 0 || distance > MAX_DISTANCE) {
      bad(`token ${i} (${t}) is neither a literal nor a valid match`)
    }
    if (distance > content) bad(`token ${i} refers back before the start of the content`)
    const ls = LENGTH_SYMBOL[length]!
    litFreq[257 + ls]!++
    const d = distance - 1
    const ds = d < 256 ? DISTANCE_SYMBOL[d]! : DISTANCE_SYMBOL[256 + (d >>> 7)]!
    distFreq[ds]!++
    extra += LENGTH_EXTRA[ls]! + DIST_EXTRA[ds]!
    content += length
  }
  extraBits = extra
  return content
}

/**
 * The header zlib would send for a dynamic block holding tokens[start, end) (the bits after the
 * block type, as HeaderBits). parseDeflate drops a block's header when it equals this.
 */
export function zlibHeaderFor(tokens: Tokens, start: number, end: number): HeaderBits {
  if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end < start || end > tokens.length) {
    bad(`token range ${start}..${end} is outside the ${tokens.length} tokens`)
  }
  countSymbols(tokens, start, end, Number.MAX_SAFE_INTEGER)
  return dynamicHeaderBits(zlibDynamicCode(litFreq, distFreq))
}

/** The codes of the block being encoded (dynamic ones; fixed blocks use the FIXED_* tables). */
const headerLens = new Uint8Array(320)
const litLens = new Uint8Array(L_CODES)
const distLens = new Uint8Array(D_CODES)
const litCodes = new Uint16Array(L_CODES)
const distCodes = new Uint16Array(D_CODES)

/**
 * Bits the block's symbols take with these code lengths (counts: countSymbols' by default); fails if
 * a used symbol has no code.
 */
function symbolBits(
  lLens: Uint8Array,
  dLens: Uint8Array,
  lFreq: Int32Array = litFreq,
  dFreq: Int32Array = distFreq,
  extra = extraBits,
): number {
  let total = extra
  for (let s = 0; s < L_CODES; s++) {
    const f = lFreq[s]!
    if (f === 0) continue
    if (lLens[s] === 0) bad(`the block's header gives no code to literal/length symbol ${s}`)
    total += f * lLens[s]!
  }
  for (let s = 0; s < D_CODES; s++) {
    const f = dFreq[s]!
    if (f === 0) continue
    if (dLens[s] === 0) bad(`the block's header gives no code to distance symbol ${s}`)
    total += f * dLens[s]!
  }
  return total
}

/** Bytes that a block of `bits` bits (plus its 3 type bits) can take. */
function bytesFor(bits: number): number {
  return Math.ceil(bits / 8) + 8
}

function checkHeader(header: HeaderBits): void {
  if (typeof header !== 'object' || header === null || !(header.bytes instanceof Uint8Array)) {
    bad('a block header is not bytes')
  }
  const { bitLength } = header
  if (!Number.isSafeInteger(bitLength) || bitLength < 0 || bitLength > header.bytes.length * 8) {
    bad(`a block header's bit length ${bitLength} does not fit its ${header.bytes.length} bytes`)
  }
}

/**
 * Encodes the blocks over the tokens as a raw DEFLATE stream. Throws DeltaFormatError 'bad-stream'
 * for anything that is not a valid parse (see the module comment).
 */
export function encodeDeflate(parse: Pick<DeflateParse, 'tokens' | 'blocks'>): Uint8Array {
  const { tokens, blocks } = parse
  if (!(tokens instanceof Uint32Array)) bad('tokens are not a Uint32Array')
  if (!Array.isArray(blocks) || blocks.length === 0) bad('a stream needs at least one block')
  // A first guess of a byte per token; blocks grow it to their exact size.
  const w = new BitWriter(Math.min(tokens.length, 1 << 24) + 1024)
  let start = 0
  let content = 0
  for (let b = 0; b < blocks.length; b++) {
    const block = blocks[b]
    if (typeof block !== 'object' || block === null) bad(`block ${b} is not a block`)
    const { type, final, end, header } = block
    const last = b === blocks.length - 1
    if (!Number.isSafeInteger(end) || end < start || end > tokens.length) {
      bad(`block ${b} ends at ${end}, outside ${start}..${tokens.length}`)
    }
    if (final !== last) bad(last ? 'the last block is not final' : `block ${b} is final but not the last`)
    if (header !== undefined && type !== BLOCK_DYNAMIC) bad(`block ${b} has a header but is not dynamic`)
    const typeBits = (final ? 1 : 0) | (type << 1)
    if (type === BLOCK_STORED) {
      writeStored(w, tokens, start, end, typeBits, b)
      content += end - start
    } else if (type === BLOCK_FIXED) {
      content = countSymbols(tokens, start, end, content)
      writeFixed(w, tokens, start, end, typeBits, { litFreq, distFreq, extraBits })
    } else if (type === BLOCK_DYNAMIC) {
      content = countSymbols(tokens, start, end, content)
      if (header === undefined) {
        const counts = { litFreq, distFreq, extraBits }
        writeZlibDynamic(w, tokens, start, end, typeBits, zlibDynamicCode(litFreq, distFreq), counts)
      } else {
        checkHeader(header)
        const h = decodeHeader(header.bytes, 0, header.bitLength, headerLens, WHAT)
        if (h.end !== header.bitLength) bad(`block ${b}'s header has bits after its code lengths`)
        litLens.fill(0)
        distLens.fill(0)
        litLens.set(headerLens.subarray(0, h.nlen))
        distLens.set(headerLens.subarray(h.nlen, h.nlen + h.ndist))
        w.ensure(bytesFor(symbolBits(litLens, distLens) + header.bitLength))
        w.put(typeBits, 3)
        w.putBits(header.bytes, header.bitLength)
        writeDynamicSymbols(w, tokens, start, end)
      }
    } else bad(`block ${b} has unknown type ${String(type)}`)
    start = end
  }
  if (start !== tokens.length) bad(`${tokens.length - start} tokens after the last block`)
  w.align()
  return w.bytes.slice(0, w.pos)
}

/**
 * encodeDeflate({ tokens, blocks: zlibBlocks(tokens, memLevel, options) }), the same bytes, in one
 * walk: each block is written as soon as zlibBlocks' cut has counted it, with the counts and the
 * dynamic code the cut computed to choose its type, instead of counting every token a second time
 * (a spliced stream's rebuild, splice.ts: ≈ 45 ms of a 23 MB stream). Checks what encodeDeflate
 * checks (zlibBlocks' token checks include the distances).
 */
export function encodeZlibDeflate(tokens: Tokens, memLevel: number, options: ZlibBlockOptions): Uint8Array {
  if (!(tokens instanceof Uint32Array)) bad('tokens are not a Uint32Array')
  const w = new BitWriter(Math.min(tokens.length, 1 << 24) + 1024)
  let b = 0
  cutZlibBlocks(tokens, memLevel, options, true, (block, start, counted) => {
    const { type, final, end } = block
    const typeBits = (final ? 1 : 0) | (type << 1)
    if (type === BLOCK_STORED) writeStored(w, tokens, start, end, typeBits, b)
    else if (type === BLOCK_FIXED) writeFixed(w, tokens, start, end, typeBits, counted)
    else writeZlibDynamic(w, tokens, start, end, typeBits, counted.code, counted)
    b++
  })
  w.align()
  return w.bytes.slice(0, w.pos)
}

/** A block's symbol counts and extra bits (countSymbols' module state, or cutZlibBlocks' per block). */
type SymbolCounts = Pick<CountedBlock, 'litFreq' | 'distFreq' | 'extraBits'>

/** A fixed-code block: its type bits, then its symbols. */
function writeFixed(
  w: BitWriter,
  tokens: Tokens,
  start: number,
  end: number,
  typeBits: number,
  counts: SymbolCounts,
) {
  w.ensure(
    bytesFor(symbolBits(FIXED_LIT_LENS, FIXED_DIST_LENS, counts.litFreq, counts.distFreq, counts.extraBits)),
  )
  w.put(typeBits, 3)
  writeSymbols(tokens, start, end, w, FIXED_LIT_CODES, FIXED_LIT_LENS, FIXED_DIST_CODES, FIXED_DIST_LENS)
}

/** A dynamic block under `code` (zlib's for its counts): its type bits, the code's header, its symbols. */
function writeZlibDynamic(
  w: BitWriter,
  tokens: Tokens,
  start: number,
  end: number,
  typeBits: number,
  code: DynamicCode,
  counts: SymbolCounts,
) {
  litLens.set(code.litLens)
  distLens.set(code.distLens)
  w.ensure(
    bytesFor(
      symbolBits(litLens, distLens, counts.litFreq, counts.distFreq, counts.extraBits) + MAX_HEADER_BITS,
    ),
  )
  w.put(typeBits, 3)
  writeDynamicHeader(code, w)
  writeDynamicSymbols(w, tokens, start, end)
}

/** The symbols of a dynamic block whose code lengths are in litLens and distLens. */
function writeDynamicSymbols(w: BitWriter, tokens: Tokens, start: number, end: number) {
  canonicalCodes(litLens, L_CODES, litCodes)
  canonicalCodes(distLens, D_CODES, distCodes)
  writeSymbols(tokens, start, end, w, litCodes, litLens, distCodes, distLens)
}

/** Writes tokens[start, end) as a stored block (type bits, zero padding, LEN, NLEN, the bytes). */
function writeStored(w: BitWriter, tokens: Tokens, start: number, end: number, typeBits: number, b: number) {
  const n = end - start
  if (n > 0xffff) bad(`stored block ${b} holds ${n} bytes, more than 65535`)
  w.ensure(n + 8)
  w.put(typeBits, 3)
  w.align()
  const out = w.bytes
  let op = w.pos
  out[op++] = n & 255
  out[op++] = n >>> 8
  out[op++] = ~n & 255
  out[op++] = (~n >>> 8) & 255
  for (let i = start; i < end; i++) {
    const t = tokens[i]!
    if (t > 255) bad(`stored block ${b} holds a match (token ${i})`)
    out[op++] = t
  }
  w.pos = op
}

/**
 * Huffman-codes tokens[start, end) and the end-of-block code. The tokens were checked by
 * countSymbols and the writer has room for them. Small and allocation-free: it is the hot loop.
 */
function writeSymbols(
  tokens: Tokens,
  start: number,
  end: number,
  w: BitWriter,
  lCodes: Uint16Array,
  lLens: Uint8Array,
  dCodes: Uint16Array,
  dLens: Uint8Array,
): void {
  const out = w.bytes
  let op = w.pos
  let buf = w.buf
  let cnt = w.cnt
  for (let i = start; i < end; i++) {
    const t = tokens[i]!
    if (t < 256) {
      buf |= lCodes[t]! << cnt
      cnt += lLens[t]!
    } else {
      const length = t >>> 16
      const ls = LENGTH_SYMBOL[length]!
      buf |= lCodes[257 + ls]! << cnt
      cnt += lLens[257 + ls]!
      if (cnt >= 16) {
        out[op++] = buf & 255
        out[op++] = (buf >>> 8) & 255
        buf >>>= 16
        cnt -= 16
      }
      buf |= (length - LENGTH_BASE[ls]!) << cnt
      cnt += LENGTH_EXTRA[ls]!
      const d = (t & 0xffff) - 1
      const ds = d < 256 ? DISTANCE_SYMBOL[d]! : DISTANCE_SYMBOL[256 + (d >>> 7)]!
      if (cnt >= 16) {
        out[op++] = buf & 255
        out[op++] = (buf >>> 8) & 255
        buf >>>= 16
        cnt -= 16
      }
      buf |= dCodes[ds]! << cnt
      cnt += dLens[ds]!
      if (cnt >= 16) {
        out[op++] = buf & 255
        out[op++] = (buf >>> 8) & 255
        buf >>>= 16
        cnt -= 16
      }
      buf |= (d + 1 - DIST_BASE[ds]!) << cnt
      cnt += DIST_EXTRA[ds]!
    }
    if (cnt >= 16) {
      out[op++] = buf & 255
      out[op++] = (buf >>> 8) & 255
      buf >>>= 16
      cnt -= 16
    }
  }
  w.pos = op
  w.buf = buf
  w.cnt = cnt
  w.put(lCodes[END_BLOCK]!, lLens[END_BLOCK]!)
}
