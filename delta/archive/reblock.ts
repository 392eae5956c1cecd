/**
 * "Reblocked" deflate streams: streams whose tokens are exactly what some zlib setting produces, cut
 * into blocks differently. GNU gzip is the case that matters: its match search is the one zlib grew
 * from (same hash, same lazy evaluation, same -1..-9 tuning), so at -9 it emits the very tokens pako
 * does at level 9 with the classic hash, but it ends blocks by its own heuristic, so no parameters
 * reproduce its bytes. Such a stream is rebuilt from its content like any deflate segment — deflate
 * with the recorded settings, take the tokens back out of that output (delta/deflate/parse.ts) — and
 * re-encoded with the target's recorded block list (delta/deflate/encode.ts). The delta then only
 * carries a few bytes per block on top of the content diff, instead of the whole token stream that
 * a token segment needs. docs/decisions/0018-token-rebuild.md.
 */
import { encodeDeflate } from '../deflate/encode.ts'
import { parseDeflate } from '../deflate/parse.ts'
import type { Block, DeflateParse } from '../deflate/parse-types.ts'
import { check } from '../errors.ts'
import { sameBytes } from './bytes.ts'
import { type DeflateEngine, engineFor } from './deflate-engine.ts'
import { type DeflateParams, deflateWhole } from './recompress.ts'

/** Input deflated to rule a setting out before the whole stream is tried. */
const PREFIX = 256 * 1024
/** Tokens this close to the end of the prefix may differ (less lookahead), so they are not compared. */
const PREFIX_MARGIN = 1024

export interface Reblock {
  params: DeflateParams
  blocks: Block[]
}

/** The tokens `params` gives for `raw`: deflate, then take the output apart again. */
function tokensOf(raw: Uint8Array, params: DeflateParams, engine?: DeflateEngine): Uint32Array {
  const compressed = engineFor(engine, params, raw.length).deflate(raw, params)
  return parseDeflate(compressed, raw.length, 'archive-reblock').tokens
}

/** True when the tokens covering the first `limit` content bytes agree. */
function samePrefix(a: Uint32Array, b: Uint32Array, limit: number): boolean {
  let content = 0
  for (let i = 0; i < a.length && i < b.length && content < limit; i++) {
    if (a[i] !== b[i]) return false
    const t = a[i]!
    content += t > 255 ? t >>> 16 : 1
  }
  return true
}

function sameTokens(a: Uint32Array, b: Uint32Array): boolean {
  const bytes = (t: Uint32Array) => new Uint8Array(t.buffer, t.byteOffset, t.byteLength)
  return sameBytes(bytes(a), bytes(b))
}

/**
 * Create side: the first of `candidates` whose tokens are `target`'s, proved by re-encoding them with
 * the target's blocks into exactly `compressed`; null when none is. A wrong setting is usually ruled
 * out on a 256 KiB prefix.
 */
export function findReblock(
  raw: Uint8Array,
  compressed: Uint8Array,
  target: DeflateParse,
  candidates: readonly DeflateParams[],
  engine?: DeflateEngine,
): Reblock | null {
  for (const params of candidates) {
    if (raw.length > PREFIX) {
      const prefix = parseDeflate(deflateWhole(raw.subarray(0, PREFIX), params), PREFIX, 'archive-reblock')
      if (!samePrefix(prefix.tokens, target.tokens, PREFIX - PREFIX_MARGIN)) continue
    }
    const tokens = tokensOf(raw, params, engine)
    if (!sameTokens(tokens, target.tokens)) continue
    if (sameBytes(encodeDeflate({ tokens, blocks: target.blocks }), compressed)) {
      return { params, blocks: target.blocks }
    }
  }
  return null
}

/**
 * Apply side: the stream rebuilt from its content. The block list comes from the delta, so it is
 * checked against the tokens (the encoder checks the rest); every failure is a DeltaFormatError.
 */
export function rebuildReblocked(raw: Uint8Array, r: Reblock, engine?: DeflateEngine): Uint8Array {
  const tokens = tokensOf(raw, r.params, engine)
  check(
    r.blocks.at(-1)?.end === tokens.length,
    'archive-mismatch',
    'block list does not cover the recompressed tokens',
  )
  return encodeDeflate({ tokens, blocks: r.blocks })
}
