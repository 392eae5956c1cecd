/** Test helper shared by the deflate tests: what a token list decodes to, independently of the parser. */
import type { Tokens } from './parse-types.ts'

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
