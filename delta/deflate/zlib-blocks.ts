/**
 * The blocks zlib's deflate cuts a token sequence into, as a pure function of the tokens, so a
 * stream zlib made (Node's zlib, which is Chromium's; pako 3 with either hash; classic zlib) can be
 * rebuilt from its tokens alone (encode.ts) without carrying its block list. Scope: one deflate()
 * call with Z_FINISH over the whole input, level 1..9, strategy default or filtered.
 *
 * What zlib does (deflate.c deflate_fast/deflate_slow, trees.c _tr_flush_block):
 * - Its symbol buffer holds lit_bufsize - 1 = 2^(memLevel+6) - 1 symbols; when a tally fills it the
 *   block ends there. The rest of the input goes to the final block at Z_FINISH.
 * - Token counts that are an exact multiple of that size: a tally that fills the buffer inside the
 *   loop flushes a non-final block, and Z_FINISH then flushes an empty final block (a fixed one, the
 *   `03 00` of an empty stream). Levels 4..9 (deflate_slow) tally the input's last byte, when it is
 *   a literal, after the loop, without checking for a full buffer, so there the final block holds
 *   the whole last buffer and no empty block follows. Levels 1..3 (deflate_fast) tally everything
 *   in the loop. So the level matters here (options.level, default 6).
 * - Type: opt_len is the block's cost with zlib's dynamic trees (symbols, extra bits and the header
 *   as sent), static_len with the fixed code; in bytes with the 3 type bits, rounded up:
 *   opt_lenb = (opt_len + 10) >> 3, static_lenb likewise; the smaller (static on ties) wins,
 *   unless a stored block (content bytes + 4 for LEN/NLEN) is no longer, and the block's bytes are
 *   still in the window, in which case it is stored.
 * - "Still in the window": zlib writes a stored block from its 2·W-byte window, and the window slides
 *   by W at the top of its loop once fewer than MIN_LOOKAHEAD bytes are ahead and the position is at
 *   least 2·W - MIN_LOOKAHEAD (fill_window). If a slide has dropped the block's first byte (negative
 *   block_start), the block cannot be stored whatever it costs. The loop tops are where tokens are
 *   tallied: at each token's start in deflate_fast, one byte after it in deflate_slow (lazy matching
 *   decides a position's token at the next position), and at the end of the input before the final
 *   flush; so whether the slide came before the flush follows from the tokens and the level. It
 *   matters when a block's bytes span about W (e.g. memLevel 9 on incompressible data: 32767-byte
 *   blocks, most of which zlib cannot store and sends as Huffman blocks). It also keeps every stored
 *   block below 2·W - 3 bytes, so zlib writes each as one stored block (one _tr_stored_block per
 *   flush, with a 16-bit LEN), never more.
 *
 * zlib stores a block that had back-references as plain bytes, so a parse of its output
 * (parse.ts) shows literals there, one per byte, where zlib had counted fewer symbols. Given such
 * tokens this function cuts a stored stretch after lit_bufsize - 1 bytes and every later boundary
 * then moves; the tokens zlib's own match search gave (which a stored block cannot be encoded from by
 * encode.ts) cut right. Incompressible data hits this when zlib finds the odd short match in it
 * (default strategy; filtered discards matches under 6 bytes at levels 4..9). Callers check the
 * bytes and fall back to an explicit block list.
 *
 * Tokens must be literals or matches of valid length and distance (DeltaFormatError otherwise);
 * whether distances stay within the content is left to encode.ts.
 */
import { check, DeltaFormatError } from '../errors.ts'
import { sameBits } from './bits.ts'
import {
  BLOCK_DYNAMIC,
  BLOCK_FIXED,
  BLOCK_STORED,
  type Block,
  type BlockType,
  type Tokens,
} from './parse-types.ts'
import {
  D_CODES,
  DIST_EXTRA,
  DISTANCE_SYMBOL,
  END_BLOCK,
  FIXED_LIT_LENS,
  L_CODES,
  LENGTH_EXTRA,
  LENGTH_SYMBOL,
  MAX_DISTANCE,
  MAX_MATCH,
  MIN_MATCH,
} from './tables.ts'
import { type DynamicCode, dynamicHeaderBitLength, zlibDynamicCode } from './zlib-trees.ts'

