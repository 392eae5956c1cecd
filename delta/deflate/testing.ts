/** Test helpers shared by the DEFLATE tests (delta/deflate, delta/approx/raw-inflate). */
import type { Tokens } from './parse-types.ts'

/**
 * zlib's five strategies (Z_DEFAULT_STRATEGY, Z_FILTERED, Z_HUFFMAN_ONLY, Z_RLE, Z_FIXED): their
 * values are fixed by zlib.h, so this pure module can list them without importing node:zlib.
 */
export const ZLIB_STRATEGIES = [0, 1, 2, 3, 4] as const

/** What a token list decodes to, independently of the parser. */
export function tokensToContent(tokens: Tokens): Uint8Array {
  let size = 0
  for (const t of tokens) size += t < 256 ? 1 : t >>> 16
  const out = new Uint8Array(size)
  let op = 0
  for (const t of tokens) {
    if (t < 256) out[op++] = t
    else {
      const length = t >>> 16
      let from = op - (t & 0xffff)
      for (let k = 0; k < length; k++) out[op++] = out[from++]!
    }
  }
  return out
}
