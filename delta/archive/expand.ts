/**
 * The "expanded" form of an archive: the file with every deflate stream we can handle replaced by its
 * uncompressed content. Deltas are computed between expanded forms (where unchanged files really are
 * unchanged bytes), and the target is rebuilt by walking its segment list and recompressing.
 *
 * The source side is always fully expanded (we never need to recompress it); the target side inflates
 * streams that pako reproduces exactly or whose tokens pako reproduces in other blocks (reblock.ts),
 * "puffs" the others (puff.ts: their tokens and blocks, re-encoded exactly on apply) and leaves what
 * cannot be taken apart as compressed literal bytes. When the target's streams are mostly puffed, the
 * source's are puffed too, so that like is diffed with like.
 */
import { tokenizeDeflatePrefix, tryParseDeflate } from '../deflate/parse.ts'
import type { Block, DeflateParse, Tokens } from '../deflate/parse-types.ts'
import { DeltaFormatError } from '../errors.ts'
import { concatBytes } from './bytes.ts'
import type { Checkpoint } from './checkpoints.ts'
import { crc32 } from './crc32.ts'
import type { DeflateEngine } from './deflate-engine.ts'
import { parseGzip } from './gzip.ts'
import { type Inflater, inflateRawPrefix } from './inflate.ts'
import { ARCHIVE_TOO_LARGE } from './limits.ts'
import { puffReference, puffTarget } from './puff-stream.ts'
import { findReblock, type Reblock } from './reblock.ts'
import {
  candidateParams,
  type DeferredProof,
  type DeflateParams,
  findDeflateParams,
  paramsForGzipXfl,
  paramsKey,
  zlibMemLevelOf,
} from './recompress.ts'
import type { Splice } from './splice.ts'
import { looksLikeTar, parseTar } from './tar.ts'
import { METHOD_DEFLATE, parseZip } from './zip.ts'

export type ArchiveKind = 'gzip' | 'zip'

export type Segment =
  | { kind: 'literal'; length: number }
  | {
      kind: 'deflate'
      rawLength: number
      compressedLength: number
      params: DeflateParams
      /** Proved restart points (checkpoints.ts); absent or empty: rebuilt in one piece. */
      checkpoints?: Checkpoint[]
    }
  | {
      /** Deflated with `params`, then re-encoded in `blocks` (reblock.ts); content in the expanded form. */
      kind: 'reblocked'
      rawLength: number
      compressedLength: number
      params: DeflateParams
      blocks: Block[]
    }
  | ({
      /** Rebuilt from the source's tokens and deflated gaps (splice.ts); content in the expanded form. */
      kind: 'spliced'
      rawLength: number
      compressedLength: number
    } & Splice)
  | {
      /** A stream rebuilt from its puffed tokens (puff.ts); `puffLength` bytes of the expanded form. */
      kind: 'tokens'
      puffLength: number
      compressedLength: number
    }

/** Bytes of the expanded form a segment takes. */
export function expandedSize(s: Segment): number {
  return s.kind === 'literal' ? s.length : s.kind === 'tokens' ? s.puffLength : s.rawLength
}

/** Bytes of the archive a segment rebuilds. */
export function archiveSize(s: Segment): number {
  return s.kind === 'literal' ? s.length : s.compressedLength
}

/** One archive member's byte range in expanded coordinates, with keys used to match it across versions. */
export interface EntryRange {
  path: string
  /** Content identity (CRC-32 + size of the data), '' for empty entries (directories match everything). */
  hash: string
  start: number
  /** Where the content starts: the bytes from `start` are headers (tar, pax, a zip local header). */
  dataStart: number
  end: number
}

export interface Expansion {
  expanded: Uint8Array
  segments: Segment[]
  entries: EntryRange[]
  /**
   * Deflate streams found / rebuilt as deflate segments / as reblocked / as token segments / from the
   * source's tokens (target side).
   */
  streams: number
  reproduced: number
  reblocked: number
  puffed: number
  spliced: number
  /**
   * Source side, when asked for: the tokens of every deflate stream the expansion inflated or
   * puffed, in order, one sequence (a stream that cannot be taken apart adds none). Spliced target
   * segments copy from it.
   */
  tokens?: Tokens
}

/** Segments rebuilt by recompressing with recorded settings. */
export type ParamsSegment = Extract<Segment, { kind: 'deflate' | 'reblocked' | 'spliced' }>

