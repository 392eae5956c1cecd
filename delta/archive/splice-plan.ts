/**
 * Create side of spliced segments (splice.ts): where a target stream's tokens appear verbatim in the
 * source's, which settings reproduce the gaps between, and whether following the plan is expected to
 * beat recompressing the stream whole. docs/decisions/0019-token-splicing.md.
 */
import { encodeDeflate } from '../deflate/encode.ts'
import type { DeflateParse, Tokens } from '../deflate/parse-types.ts'
import { blocksEqual, zlibBlocks } from '../deflate/zlib-blocks.ts'
import { DeltaFormatError } from '../errors.ts'
import { readU32, sameBytes } from './bytes.ts'
import { checkpointsPay } from './checkpoints.ts'
import type { DeflateEngine } from './deflate-engine.ts'
import type { ArchiveKind } from './expand.ts'
import { sameTokens, startAgrees } from './reblock.ts'
import { type DeflateParams, paramsForGzipXfl, searchCostOfLevel } from './recompress.ts'
import {
  gapTokens,
  MIN_RUN_BYTES,
  resumedDeflate,
  type Splice,
  type SpliceRun,
  tokenBytes,
  WINDOW,
} from './splice.ts'
import { METHOD_DEFLATE, parseZip } from './zip.ts'

/** A plan whose gaps hold more than this share of the content saves too little over a full deflate. */
const MAX_GAP_SHARE = 0.5
/** Tokens hashed together to find where a target run starts in the source. */
const ANCHOR = 8
/** Source positions indexed: every 4th (a quarter of the hashing; a run is found ≤ 3 tokens late). */
const ANCHOR_STEP = 4
/** Candidates tried per anchor. */
const CANDIDATES = 8

/** A stretch of target tokens [i, i + n) equal to source tokens [j, j + n). */
export interface Match {
  i: number
  j: number
  n: number
}

function anchorHash(tokens: Tokens, at: number, mask: number): number {
  let h = 0
  for (let k = 0; k < ANCHOR; k++) h = (Math.imul(h ^ tokens[at + k]!, 0x9e3779b1) + k) | 0
  return (h ^ (h >>> 15)) & mask
}

function commonRun(target: Tokens, i: number, source: Tokens, j: number): number {
  let n = 0
  while (i + n < target.length && j + n < source.length && target[i + n] === source[j + n]) n++
  return n
}

/**
 * The source's token sequence hashed by ANCHOR-token windows, built once per archive and shared by
 * all of its target streams.
 */
export class SourceTokenIndex {
  readonly tokens: Tokens
  readonly mask: number
  readonly head: Int32Array
  readonly next: Int32Array

  constructor(tokens: Tokens) {
    this.tokens = tokens
    const anchors = Math.max(0, Math.floor((tokens.length - ANCHOR) / ANCHOR_STEP) + 1)
    const bits = Math.min(22, Math.max(10, Math.ceil(Math.log2(Math.max(2, anchors)))))
    this.mask = (1 << bits) - 1
    this.head = new Int32Array(1 << bits).fill(-1)
    this.next = new Int32Array(anchors)
    // Inserted back to front, so each chain lists the earliest occurrences first. Chains hold
    // anchor numbers (position / ANCHOR_STEP).
    for (let a = anchors - 1; a >= 0; a--) {
      const h = anchorHash(tokens, a * ANCHOR_STEP, this.mask)
      this.next[a] = this.head[h]!
      this.head[h] = a
    }
  }
}

/** How many tokens before target[i] and source[j] also agree, at most ANCHOR_STEP − 1, after `previous`. */
function extendBack(
  target: Tokens,
  i: number,
  source: Tokens,
  j: number,
  previous: Match | undefined,
): number {
  const floor = previous ? previous.i + previous.n : 0
  let back = 0
  while (
    back < ANCHOR_STEP - 1 &&
    i - back > floor &&
    j - back > 0 &&
    target[i - back - 1] === source[j - back - 1]
  )
    back++
  return back
}

/**
 * Stretches of the target's tokens that appear verbatim in the source's, in target order, each
 * ending on a back-reference (so the gap after it starts where zlib's state is what a restart
 * gives) unless it ends the stream, and each covering at least MIN_RUN_BYTES of content.
 */
