/**
 * Spliced deflate streams: a target stream rebuilt mostly from the source's own tokens.
 *
 * Recompressing a target stream from its content means running deflate's match search over all of
 * it, which is what makes archive apply slow (level 9: ~40 ns a byte natively, more in pako). But
 * deflate's decisions are local: after a back-reference ends, what zlib emits next depends only on
 * the 32 KiB window behind it and the bytes ahead, so where a release leaves a stretch of the archive
 * unchanged, the target's tokens there are the source's tokens, and the client already has those (it
 * takes the source stream apart instead of merely inflating it). The delta records, per target
 * stream, runs of tokens to copy from the source's token sequence and, between them, "gaps": content
 * ranges deflated afresh with the recorded settings, restarted with the 32 KiB before the gap as a
 * preset dictionary (which is exactly zlib's state after a back-reference). Re-encoding the spliced
 * tokens (delta/deflate/encode.ts) in zlib's own blocks (zlib-blocks.ts) or the recorded ones gives
 * the stream's bytes. Make time proves every gap and the re-encoded bytes, so apply follows the plan
 * without searching (the plan is found by splice-plan.ts). docs/decisions/0019-token-splicing.md.
 */
import { encodeDeflate, encodeZlibDeflate } from '../deflate/encode.ts'
import { tokenizeDeflate } from '../deflate/parse.ts'
import type { Block, Tokens } from '../deflate/parse-types.ts'
import { check } from '../errors.ts'
import type { DeflateEngine } from './deflate-engine.ts'
import { type DeflateParams, deflateWhole } from './recompress.ts'

/** `gap` content bytes deflated afresh, then `count` tokens copied from source token `source` on. */
export interface SpliceRun {
  gap: number
  source: number
  count: number
}

export interface Splice {
  params: DeflateParams
  /** 'zlib': the blocks zlib cuts for these tokens (zlib-blocks.ts); else the stream's own. */
  blocks: Block[] | 'zlib'
  /** In stream order; the content after the last run is one more gap. */
  runs: SpliceRun[]
}

/** Deflate's window: what a restarted gap gets as its dictionary. */
export const WINDOW = 32 * 1024
/**
 * Input a gap's deflate reads past the gap, so the tokens that end at the gap's end were chosen
 * seeing what the original saw (a match looks at most 258 bytes ahead, lazy matching one more).
 */
const GAP_SLACK = 1024
/**
 * Content a copied run must cover. Restarting deflate after a run costs about a window of hashing,
 * so shorter runs would not pay for themselves; the decoder enforces it, which also bounds the work
 * a hostile plan can ask for to a few times the stream's size.
 */
export const MIN_RUN_BYTES = 4 * 1024

/** Content bytes a token stands for. */
export function tokenBytes(t: number): number {
  return t > 255 ? t >>> 16 : 1
}

/**
 * Content bytes `tokens` stand for: tokenBytes summed without a branch per token (a literal's
 * `t >>> 8` is 0, so `(0 - 1) >>> 31` adds its 1; a back-reference's length is in its high bits and
 * its `t >>> 8` is ≥ 1). Equal to the sum of tokenBytes for every 32-bit value; on the mixed literals
 * and back-references of a real stream the branch mispredicts often, and this loop is 2–4× faster.
 */
export function contentBytes(tokens: Tokens): number {
  let bytes = 0
  for (let k = 0; k < tokens.length; k++) {
    const t = tokens[k]!
    bytes += (t >>> 16) | (((t >>> 8) - 1) >>> 31)
  }
  return bytes
}

/** Deflates `input` as a stream whose window starts out holding `dictionary`. */
export type ResumedDeflate = (input: Uint8Array, dictionary: Uint8Array) => Uint8Array

/** The engine's restart when it has one and handles `params`, else pako's (the reference). */
export function resumedDeflate(params: DeflateParams, engine: DeflateEngine | undefined): ResumedDeflate {
  const resume = engine?.handles(params) ? engine.deflateResumedSync?.bind(engine) : undefined
  return resume
    ? (input, dictionary) => resume(input, params, dictionary)
    : (input, dictionary) => deflateWhole(input, params, dictionary)
}

/**
 * The content a gap [a, b) of a `length`-byte stream reads: the window before it (its deflate's
 * dictionary), the gap and, but for the last gap, a little past it, as the original deflate did.
 */