export function hasParams(s: Segment): s is ParamsSegment {
  return s.kind === 'deflate' || s.kind === 'reblocked' || s.kind === 'spliced'
}

/**
 * How a deflate stream is represented: params to recompress with; a Reblock (reblock.ts: params
 * whose tokens it has, and its own block list) to recompress and re-block; `{ puff }` to puff the
 * stream's parse (target side: kept only if the puffed form re-encodes to exactly these bytes);
 * 'reference-tokens' to puff it without that proof (source side, where it is only something to diff
 * against); null to keep it compressed.
 */
export type StreamForm =
  | DeflateParams
  | Reblock
  | { splice: Splice }
  | { puff: DeflateParse }
  | 'reference-tokens'
  | null

/**
 * Target side: a plan rebuilding the stream from the source's tokens with the first of `candidates`
 * that proves (splice-plan.ts), or null. Asked before the parameter search, which it makes unnecessary.
 */
export type Splicer = (
  raw: Uint8Array,
  compressed: Uint8Array,
  parse: DeflateParse,
  candidates: readonly DeflateParams[],
) => Splice | null

/** Streams below this are recompressed whole: a plan's runs need 4 KiB each to pay for a restart. */
const SPLICE_MIN_STREAM = 8 * 1024
/** Settings a plan is proved with, at most: the likely ones; a stream that fails them all is searched. */
const SPLICE_CANDIDATES = 4

export type DeflatePolicy = (
  raw: Uint8Array,
  compressed: Uint8Array,
  /** Likely settings from the container (a gzip header's XFL), tried after what already matched. */
  hints?: readonly DeflateParams[],
) => StreamForm

/** Source side: always inflate; the params are never used because the source is not rebuilt. */
export const inflateAll: DeflatePolicy = () => PLACEHOLDER_PARAMS
/** Source side of a delta whose target streams are puffed (container flag): puff every stream. */
export const puffAll: DeflatePolicy = () => 'reference-tokens'
const PLACEHOLDER_PARAMS: DeflateParams = {
  level: 0,
  memLevel: 8,
  windowBits: 15,
  strategy: 0,
  legacyHash: false,
}

/**
 * Target side: with a `splicer`, first try to rebuild the stream from the source's tokens with the
 * likely settings (zlib's block sizes say whether they are zlib's own or reblocked ones); else search
 * exact parameters, remembering what matched (entries of one zip agree); for a stream nothing
 * reproduces, look for settings that give its tokens (reblock.ts), else puff it. When searches keep
 * failing (a zip from a non-zlib deflater: most entries never match), later entries only get the
 * settings that already matched plus the likeliest few, instead of every candidate each. With
 * `deferred`, the engine's whole-stream proofs are left there for the caller (reproducesWith).
 */