function findMatches(target: Tokens, index: SourceTokenIndex, offsets: Float64Array): Match[] | null {
  const out: Match[] = []
  const source = index.tokens
  if (target.length < ANCHOR || source.length < ANCHOR) return null
  const content = offsets[target.length]!
  // More uncovered content than this and the plan is hopeless: stop looking.
  const allowed = content * MAX_GAP_SHARE
  let covered = 0
  let i = 0
  // Where the last match would continue: after an edit that keeps the token count, the same offset.
  let expected = -1
  while (i + ANCHOR <= target.length) {
    let best = 0
    let bestJ = -1
    let back = 0
    if (expected >= 0 && expected < source.length) {
      best = commonRun(target, i, source, expected)
      bestJ = expected
    }
    if (best < ANCHOR) {
      let tried = 0
      let a = index.head[anchorHash(target, i, index.mask)]!
      for (; a >= 0 && tried < CANDIDATES; a = index.next[a]!, tried++) {
        const j = a * ANCHOR_STEP
        const n = commonRun(target, i, source, j)
        if (n > best) {
          best = n
          bestJ = j
        }
      }
      // Only every ANCHOR_STEP-th source position is indexed, so a run may have started up to that
      // many tokens earlier (after the previous match): take those back.
      if (best >= ANCHOR) back = extendBack(target, i, source, bestJ, out.at(-1))
    }
    const start = i - back
    let n = best + back
    if (start + n < target.length) while (n > 0 && target[start + n - 1]! <= 255) n--
    if (n >= ANCHOR && offsets[start + n]! - offsets[start]! >= MIN_RUN_BYTES) {
      out.push({ i: start, j: bestJ - back, n })
      covered += offsets[start + n]! - offsets[start]!
      i = start + n
      expected = bestJ - back + n
    } else {
      i++
      if (expected >= 0) expected++
      if (offsets[i]! - covered > allowed) return null
    }
  }
  return content - covered > allowed ? null : out
}

/** Content offset of every token boundary: offsets[k] = bytes before token k. */
function tokenOffsets(tokens: Tokens): Float64Array {
  const offsets = new Float64Array(tokens.length + 1)
  let at = 0
  for (let k = 0; k < tokens.length; k++) {
    at += tokenBytes(tokens[k]!)
    offsets[k + 1] = at
  }
  return offsets
}

/**
 * Where a gap that failed to reproduce may restart instead: the end of an earlier back-reference
 * inside the match before it, at least `back` bytes earlier, keeping that match long enough; the
 * match's new length, or 0 when it should be dropped (the gap then swallows it).
 */
function shortenedMatch(m: Match, target: Tokens, offsets: Float64Array, back: number): number {
  const limit = offsets[m.i + m.n]! - back
  let n = m.n - 1
  while (n > 0 && (offsets[m.i + n]! > limit || target[m.i + n - 1]! <= 255)) n--
  return n >= ANCHOR && offsets[m.i + n]! - offsets[m.i]! >= MIN_RUN_BYTES ? n : 0
}

/** How far back a failing gap's start moves on each retry (a few tokens, then a whole window). */
const BACKOFFS = [64, 2048, WINDOW]

/** Where a target stream's tokens appear in the source's: found once, proved per candidate setting. */
export interface SpliceMatches {
  offsets: Float64Array
  matches: readonly Match[]
}

/**
 * Create side, first half: the runs of `target`'s tokens found verbatim in the source's; null when
 * they would leave more than half the content to deflate.
 */
export function matchSplice(target: Tokens, source: SourceTokenIndex): SpliceMatches | null {
  const offsets = tokenOffsets(target)
  const matches = findMatches(target, source, offsets)
  return matches ? { offsets, matches } : null
}

/** Content a candidate setting must reproduce the stream's start on before its gaps are proved. */
const PREFIX = 64 * 1024

/**
 * Create side, second half: the plan with gaps deflated by `params`, or null when a gap cannot be
 * reproduced. Every gap is proved (with pako, which defines the delta, and with `engine`, which the
 * client may use instead), moving its start back when zlib's state there was not what a restart
 * gives; then the re-encoded stream is compared with `compressed` (content `raw`, parse `target`).
 */
