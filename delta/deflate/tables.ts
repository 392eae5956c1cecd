/**
 * RFC 1951's tables, the one copy both decoders (delta/approx/raw-inflate.ts, parse.ts) and the
 * encoder use, so they cannot disagree: length and distance bases and extra bits, which symbol codes
 * a match length or distance, and the fixed Huffman code's lengths and (bit-reversed) codes.
 */

/** Base lengths and extra bits for length symbols 257..285. */
export const LENGTH_BASE = Uint16Array.from([
  3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195,
  227, 258,
])
export const LENGTH_EXTRA = Uint8Array.from([
  0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
])
/** Base distances and extra bits for distance symbols 0..29. */
export const DIST_BASE = Uint16Array.from([
  1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097,
  6145, 8193, 12289, 16385, 24577,
])
export const DIST_EXTRA = Uint8Array.from([
  0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13,
])
/** Order in which code length code lengths are sent. */
export const CLEN_ORDER = Uint8Array.from([16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15])

/** Literal/length symbols a dynamic header may describe (286 and 287 exist only in the fixed code). */
export const L_CODES = 286
export const D_CODES = 30
/** Code-length code symbols (0..15 lengths, 16/17/18 repeats). */
export const BL_CODES = 19
export const END_BLOCK = 256
export const MAX_BITS = 15

export const MIN_MATCH = 3
export const MAX_MATCH = 258
export const MAX_DISTANCE = 32768

/**
 * Length 3..258 → index of its length symbol (symbol - 257). 258 maps to symbol 285, never to
 * 284 with 31 extra bits: every deflater does this, and the parse rejects the other spelling.
 */
export const LENGTH_SYMBOL = new Uint8Array(MAX_MATCH + 1)
for (let s = 0; s < 29; s++) {
  const base = LENGTH_BASE[s]!
  const end = s === 28 ? base + 1 : base + (1 << LENGTH_EXTRA[s]!)
  for (let len = base; len < end && len <= MAX_MATCH; len++) LENGTH_SYMBOL[len] = s
}
LENGTH_SYMBOL[MAX_MATCH] = 28

/**
 * Distance symbol of distance d (1..32768), zlib's layout: DISTANCE_SYMBOL[d - 1] for d ≤ 256, else
 * DISTANCE_SYMBOL[256 + ((d - 1) >>> 7)] (from symbol 16 on every symbol spans a multiple of 128).
 */
export const DISTANCE_SYMBOL = new Uint8Array(512)
for (let s = 0; s < 30; s++) {
  const first = DIST_BASE[s]! - 1
  const last = first + (1 << DIST_EXTRA[s]!) - 1
  for (let d = first; d <= last; d++) {
    if (d < 256) DISTANCE_SYMBOL[d] = s
    else DISTANCE_SYMBOL[256 + (d >>> 7)] = s
  }
}

/** Reverses the low `len` bits of `code`: Huffman codes are sent most significant bit first. */
export function reverseBits(code: number, len: number): number {
  let rev = 0
  for (let k = 0; k < len; k++) {
    rev = (rev << 1) | (code & 1)
    code >>>= 1
  }
  return rev
}

const nextCode = new Uint16Array(MAX_BITS + 2)
const lengthCount = new Uint16Array(MAX_BITS + 2)

/**
 * Canonical codes (RFC 1951 3.2.2) for lens[0, n), written bit-reversed into codes so they can be
 * OR-ed into an LSB-first bit buffer. Symbols of length 0 get code 0. The lengths must not be
 * over-subscribed (callers check, or built them).
 */
export function canonicalCodes(lens: Uint8Array, n: number, codes: Uint16Array): void {
  lengthCount.fill(0)
  for (let s = 0; s < n; s++) lengthCount[lens[s]!]!++
  lengthCount[0] = 0
  let code = 0
  for (let len = 1; len <= MAX_BITS; len++) {
    code = (code + lengthCount[len - 1]!) << 1
    nextCode[len] = code
  }
  for (let s = 0; s < n; s++) {
    const len = lens[s]!
    codes[s] = len === 0 ? 0 : reverseBits(nextCode[len]!++, len)
  }
}

/** The fixed code (RFC 1951 3.2.6), for encoding. */
export const FIXED_LIT_LENS = new Uint8Array(288)
FIXED_LIT_LENS.fill(8, 0, 144)
FIXED_LIT_LENS.fill(9, 144, 256)
FIXED_LIT_LENS.fill(7, 256, 280)
FIXED_LIT_LENS.fill(8, 280, 288)
export const FIXED_LIT_CODES = new Uint16Array(288)
canonicalCodes(FIXED_LIT_LENS, 288, FIXED_LIT_CODES)
export const FIXED_DIST_LENS = new Uint8Array(D_CODES).fill(5)
export const FIXED_DIST_CODES = new Uint16Array(D_CODES)
for (let s = 0; s < D_CODES; s++) FIXED_DIST_CODES[s] = reverseBits(s, 5)