export function recompressPolicy(
  budgetMs: number,
  totalBudgetMs: number,
  engine?: DeflateEngine,
  splicer?: Splicer,
  deferred?: DeferredProof[],
  /**
   * Milliseconds spent meanwhile on work that is not this search (the source's expansion, which the
   * splicer may run on first use), left out of the total budget.
   */
  excludedMs: () => number = () => 0,
): DeflatePolicy {
  const preferred: DeflateParams[] = []
  const started = Date.now()
  let hits = 0
  let misses = 0
  const reblocks: DeflateParams[] = []
  let reblockMisses = 0
  return (raw, compressed, hints = []) => {
    const budget = () => {
      const left = totalBudgetMs - (Date.now() - started - excludedMs())
      return left > 0 ? Math.min(budgetMs, left) : 0
    }
    const likely = [...preferred, ...hints]
    let parsed: DeflateParse | null | undefined
    const parse = () => {
      if (parsed === undefined) parsed = tryParseDeflate(compressed, raw.length, 'archive-stream')
      return parsed
    }
    if (splicer && raw.length >= SPLICE_MIN_STREAM && parse()) {
      const memLevel = zlibMemLevelOf(parse()!.blocks)
      const zlib = memLevel !== null
      // Nothing likely yet (a zip's first entry: no header hint): zlib's usual settings.
      const guesses = likely.length > 0 ? likely : candidateParams().slice(0, SPLICE_CANDIDATES)
      const candidates = zlib
        ? guesses.map((p) => (memLevel === undefined ? p : { ...p, memLevel }))
        : [...reblocks, ...reblockCandidates(hints)]
      const unique = [...new Map(candidates.map((p) => [paramsKey(p), p])).values()]
      const splice = splicer(raw, compressed, parse()!, unique.slice(0, SPLICE_CANDIDATES))
      if (splice) {
        const remembered = zlib ? preferred : reblocks
        if (!remembered.some((p) => paramsKey(p) === paramsKey(splice.params)))
          remembered.unshift(splice.params)
        return { splice }
      }
    }
    const search = { engine, deferred }
    let found = findDeflateParams(raw, compressed, {
      ...search,
      preferred: likely,
      budgetMs: budget(),
      maxTries: likely.length,
      grid: [],
    })
    if (!found.params) {
      // Before the grid, ask the block sizes which memLevel the stream could come from (or that none could).
      const memLevel = parse() ? zlibMemLevelOf(parse()!.blocks) : undefined
      const tried = new Set(likely.map(paramsKey))
      const grid = candidateParams().filter(
        (p) => !tried.has(paramsKey(p)) && (memLevel === undefined || p.memLevel === memLevel),
      )
      const hopeless = misses >= 3 && misses > 2 * hits
      found = findDeflateParams(raw, compressed, {
        ...search,
        budgetMs: budget(),
        maxTries: hopeless ? 4 : Number.POSITIVE_INFINITY,
        grid,
      })
    }
    if (found.params) {
      hits++
      if (!preferred.includes(found.params)) preferred.unshift(found.params)
      return found.params
    }
    misses++
    // zlib's tokens in other blocks (GNU gzip), else the stream's own tokens.
    parsed = parse()
    if (!parsed) return null
    const unique = new Map([...reblocks, ...reblockCandidates(hints)].map((p) => [paramsKey(p), p]))
    const candidates = [...unique.values()].slice(
      0,
      reblockMisses >= 3 && reblockMisses > 2 * reblocks.length ? reblocks.length + 2 : undefined,
    )
    const reblock = findReblock(raw, compressed, parsed, candidates, engine)
    if (!reblock) {
      reblockMisses++
      return { puff: parsed }
    }
    if (!reblocks.some((p) => paramsKey(p) === paramsKey(reblock.params))) reblocks.unshift(reblock.params)
    return reblock
  }
}

/**
 * Settings whose tokens a reblocked stream may have. GNU gzip's are zlib's with the classic hash at
 * its own level: the one its header's XFL names first (2 for -9, 4 for -1; 0 covers -2 to -8, so
 * those follow), then zlib's other hash at the likely levels. A wrong one is usually ruled out on a
 * 256 KiB prefix (reblock.ts).
 */
function reblockCandidates(hints: readonly DeflateParams[]): DeflateParams[] {
  const out = new Map<string, DeflateParams>()
  const add = (level: number, legacyHash: boolean) => {
    const p: DeflateParams = { level, memLevel: 8, windowBits: 15, strategy: 0, legacyHash }
    if (!out.has(paramsKey(p))) out.set(paramsKey(p), p)
  }
  const likely = [...hints.map((h) => h.level), 9, 6]
  for (const level of [...likely, 1, 2, 3, 4, 5, 7, 8]) add(level, true)
  for (const level of likely) add(level, false)
  return [...out.values()]
}

class Builder {
  readonly parts: Uint8Array[] = []
  readonly segments: Segment[] = []
  length = 0
  streams = 0
  reproduced = 0
  reblocked = 0
  puffed = 0
  spliced = 0
  private readonly maxLength: number
  /** Token sequences of the inflated streams, when the caller wants them (source side). */
  private readonly tokens: Tokens[] | null
  /** Parses the inflater already made (tokenTakingInflater), oldest first. */
  private readonly taken: DeflateParse[]

  constructor(maxLength: number, taken: DeflateParse[] | null) {
    this.maxLength = maxLength
    this.tokens = taken ? [] : null
    this.taken = taken ?? []
  }

  /** The tokens of the stream whose content is `raw`: from the inflater's parse, else parsed now. */
  private tokensOf(raw: Uint8Array, compressed: Uint8Array): Tokens | undefined {
    const at = this.taken.findIndex((p) => p.content === raw)
    if (at >= 0) return this.taken.splice(0, at + 1)[at]!.tokens
    return tryParseDeflate(compressed, raw.length, 'archive-source')?.tokens
  }

  private grow(n: number): void {
    this.length += n
    if (this.length > this.maxLength) {
      throw new DeltaFormatError(ARCHIVE_TOO_LARGE, `expanded archive exceeds ${this.maxLength} bytes`)
    }
  }

