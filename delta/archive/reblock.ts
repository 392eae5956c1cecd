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
import type { Block, DeflateParse, Tokens } from '../deflate/parse-types.ts'
import { check, DeltaFormatError } from '../errors.ts'
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

/**
 * True when deflating the first `prefix` bytes of `raw` with `params` gives `target`'s first tokens
 * (all but those in the last PREFIX_MARGIN bytes, which saw less lookahead); the whole stream's
 * tokens when it is no longer than that. A wrong setting usually fails here, for the price of the
 * prefix.
 */
export function startAgrees(raw: Uint8Array, target: Tokens, params: DeflateParams, prefix: number): boolean {
  const whole = raw.length <= prefix
  const input = whole ? raw : raw.subarray(0, prefix)
  let tokens: Tokens
  try {
    tokens = parseDeflate(deflateWhole(input, params), input.length, 'archive-reblock').tokens
  } catch (err) {
    if (err instanceof DeltaFormatError) return false
    throw err
  }
  if (whole) return sameTokens(tokens, target)
  const limit = prefix - PREFIX_MARGIN
  let content = 0
  for (let i = 0; i < tokens.length && i < target.length && content < limit; i++) {
    if (tokens[i] !== target[i]) return false
    const t = tokens[i]!
    content += t > 255 ? t >>> 16 : 1
  }
  return true
}

export function sameTokens(a: Tokens, b: Tokens): boolean {
  const bytes = (t: Tokens) => new Uint8Array(t.buffer, t.byteOffset, t.byteLength)
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
  // A reblocked segment holds content (the container refuses an empty one): an empty stream in blocks
  // of its own (a stored one, or several empty ones) is puffed instead (kept compressed if it cannot be).
  if (raw.length === 0) return null
  for (const params of candidates) {
    if (raw.length > PREFIX && !startAgrees(raw, target.tokens, params, PREFIX)) continue
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