export interface ZlibBlockOptions {
  /** zlib's level, 1..9 (default 6): 1..3 run deflate_fast, 4..9 deflate_slow (see above). */
  level?: number
  /** 8..15 (default 15; zlib runs 8 as 9): the window whose sliding can rule a stored block out. */
  windowBits?: number
}

/** zlib's MIN_LOOKAHEAD: MAX_MATCH + MIN_MATCH + 1. */
const MIN_LOOKAHEAD = 262
/** Every fixed-code distance takes 5 bits. */
const FIXED_DIST_BITS = 5

/** Symbol counts of the block being decided (END_BLOCK counted once, as zlib does). */
const litFreq = new Int32Array(L_CODES)
const distFreq = new Int32Array(D_CODES)
/** countBlock's other results: content offset after the block and where its last token starts. */
let blockEnd = 0
let lastStart = 0
/** zlib's dynamic code for the counted block, as blockType computed it. */
let blockCode: DynamicCode | null = null

/**
 * The blocks zlib's deflate (one deflate() call with Z_FINISH, strategy default or filtered) emits
 * for these tokens at this memLevel: types, final flag, ends; headers left to zlib's trees.
 */
export function zlibBlocks(tokens: Tokens, memLevel: number, options: ZlibBlockOptions = {}): Block[] {
  const blocks: Block[] = []
  cutZlibBlocks(tokens, memLevel, options, false, (block) => {
    blocks.push(block)
  })
  return blocks
}

/**
 * What cutZlibBlocks counted for the block it hands over: its symbol counts (END_BLOCK once), the
 * extra bits of its lengths and distances, and zlib's dynamic code for it. Valid only during the
 * call (the arrays and the code are reused for the next block).
 */
export interface CountedBlock {
  readonly litFreq: Int32Array
  readonly distFreq: Int32Array
  readonly extraBits: number
  readonly code: DynamicCode
}

/**
 * zlibBlocks' walk: calls `onBlock` for each block in order, with the tokens it starts at and what
 * was counted to decide it, so the encoder (encodeZlibDeflate) need not count the tokens again.
 * `checkReach`: also refuse a distance that reaches before the content's start (encodeDeflate's
 * check; zlibBlocks alone leaves it to the encoder).
 */
export function cutZlibBlocks(
  tokens: Tokens,
  memLevel: number,
  options: ZlibBlockOptions,
  checkReach: boolean,
  onBlock: (block: Block, start: number, counted: CountedBlock) => void,
): void {
  const level = options.level ?? 6
  const windowBits = options.windowBits ?? 15
  check(Number.isInteger(memLevel) && memLevel >= 1 && memLevel <= 9, 'bad-stream', `memLevel ${memLevel}`)
  check(Number.isInteger(level) && level >= 1 && level <= 9, 'bad-stream', `deflate level ${level}`)
  check(
    Number.isInteger(windowBits) && windowBits >= 8 && windowBits <= 15,
    'bad-stream',
    `windowBits ${windowBits}`,
  )
  const perBlock = 2 ** (memLevel + 6) - 1
  const lazy = level >= 4
  const wsize = 2 ** Math.max(9, windowBits)
  /** Positions (relative to the window) from which a loop top slides the window. */
  const slideAt = 2 * wsize - MIN_LOOKAHEAD

  const n = tokens.length
  const lastIsLiteral = n > 0 && tokens[n - 1]! < 256

  let start = 0
  /** Content offsets: the block's first byte, and the window's first byte (after the slides so far). */
  let from = 0
  let base = 0
  for (;;) {
    const left = n - start
    const final = left < perBlock || (left === perBlock && lazy && lastIsLiteral)
    const end = final ? n : start + perBlock
    const extra = countBlock(tokens, start, end, from, checkReach)
    // The loop top the flush follows (the final flush follows the one at the end of the input):
    // zlib slid its window there and before whenever the position had reached slideAt, or exactly
    // slideAt with fewer than MIN_LOOKAHEAD bytes of input left.
    const flushAt = final ? blockEnd : lazy ? lastStart + 1 : lastStart
    while (
      flushAt - base > slideAt ||
      (flushAt - base === slideAt && flushAt > contentEnd(tokens, end, blockEnd) - MIN_LOOKAHEAD)
    ) {
      base += wsize
    }
    const type = blockType(blockEnd - from, extra, from >= base)
    onBlock({ type, final, end }, start, { litFreq, distFreq, extraBits: extra, code: blockCode! })
    if (final) return
    start = end
    from = blockEnd
  }
}