  literal(bytes: Uint8Array): void {
    if (bytes.length === 0) return
    this.grow(bytes.length)
    this.parts.push(bytes)
    const last = this.segments.at(-1)
    if (last?.kind === 'literal') last.length += bytes.length
    else this.segments.push({ kind: 'literal', length: bytes.length })
  }

  /** Adds an inflated stream; returns its expanded start offset, or -1 unless it was inflated. */
  stream(
    raw: Uint8Array,
    compressed: Uint8Array,
    policy: DeflatePolicy,
    hints?: readonly DeflateParams[],
  ): number {
    this.streams++
    let params = policy(raw, compressed, hints)
    if (this.tokens && params !== null) {
      // Source side: every stream the source expansion takes apart, inflated or puffed alike.
      const tokens = this.tokensOf(raw, compressed)
      if (tokens) this.tokens.push(tokens)
    }
    if (params === 'reference-tokens' || (params !== null && 'puff' in params)) {
      const puffed =
        params === 'reference-tokens' ? puffReference(raw, compressed) : puffTarget(params.puff, compressed)
      if (puffed !== null) {
        this.puffed++
        this.grow(puffed.length)
        this.parts.push(puffed)
        this.segments.push({ kind: 'tokens', puffLength: puffed.length, compressedLength: compressed.length })
        return -1
      }
      // A reference stream we cannot take apart is still useful as content; a target one stays as is.
      params = params === 'reference-tokens' ? PLACEHOLDER_PARAMS : null
    }
    if (params === null) {
      this.literal(compressed)
      return -1
    }
    const start = this.length
    this.grow(raw.length)
    this.parts.push(raw)
    const sizes = { rawLength: raw.length, compressedLength: compressed.length }
    if ('splice' in params) {
      this.spliced++
      this.segments.push({ kind: 'spliced', ...sizes, ...params.splice })
    } else if ('blocks' in params) {
      this.reblocked++
      this.segments.push({ kind: 'reblocked', ...sizes, params: params.params, blocks: params.blocks })
    } else {
      this.reproduced++
      this.segments.push({ kind: 'deflate', ...sizes, params })
    }
    return start
  }

  finish(entries: EntryRange[]): Expansion {
    const expanded = concatBytes(this.parts)
    let tokens: Tokens | undefined
    if (this.tokens) {
      tokens = new Uint32Array(this.tokens.reduce((n, t) => n + t.length, 0))
      let at = 0
      for (const t of this.tokens) {
        tokens.set(t, at)
        at += t.length
      }
    }
    return {
      ...(tokens ? { tokens } : {}),
      expanded,
      segments: this.segments,
      entries,
      streams: this.streams,
      reproduced: this.reproduced,
      reblocked: this.reblocked,
      puffed: this.puffed,
      spliced: this.spliced,
    }
  }
}

function tarEntries(content: Uint8Array, base: number): EntryRange[] {
  if (!looksLikeTar(content)) return []
  try {
    return parseTar(content).entries.map((e) => ({
      path: e.path,
      hash: e.size === 0 ? '' : `${crc32(content.subarray(e.dataOffset, e.dataOffset + e.size))}:${e.size}`,
      start: base + e.headerOffset,
      dataStart: base + e.dataOffset,
      end: base + e.end,
    }))
  } catch (err) {
    // A damaged tar inside a valid gzip still diffs fine as plain bytes; it just is not entry-aligned.
    if (err instanceof DeltaFormatError) return []
    throw err
  }
}

/**
 * An inflater that takes each stream apart while inflating it (one pass for content and tokens),
 * leaving the parses in `taken` for the Builder; streams the parse refuses go to `base`. `sizeHint`
 * guesses the content size, to size the parse's output.
 */
function tokenTakingInflater(
  base: Inflater,
  taken: DeflateParse[],
  sizeHint: (input: Uint8Array, maxOutput: number) => number,
): Inflater {
  return (input, maxOutput, code, overflowCode = code) => {
    let r: ReturnType<typeof tokenizeDeflatePrefix>
    try {
      // Only the tokens and content are kept (Builder.tokensOf), so no block headers are compared.
      r = tokenizeDeflatePrefix(input, maxOutput, code, sizeHint(input, maxOutput))
    } catch (err) {
      if (err instanceof DeltaFormatError) return base(input, maxOutput, code, overflowCode)
      throw err
    }
    taken.push(r.parse)
    return { data: r.parse.content, consumed: r.consumed }
  }
}