export function proveSplice(
  found: SpliceMatches,
  raw: Uint8Array,
  compressed: Uint8Array,
  target: DeflateParse,
  params: DeflateParams,
  engine?: DeflateEngine,
  /** The caller already checked startAgrees (findSplice). */
  startChecked = false,
): Splice | null {
  const { offsets } = found
  if (!startChecked && !startAgrees(raw, target.tokens, params, PREFIX)) return null
  const deflaters = [resumedDeflate(params, undefined)]
  if (restartsNatively(params, engine)) deflaters.push(resumedDeflate(params, engine))
  const kept: Match[] = []
  let gapStart = 0
  const proves = (from: number, to: number): boolean => {
    if (offsets[from] === offsets[to]) return true
    const want = target.tokens.subarray(from, to)
    try {
      return deflaters.every((d) => sameTokens(gapTokens(raw, offsets[from]!, offsets[to]!, d), want))
    } catch (err) {
      if (err instanceof DeltaFormatError) return false
      throw err
    }
  }
  for (const m of [...found.matches, null]) {
    const gapEnd = m ? m.i : target.tokens.length
    let ok = proves(gapStart, gapEnd)
    for (const back of BACKOFFS) {
      if (ok) break
      const previous = kept.at(-1)
      if (!previous) break
      const n = shortenedMatch(previous, target.tokens, offsets, back)
      if (n === 0) {
        kept.pop()
        gapStart = kept.length > 0 ? kept.at(-1)!.i + kept.at(-1)!.n : 0
      } else {
        previous.n = n
        gapStart = previous.i + n
      }
      ok = proves(gapStart, gapEnd)
    }
    if (!ok) return null
    if (m) {
      kept.push({ ...m })
      gapStart = m.i + m.n
    }
  }
  const runs: SpliceRun[] = []
  let at = 0
  let bytes = 0
  for (const m of kept) {
    runs.push({ gap: offsets[m.i]! - at, source: m.j, count: m.n })
    at = offsets[m.i + m.n]!
    bytes += at - offsets[m.i]!
  }
  if (raw.length - bytes > raw.length * MAX_GAP_SHARE) return null
  const zlib = zlibBlocks(target.tokens, params.memLevel, params)
  const blocks = blocksEqual(zlib, target.blocks) ? 'zlib' : target.blocks
  const rebuilt = encodeDeflate({ tokens: target.tokens, blocks: blocks === 'zlib' ? zlib : blocks })
  return sameBytes(rebuilt, compressed) ? { params, blocks, runs } : null
}

/**
 * Whether following a plan is expected to beat recompressing the stream whole on the client the delta
 * is made for (`native`: it has a deflate engine for these settings, as the agent has Node's zlib for
 * npm tarballs). Figures measured in a fresh Node process, as the agent applies an update, on the
 * 2-core bench machine: taking the source apart, assembling and re-encoding ≈ 12 ns per content byte
 * plus ≈ 60 ms of JIT warm-up for those loops; zlib's level-9 search ≈ 40 ns per byte natively
 * (≈ 1.6× faster on 2 cores for streams that get checkpoints) and 60–190 ns in pako depending on the
 * content (the lower figure is used), scaled by searchCostOfLevel for the stream's `level`; a
 * gap's restart about a window of hashing. Cold applies
 * measured both ways: typescript (23 MB, native) 0.53 s spliced vs 1.10 s whole; react-dom re-gzipped
 * by GNU gzip (4.5 MB, pako) 0.44 vs 0.85 s; lodash (2.3 MB, pako) 0.21 vs 0.17 s; lodash-es (1.1 MB,
 * pako) 0.13 vs 0.10 s; @types/node (2.3 MB, native) 0.14 vs 0.08 s — the model sides with the faster
 * in each case: level-9 streams of a few MB and up splice. (The last three are level 6, npm's
 * default, where the whole deflate is a third as dear: before the level counted, lodash and
 * @types/node had their plans matched and proved at delta creation, only to be deflated whole.)
 */