/**
 * Counts tokens[start, end) into litFreq/distFreq, sets blockEnd and lastStart (content offsets,
 * the block starting at `from`), and returns the block's extra bits. `checkReach`: see cutZlibBlocks.
 */
function countBlock(tokens: Tokens, start: number, end: number, from: number, checkReach: boolean): number {
  litFreq.fill(0)
  distFreq.fill(0)
  litFreq[END_BLOCK] = 1
  let extra = 0
  let pos = from
  let last = from
  for (let i = start; i < end; i++) {
    const t = tokens[i]!
    last = pos
    if (t < 256) {
      litFreq[t]!++
      pos++
      continue
    }
    const length = t >>> 16
    const d = (t & 0xffff) - 1
    if (length < MIN_MATCH || length > MAX_MATCH || d < 0 || d >= MAX_DISTANCE) {
      throw new DeltaFormatError(
        'bad-stream',
        `zlib blocks: token ${i} (${t}) is neither a literal nor a match`,
      )
    }
    if (checkReach && d >= pos) {
      throw new DeltaFormatError('bad-stream', `zlib blocks: token ${i} refers back before the content`)
    }
    const ls = LENGTH_SYMBOL[length]!
    litFreq[257 + ls]!++
    const ds = d < 256 ? DISTANCE_SYMBOL[d]! : DISTANCE_SYMBOL[256 + (d >>> 7)]!
    distFreq[ds]!++
    extra += LENGTH_EXTRA[ls]! + DIST_EXTRA[ds]!
    pos += length
  }
  blockEnd = pos
  lastStart = last
  return extra
}

/** Content size of the whole stream, given that tokens[0, at) cover `bytes` (rarely needed). */
function contentEnd(tokens: Tokens, at: number, bytes: number): number {
  for (let i = at; i < tokens.length; i++) {
    const t = tokens[i]!
    bytes += t < 256 ? 1 : t >>> 16
  }
  return bytes
}

/** _tr_flush_block's choice for the counted block; `inWindow`: zlib still has its bytes. */
function blockType(storedLen: number, extra: number, inWindow: boolean): BlockType {
  const code = zlibDynamicCode(litFreq, distFreq)
  blockCode = code
  let fixedBits = extra
  let dynamicBits = extra + dynamicHeaderBitLength(code)
  for (let s = 0; s < L_CODES; s++) {
    const f = litFreq[s]!
    if (f === 0) continue
    fixedBits += f * FIXED_LIT_LENS[s]!
    dynamicBits += f * code.litLens[s]!
  }
  for (let s = 0; s < D_CODES; s++) {
    const f = distFreq[s]!
    if (f === 0) continue
    fixedBits += f * FIXED_DIST_BITS
    dynamicBits += f * code.distLens[s]!
  }
  // Bytes with the 3 block-type bits, rounded up (zlib's `(len + 3 + 7) >> 3`).
  const staticBytes = Math.floor((fixedBits + 10) / 8)
  let optBytes = Math.floor((dynamicBits + 10) / 8)
  if (staticBytes <= optBytes) optBytes = staticBytes
  if (storedLen + 4 <= optBytes && inWindow) return BLOCK_STORED
  return staticBytes === optBytes ? BLOCK_FIXED : BLOCK_DYNAMIC
}

/** Same blocks: type, final flag, end, and header bits (or no header) on both. */
export function blocksEqual(a: readonly Block[], b: readonly Block[]): boolean {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!
    const y = b[i]!
    if (x.type !== y.type || x.final !== y.final || x.end !== y.end) return false
    const hx = x.header
    const hy = y.header
    if (hx === undefined || hy === undefined) {
      if (hx !== hy) return false
    } else if (!sameBits(hx.bytes, 0, hx.bitLength, hy)) return false
  }
  return true
}