/**
 * A gzip file ends with its last member's size (ISIZE, mod 2^32): exact for the usual one member.
 * For an earlier member of a multi-member file it may be far too big, so it is capped at 8× the
 * compressed bytes left (more room comes by doubling).
 */
function gzipSizeHint(input: Uint8Array): number {
  const n = input.length
  if (n < 4) return 0
  const isize = (input[n - 4]! | (input[n - 3]! << 8) | (input[n - 2]! << 16) | (input[n - 1]! << 24)) >>> 0
  return Math.min(isize, 8 * n + 64 * 1024)
}

export function expandGzip(
  bytes: Uint8Array,
  policy: DeflatePolicy,
  maxExpanded: number,
  inflate: Inflater = inflateRawPrefix,
  collectTokens = false,
): Expansion {
  const taken: DeflateParse[] | null = collectTokens ? [] : null
  const file = parseGzip(
    bytes,
    maxExpanded,
    taken ? tokenTakingInflater(inflate, taken, gzipSizeHint) : inflate,
  )
  const out = new Builder(maxExpanded, taken)
  const entries: EntryRange[] = []
  for (const m of file.members) {
    out.literal(bytes.subarray(m.start, m.dataStart))
    const at = out.stream(
      m.content,
      bytes.subarray(m.dataStart, m.dataEnd),
      policy,
      paramsForGzipXfl(m.header.xfl),
    )
    if (at >= 0) entries.push(...tarEntries(m.content, at))
    out.literal(bytes.subarray(m.dataEnd, m.end))
  }
  out.literal(bytes.subarray(file.trailingStart))
  return out.finish(entries)
}

/** Inflates one zip entry, or returns null when it does not decode to exactly what the directory says. */
function inflateZipEntry(data: Uint8Array, size: number, crc: number, inflate: Inflater): Uint8Array | null {
  try {
    const { data: raw, consumed } = inflate(data, size, 'zip-deflate')
    return consumed === data.length && raw.length === size && crc32(raw) === crc ? raw : null
  } catch (err) {
    if (err instanceof DeltaFormatError) return null
    throw err
  }
}

export function expandZip(
  bytes: Uint8Array,
  policy: DeflatePolicy,
  maxExpanded: number,
  inflate: Inflater = inflateRawPrefix,
  collectTokens = false,
): Expansion {
  const zip = parseZip(bytes)
  const taken: DeflateParse[] | null = collectTokens ? [] : null
  // A zip entry is inflated to exactly the size its directory records.
  const entryInflate = taken ? tokenTakingInflater(inflate, taken, (_, maxOutput) => maxOutput) : inflate
  const out = new Builder(maxExpanded, taken)
  const entries: EntryRange[] = []
  let cursor = 0
  for (const e of zip.entries) {
    out.literal(bytes.subarray(cursor, e.localOffset))
    const start = out.length
    out.literal(bytes.subarray(e.localOffset, e.dataOffset))
    const data = bytes.subarray(e.dataOffset, e.dataOffset + e.compressedSize)
    const encrypted = (e.flags & 1) !== 0
    const raw =
      e.method === METHOD_DEFLATE && !encrypted
        ? inflateZipEntry(data, e.uncompressedSize, e.crc, entryInflate)
        : null
    if (raw === null) out.literal(data)
    else out.stream(raw, data, policy)
    const hash = e.uncompressedSize === 0 ? '' : `${e.crc}:${e.uncompressedSize}`
    entries.push({
      path: e.path,
      hash,
      start,
      dataStart: start + e.dataOffset - e.localOffset,
      end: out.length,
    })
    cursor = e.dataOffset + e.compressedSize
  }
  out.literal(bytes.subarray(cursor))
  return out.finish(entries)
}

/** `collectTokens`: also take every inflated stream apart into tokens (Expansion.tokens). */
export function expand(
  kind: ArchiveKind,
  bytes: Uint8Array,
  policy: DeflatePolicy,
  maxExpanded: number,
  inflate: Inflater = inflateRawPrefix,
  collectTokens = false,
): Expansion {
  return kind === 'gzip'
    ? expandGzip(bytes, policy, maxExpanded, inflate, collectTokens)
    : expandZip(bytes, policy, maxExpanded, inflate, collectTokens)
}