function gapReads(a: number, b: number, length: number): { from: number; to: number } {
  return { from: Math.max(0, a - WINDOW), to: b === length ? b : Math.min(length, b + GAP_SLACK) }
}

/** Deflates content[a, b) as zlib would have inside the whole stream, and returns its tokens. */
export function gapTokens(content: Uint8Array, a: number, b: number, deflate: ResumedDeflate): Tokens {
  const { from, to } = gapReads(a, b, content.length)
  return deflateGap(content.subarray(from, a), content.subarray(a, to), b - a, deflate)
}

/** The tokens of the first `gap` bytes of `input`, deflated after `dictionary`. */
function deflateGap(dictionary: Uint8Array, input: Uint8Array, gap: number, deflate: ResumedDeflate): Tokens {
  const tokens = tokenizeDeflate(
    deflate(input, dictionary),
    input.length,
    'archive-splice',
    dictionary,
  ).tokens
  let at = 0
  let n = 0
  while (at < gap && n < tokens.length) at += tokenBytes(tokens[n++]!)
  check(at === gap, 'archive-mismatch', 'a spliced gap does not end on a token boundary')
  return tokens.subarray(0, n)
}

/** A growing token buffer that never holds more than one token per content byte. */
class TokenList {
  private buf: Uint32Array
  length = 0
  private readonly max: number

  constructor(max: number, estimate: number) {
    this.max = max
    this.buf = new Uint32Array(Math.max(16, Math.min(max, estimate)))
  }

  private reserve(n: number): void {
    const need = this.length + n
    check(need <= this.max, 'archive-mismatch', 'spliced stream has more tokens than content bytes')
    if (need <= this.buf.length) return
    const grown = new Uint32Array(Math.min(this.max, Math.max(need, this.buf.length * 2)))
    grown.set(this.buf.subarray(0, this.length))
    this.buf = grown
  }

  append(tokens: Tokens): void {
    this.reserve(tokens.length)
    this.buf.set(tokens, this.length)
    this.length += tokens.length
  }

  finish(): Tokens {
    return this.buf.subarray(0, this.length)
  }
}

/**
 * Apply side: the stream's tokens from the plan. `content` is the stream's expanded bytes, `source`
 * the source's token sequence (expand.ts); every count and offset comes from an untrusted delta and
 * is checked, and every failure is a DeltaFormatError.
 */
export function splicedTokens(
  content: Uint8Array,
  splice: Splice,
  source: Tokens,
  engine?: DeflateEngine,
): Tokens {
  return assembleSplice(content.length, splice, source, engine, (a, b, deflate) =>
    gapTokens(content, a, b, deflate),
  )
}

/** Tokens of the gap [a, b) of the stream's content, deflated with `deflate`. */
type GapTokens = (a: number, b: number, deflate: ResumedDeflate) => Tokens

/**
 * Walks the plan over a stream of `length` content bytes: checks every run, calls `onGap` for each
 * gap [a, b) (b > a) and `onRun` for each copied run, in stream order. Counting a run's content bytes
 * is a walk over its tokens (most of a spliced stream's), so the counts are written to `runBytes`
 * when given, and taken from `known` (a previous walk's, same plan and source) instead of counted.
 */
function walkSplice(
  length: number,
  splice: Splice,
  source: Tokens,
  onGap: (a: number, b: number) => void,
  onRun: (copied: Tokens) => void,
  known?: Float64Array,
  runBytes?: Float64Array,
): void {
  let at = 0
  for (let i = 0; i < splice.runs.length; i++) {
    const run = splice.runs[i]!
    check(run.gap <= length - at, 'archive-mismatch', 'a spliced gap runs past the stream')
    if (run.gap > 0) onGap(at, at + run.gap)
    at += run.gap
    check(
      run.count > 0 && run.source <= source.length && run.count <= source.length - run.source,
      'archive-mismatch',
      'a spliced run lies outside the source tokens',
    )
    const copied = source.subarray(run.source, run.source + run.count)
    const bytes = known !== undefined ? known[i]! : contentBytes(copied)
    if (runBytes !== undefined) runBytes[i] = bytes
    check(bytes >= MIN_RUN_BYTES, 'archive-mismatch', 'a spliced run is too short')
    check(bytes <= length - at, 'archive-mismatch', 'a spliced run runs past the stream')
    onRun(copied)
    at += bytes
  }
  if (at < length) onGap(at, length)
}

