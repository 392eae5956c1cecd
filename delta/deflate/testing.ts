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

/** Text-like content for deflate tests: words, near and far repeats, byte runs, a little noise. */
export function deflateSample(r: () => number, n: number): Uint8Array {
  const words = [
    'export ',
    'const ',
    'function ',
    'return ',
    'value',
    'length',
    ' = ',
    ';\n',
    '{',
    '}',
    '(',
    ')',
  ]
  const out = new Uint8Array(n)
  let i = 0
  while (i < n) {
    const kind = r()
    if (kind < 0.55) {
      const w = words[Math.floor(r() * words.length)]!
      for (let k = 0; k < w.length && i < n; k++) out[i++] = w.charCodeAt(k)
    } else if (kind < 0.8 && i > 0) {
      const from = Math.max(0, i - 1 - Math.floor(r() * Math.min(i, 40_000)))
      const len = Math.min(n - i, 3 + Math.floor(r() * 300))
      for (let k = 0; k < len; k++) out[i + k] = out[from + k]!
      i += len
    } else if (kind < 0.9) {
      const len = Math.min(n - i, Math.floor(r() * 40))
      out.fill((r() * 256) | 0, i, i + len)
      i += len
    } else {
      const len = Math.min(n - i, Math.floor(r() * 30))
      for (let k = 0; k < len; k++) out[i + k] = (r() * 256) | 0
      i += len
    }
  }
  return out
}