export function spliceWorthIt(
  rawLength: number,
  gapBytes: number,
  runs: number,
  native: boolean,
  level: number,
): boolean {
  const searchNs = (native ? 40 : 60) * searchCostOfLevel(level)
  const cores = native && checkpointsPay(rawLength, level) ? 1.6 : 1
  const whole = (rawLength * searchNs) / cores
  const spliced = rawLength * 12 + gapBytes * searchNs + runs * WINDOW * (native ? 2 : 6) + 60e6
  return spliced < whole
}

/**
 * Whether some stream of `target` could be worth splicing (spliceWorthIt with no gap at all), judged
 * from its headers before the source is taken apart into tokens: that parse runs at about a third of
 * inflate speed and is wasted when nothing splices (npm's level-6 tarballs of a few MB). A gzip
 * member's XFL names its level and the file ends with its size (ISIZE, exact for the usual single
 * member); a zip directory lists every entry's size but not its level, so level 9 is assumed, and pako
 * (the dearer whole deflate). Anything unexpected answers yes: this only decides speed, never bytes.
 */
export function spliceMayPay(kind: ArchiveKind, target: Uint8Array, engine?: DeflateEngine): boolean {
  const pays = (rawLength: number, params: DeflateParams, native: boolean) =>
    spliceWorthIt(rawLength, 0, 1, native, params.level)
  if (kind === 'gzip') {
    if (target.length < 18) return true
    const isize = readU32(target, target.length - 4)
    // Less than half the file: several members (ISIZE is only the last one's) or incompressible data.
    if (isize < target.length / 2) return true
    return paramsForGzipXfl(target[8]!).some((p) => pays(isize, p, restartsNatively(p, engine)))
  }
  let entries: ReturnType<typeof parseZip>['entries']
  try {
    entries = parseZip(target).entries
  } catch (err) {
    if (err instanceof DeltaFormatError) return true
    throw err
  }
  const dearest: DeflateParams = { level: 9, memLevel: 8, windowBits: 15, strategy: 0, legacyHash: false }
  return entries.some((e) => e.method === METHOD_DEFLATE && pays(e.uncompressedSize, dearest, false))
}

/** True when `engine` would deflate the client's gaps for `params` (see resumedDeflate). */
function restartsNatively(params: DeflateParams, engine: DeflateEngine | undefined): boolean {
  return engine?.handles(params) === true && engine.deflateResumedSync !== undefined
}

/**
 * Create side: the first of `candidates` whose plan rebuilds `compressed` from `source`'s tokens
 * (see matchSplice and proveSplice) and, with `payoff`, is expected to apply faster than deflating
 * the stream whole (spliceWorthIt); or null. `source` may be a function that builds the index: it is
 * only called when some candidate could pay and reproduces the stream's start.
 */
export function findSplice(
  raw: Uint8Array,
  compressed: Uint8Array,
  target: DeflateParse,
  source: SourceTokenIndex | (() => SourceTokenIndex),
  candidates: readonly DeflateParams[],
  engine?: DeflateEngine,
  payoff = true,
): Splice | null {
  const pays = (p: DeflateParams, gapBytes: number, runs: number) =>
    !payoff || spliceWorthIt(raw.length, gapBytes, runs, restartsNatively(p, engine), p.level)
  // proveSplice's first check, made before the token matching rather than after it: a setting that
  // cannot pay even with no gap (a plan has at least one run), or whose tokens part from the stream's
  // at its start, is never proved. On react-dom 18.2 → 18.3.1 (level 9, Node's hash) only the classic
  // hash could pay and its start parts at once, so the matching, most of a second, was for nothing.
  const viable = candidates.filter((p) => pays(p, 0, 1) && startAgrees(raw, target.tokens, p, PREFIX))
  if (viable.length === 0) return null
  const found = matchSplice(target.tokens, typeof source === 'function' ? source() : source)
  if (!found) return null
  let copied = 0
  for (const m of found.matches) copied += found.offsets[m.i + m.n]! - found.offsets[m.i]!
  for (const params of viable) {
    if (!pays(params, raw.length - copied, found.matches.length)) continue
    const splice = proveSplice(found, raw, compressed, target, params, engine, true)
    if (splice) return splice
  }
  return null
}