function assembleSplice(
  length: number,
  splice: Splice,
  source: Tokens,
  engine: DeflateEngine | undefined,
  gapTokensOf: GapTokens,
  known?: Float64Array,
): Tokens {
  // Copied runs are most of a spliced stream: their counts plus a token per 4 gap bytes fit it.
  let copied = 0
  let gaps = 0
  for (const run of splice.runs) {
    copied += run.count
    gaps += run.gap
  }
  const out = new TokenList(length, copied + Math.ceil((gaps + 4096) / 4))
  const deflate = resumedDeflate(splice.params, engine)
  walkSplice(
    length,
    splice,
    source,
    (a, b) => out.append(gapTokensOf(a, b, deflate)),
    (run) => out.append(run),
    known,
  )
  return out.finish()
}

/** A plan checked against its stream and source: what a rebuild keeps, and each run's content bytes. */
export interface SpliceReads {
  /** The content ranges the gaps read (gapReads), merged where they touch or overlap, in order. */
  readonly reads: readonly { from: number; to: number }[]
  /** Content bytes of each copied run, in plan order (counted once, reused by the rebuild). */
  readonly runBytes: Float64Array
}

/**
 * The content ranges a plan's gaps read (gapReads), merged where they touch or overlap, in order:
 * all a rebuild needs to keep of the stream's content. Checks the plan as the rebuild does, and
 * records each run's content bytes so the rebuild need not walk the runs' tokens again.
 */
export function spliceReads(length: number, splice: Splice, source: Tokens): SpliceReads {
  const reads: { from: number; to: number }[] = []
  const runBytes = new Float64Array(splice.runs.length)
  walkSplice(
    length,
    splice,
    source,
    (a, b) => {
      const r = gapReads(a, b, length)
      const last = reads.at(-1)
      if (last !== undefined && r.from <= last.to) last.to = Math.max(last.to, r.to)
      else reads.push(r)
    },
    () => {},
    undefined,
    runBytes,
  )
  return { reads, runBytes }
}

/**
 * A spliced stream rebuilt from only the content its gaps read: `planned` is spliceReads' answer for
 * this stream, plan and source, and `kept[i]` holds content [reads[i].from, reads[i].to).
 */
export function rebuildSplicedFrom(
  length: number,
  planned: SpliceReads,
  kept: readonly Uint8Array[],
  splice: Splice,
  source: Tokens,
  engine?: DeflateEngine,
): Uint8Array {
  const { reads, runBytes } = planned
  check(runBytes.length === splice.runs.length, 'archive-mismatch', 'splice reads are for another plan')
  let r = 0
  const tokens = assembleSplice(
    length,
    splice,
    source,
    engine,
    (a, b, deflate) => {
      const { from, to } = gapReads(a, b, length)
      while (r < reads.length && reads[r]!.to < to) r++
      const range = reads[r]
      check(
        range !== undefined && range.from <= from && kept[r]!.length === range.to - range.from,
        'archive-mismatch',
        'a spliced gap reads content that was not kept',
      )
      const buf = kept[r]!
      return deflateGap(
        buf.subarray(from - range.from, a - range.from),
        buf.subarray(a - range.from, to - range.from),
        b - a,
        deflate,
      )
    },
    runBytes,
  )
  return encodeSpliced(tokens, splice)
}

/** Apply side: the stream rebuilt from its content, the source's tokens and the plan. */
export function rebuildSpliced(
  content: Uint8Array,
  splice: Splice,
  source: Tokens,
  engine?: DeflateEngine,
): Uint8Array {
  return encodeSpliced(splicedTokens(content, splice, source, engine), splice)
}

function encodeSpliced(tokens: Tokens, splice: Splice): Uint8Array {
  // zlib's blocks are cut and written in one walk over the tokens (same bytes as encodeDeflate).
  if (splice.blocks === 'zlib') return encodeZlibDeflate(tokens, splice.params.memLevel, splice.params)
  check(
    splice.blocks.at(-1)?.end === tokens.length,
    'archive-mismatch',
    'block list does not cover the spliced tokens',
  )
  return encodeDeflate({ tokens, blocks: splice.blocks })
}
