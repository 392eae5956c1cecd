/**
 * Exact recompression: find pako deflate settings whose output equals a given deflate stream byte for
 * byte, so the client can rebuild the compressed file from its uncompressed content.
 *
 * Each candidate is run as a stream and compared chunk by chunk against the original; a wrong setting
 * usually diverges in the first emitted block (different matches give different Huffman trees), so it
 * is abandoned after deflating a few tens of KiB instead of the whole input. The right setting runs to
 * the end, which is also the verification.
 */
import { Deflate, deflateRaw, type Z_Strategy } from 'pako'
import { BLOCK_STORED, type Block } from '../deflate/parse-types.ts'
import { settlingBoundary } from './block-boundaries.ts'
import { sameBytes } from './bytes.ts'
import type { DeflateEngine } from './deflate-engine.ts'

export interface DeflateParams {
  level: number
  memLevel: number
  windowBits: number
  strategy: number
  /** pako 3 ships two hash functions: classic zlib (legacy) and the chromium/node one (default). */
  legacyHash: boolean
}

export function paramsKey(p: DeflateParams): string {
  return `${p.level}/${p.memLevel}/${p.windowBits}/${p.strategy}/${p.legacyHash ? 'zlib' : 'node'}`
}

/** Most likely first: node's zlib defaults (npm pack uses level 9), gzip's default 6, then the rest. */
export function candidateParams(): DeflateParams[] {
  const out: DeflateParams[] = []
  const seen = new Set<string>()
  const add = (level: number, memLevel: number, legacyHash: boolean) => {
    const p: DeflateParams = { level, memLevel, windowBits: 15, strategy: 0, legacyHash }
    const key = paramsKey(p)
    if (seen.has(key)) return
    seen.add(key)
    out.push(p)
  }
  for (const legacy of [false, true]) for (const level of [9, 6]) add(level, 8, legacy)
  for (const legacy of [false, true]) for (let level = 1; level <= 9; level++) add(level, 8, legacy)
  for (const legacy of [false, true])
    for (let memLevel = 9; memLevel >= 1; memLevel--)
      for (let level = 1; level <= 9; level++) add(level, memLevel, legacy)
  return out
}

/**
 * What a gzip header's XFL byte says about the level: zlib writes 2 for level 9, 4 for the fastest
 * settings (level 1, Huffman-only, RLE), 0 for everything else (6 is the default). Tried first, with
 * both hash functions, so a typical stream is proved on the first or second candidate.
 */
export function paramsForGzipXfl(xfl: number): DeflateParams[] {
  const level = xfl === 2 ? 9 : xfl === 4 ? 1 : 6
  return [false, true].map((legacyHash) => ({ level, memLevel: 8, windowBits: 15, strategy: 0, legacyHash }))
}

const INPUT_SLICE = 16 * 1024

function makeDeflate(params: DeflateParams, chunkSize: number): Deflate {
  return new Deflate({
    raw: true,
    level: params.level,
    memLevel: params.memLevel,
    windowBits: params.windowBits,
    strategy: params.strategy as Z_Strategy,
    legacyHash: params.legacyHash,
    chunkSize,
  })
}

type Verdict = 'match' | 'mismatch' | 'undecided'

/**
 * Deflates `raw` with `params` (pako) and compares with `compressed` as output appears, stopping at the
 * first difference. With `inputLimit`, stops after feeding that many input bytes: 'undecided' then means
 * everything emitted so far agreed.
 */
function compareDeflate(
  raw: Uint8Array,
  compressed: Uint8Array,
  params: DeflateParams,
  inputLimit = raw.length,
): Verdict {
  const deflate = makeDeflate(params, 8 * 1024)
  let pos = 0
  let ok = true
  deflate.onData = (chunk) => {
    if (!ok) return
    if (pos + chunk.length > compressed.length) {
      ok = false
      return
    }
    for (let i = 0; i < chunk.length; i++) {
      if (chunk[i] !== compressed[pos + i]) {
        ok = false
        return
      }
    }
    pos += chunk.length
  }
  deflate.onEnd = () => {}
  const end = Math.min(raw.length, inputLimit)
  for (let at = 0; ok && at < end; at += INPUT_SLICE) {
    deflate.push(raw.subarray(at, Math.min(end, at + INPUT_SLICE)), false)
  }
  if (!ok) return 'mismatch'
  if (end < raw.length) return 'undecided'
  deflate.push(new Uint8Array(0), true)
  return deflate.err === 0 && pos === compressed.length ? 'match' : 'mismatch'
}

/** True when deflating `raw` with `params` yields exactly `compressed`; stops at the first difference. */
export function reproduces(raw: Uint8Array, compressed: Uint8Array, params: DeflateParams): boolean {
  return compareDeflate(raw, compressed, params) === 'match'
}

/**
 * zlib's match search at `level`, relative to level 9: levels 4–9 differ in how long a hash chain they
 * follow and when they stop at a good-enough match. Measured with Node's zlib on the bench's tars
 * (lodash, lodash-es, react-dom, @types/node; best of 3 each): level 6, npm's default, costs 0.33–0.54
 * of level 9, level 1 0.10–0.16. Rounded towards the middle; pako scales the same way.
 */
export function searchCostOfLevel(level: number): number {
  return SEARCH_COST_OF_LEVEL[level] ?? 1
}
const SEARCH_COST_OF_LEVEL = [0.1, 0.13, 0.15, 0.17, 0.21, 0.28, 0.38, 0.45, 0.69, 1]

/**
 * Input checked before the whole stream is deflated: enough for the first few deflate blocks, where a
 * wrong setting shows (different matches, different Huffman trees), so wrong guesses stay cheap.
 */
export const PREFIX_CHECK = 256 * 1024

/**
 * How far before the end of a prefix an engine's deflate of it may part from the whole stream's.
 * zlib decides each token from input up to 262 bytes ahead (MIN_LOOKAHEAD, which covers the lazy
 * match), so a prefix run differs from the whole run only there; blocks ending earlier come out bit
 * for bit the same. The margin is a whole 64 KiB window plus slack, so a zlib build that reads its
 * input in other pieces (Chromium's, in Node) stays on the safe side.
 */
export const PREFIX_SETTLED = 66 * 1024

/**
 * Below this much input a faster engine is not worth asking for: its set-up (a probe once per process,
 * thread hand-offs) costs about what pako needs for a stream this small, even cold.
 */
export const ENGINE_MIN_INPUT = 128 * 1024

/**
 * How far the engine's prefix may reach for a first block boundary when none ends within the usual
 * prefix: level-6 text fills a block's 2^14 − 1 tokens with about 230 KB (lodash), and a native deflate
 * of 300 KB costs less than pako streaming the usual prefix (measured on lodash and lodash-es: about
 * 5 ms against 36 ms, cold).
 */
const LONG_PREFIX_CHECK = 1024 * 1024

/**
 * The engine's deflate of the first `prefix` bytes against `compressed`, compared up to the last
 * block boundary of `compressed` that the prefix settles: 'mismatch' when they differ there,
 * 'undecided' when they agree. When no block ends early enough, the prefix is stretched to settle
 * the first boundary (at most half the stream and LONG_PREFIX_CHECK); past that (very long blocks of
 * repetitive input), pako compares the prefix as it streams out instead.
 */
export function enginePrefixVerdict(
  raw: Uint8Array,
  compressed: Uint8Array,
  params: DeflateParams,
  engine: DeflateEngine,
  prefix: number,
): Verdict {
  const reach = Math.min(LONG_PREFIX_CHECK, raw.length >>> 1) - PREFIX_SETTLED
  const found = settlingBoundary(compressed, raw.length, prefix - PREFIX_SETTLED, reach)
  if (!found) return compareDeflate(raw, compressed, params, prefix)
  const settled = found.boundary
  const end = found.within ? prefix : settled.raw + PREFIX_SETTLED
  const out = engine.deflate(raw.subarray(0, end), params)
  const bytes = settled.bit >>> 3
  if (out.length < bytes) return 'mismatch'
  for (let i = 0; i < bytes; i++) if (out[i] !== compressed[i]) return 'mismatch'
  return 'undecided'
}

/**
 * A whole-stream proof the parameter search took on trust: the engine's deflate of a prefix agreed
 * with the stream, and the caller runs the whole deflate later (createArchiveDeltaAsync: on the
 * engine's thread pool, while it diffs the contents) and throws the search's answers away if any fails.
 */
export interface DeferredProof {
  raw: Uint8Array
  compressed: Uint8Array
  params: DeflateParams
}

/**
 * Same answer as `reproduces`, with the work done by `engine` when it handles `params`: a stream up
 * to PREFIX_CHECK is deflated whole; a longer one first as a prefix, where wrong settings show, then
 * whole for the verdict. (pako checks the prefix instead when its blocks are too long to compare.)
 * With `deferred`, a longer stream whose prefix agrees is answered true and its whole deflate left
 * in `deferred` for the caller to run (settleDeferredProofs).
 */
export function reproducesWith(
  raw: Uint8Array,
  compressed: Uint8Array,
  params: DeflateParams,
  engine?: DeflateEngine,
  deferred?: DeferredProof[],
): boolean {
  if (raw.length < ENGINE_MIN_INPUT || !engine?.handles(params)) return reproduces(raw, compressed, params)
  if (raw.length > PREFIX_CHECK) {
    if (enginePrefixVerdict(raw, compressed, params, engine, PREFIX_CHECK) === 'mismatch') return false
    if (deferred) {
      deferred.push({ raw, compressed, params })
      return true
    }
  }
  return sameBytes(engine.deflate(raw, params), compressed)
}

const NO_DICTIONARY = new Uint8Array(0)

/**
 * Runs deferred whole-stream proofs, all at once, on an engine's asynchronous restart
 * (DeflateEngine.deflateResumed; with no dictionary it is a plain deflate); true when every one holds.
 */
export async function settleDeferredProofs(
  proofs: readonly DeferredProof[],
  resume: NonNullable<DeflateEngine['deflateResumed']>,
): Promise<boolean> {
  const held = await Promise.all(
    proofs.map(async (p) => sameBytes(await resume(p.raw, p.params, NO_DICTIONARY), p.compressed)),
  )
  return held.every(Boolean)
}

/**
 * What a stream's block sizes say about the zlib settings that could have made it. zlib (and pako,
 * and Node's Chromium zlib) end a Huffman block when its symbol buffer is full: exactly
 * 2^(memLevel + 6) − 1 tokens at every level and strategy (measured for Node's zlib and pako at
 * levels 1–9 × memLevels 1–9; recompress.test.ts keeps a sample of it), so every Huffman block but the last has that size. A stream with any other block
 * size was not made by zlib in one go — GNU gzip, for one, ends blocks early by a heuristic checked
 * every 4096 literals — and the parameter grid cannot reproduce it. Returns the memLevel, null for
 * "not zlib", undefined when the blocks say nothing (only the last one is Huffman-coded). The blocks
 * come from parseDeflate.
 */
export function zlibMemLevelOf(blocks: readonly Block[]): number | null | undefined {
  let size: number | undefined
  let start = 0
  for (const b of blocks) {
    // Stored blocks hold bytes, not symbols, so their token count says nothing about the buffer.
    if (!b.final && b.type !== BLOCK_STORED) {
      if (size !== undefined && b.end - start !== size) return null
      size = b.end - start
    }
    start = b.end
  }
  if (size === undefined) return undefined
  for (let memLevel = 1; memLevel <= 9; memLevel++) if (size === 2 ** (memLevel + 6) - 1) return memLevel
  return null
}

export interface SearchResult {
  params: DeflateParams | null
  tried: number
}

export interface ParamSearch {
  /** Tried first, in order (e.g. what matched the previous zip entry). */
  preferred?: readonly DeflateParams[]
  /** Time for the search, checked between candidates. */
  budgetMs?: number
  maxTries?: number
  now?: () => number
  /** Proves candidates it handles (reproducesWith). */
  engine?: DeflateEngine
  /** Tried after `preferred`; default every candidate (candidateParams). */
  grid?: readonly DeflateParams[]
  /** Where whole-stream proofs go when the caller runs them later (reproducesWith). */
  deferred?: DeferredProof[]
}

/**
 * Tries the preferred settings and then every candidate, in order, returning the first that
 * reproduces `compressed`. `budgetMs` bounds the time spent on one stream; it is checked between
 * candidates. (In workerd the clock does not advance during synchronous work, so there only the grid
 * size bounds the search; delta creation is expected to run on the publisher, in Node.)
 */
export function findDeflateParams(
  raw: Uint8Array,
  compressed: Uint8Array,
  search: ParamSearch = {},
): SearchResult {
  const {
    preferred = [],
    budgetMs = Number.POSITIVE_INFINITY,
    maxTries = Number.POSITIVE_INFINITY,
    now = Date.now,
    engine,
    grid = candidateParams(),
    deferred,
  } = search
  const started = now()
  const order = new Map<string, DeflateParams>()
  for (const p of [...preferred, ...grid]) if (!order.has(paramsKey(p))) order.set(paramsKey(p), p)
  let tried = 0
  for (const params of order.values()) {
    if (tried >= maxTries || (tried > 0 && now() - started > budgetMs)) break
    tried++
    if (reproducesWith(raw, compressed, params, engine, deferred)) return { params, tried }
  }
  return { params: null, tried }
}

/**
 * Incremental recompression for callers that receive the uncompressed bytes in arbitrary pieces
 * (a streaming inner differ). Input is re-cut into the same 16 KiB slices `deflateChunks` uses, so
 * both paths drive pako identically regardless of how the bytes arrived.
 */
export class Recompressor {
  private readonly deflate: Deflate
  private readonly pending: Uint8Array[] = []
  private readonly slice = new Uint8Array(INPUT_SLICE)
  private filled = 0

  constructor(params: DeflateParams) {
    this.deflate = makeDeflate(params, 64 * 1024)
    this.deflate.onData = (chunk) => this.pending.push(chunk)
    this.deflate.onEnd = () => {}
  }

  /** Feeds bytes; returns whatever compressed output became ready. */
  push(bytes: Uint8Array): Uint8Array[] {
    let at = 0
    while (at < bytes.length) {
      const n = Math.min(INPUT_SLICE - this.filled, bytes.length - at)
      this.slice.set(bytes.subarray(at, at + n), this.filled)
      this.filled += n
      at += n
      if (this.filled === INPUT_SLICE) {
        // pako keeps a reference only while push runs; reusing the slice buffer afterwards is safe.
        this.deflate.push(this.slice, false)
        this.filled = 0
      }
    }
    return this.pending.splice(0)
  }

  finish(): Uint8Array[] {
    if (this.filled > 0) this.deflate.push(this.slice.subarray(0, this.filled), false)
    this.filled = 0
    this.deflate.push(new Uint8Array(0), true)
    if (this.deflate.err !== 0) throw new Error(`deflate failed: ${this.deflate.msg}`)
    return this.pending.splice(0)
  }
}

/** Deflates `raw` with `params`, yielding output as it is produced, one 16 KiB input slice at a time. */
export function* deflateChunks(raw: Uint8Array, params: DeflateParams): Generator<Uint8Array> {
  const r = new Recompressor(params)
  for (let at = 0; at < raw.length; at += INPUT_SLICE) {
    yield* r.push(raw.subarray(at, Math.min(raw.length, at + INPUT_SLICE)))
  }
  yield* r.finish()
}

/** Deflates all of `raw` with `params` in one call (pako's whole-buffer path). */
export function deflateWhole(raw: Uint8Array, params: DeflateParams, dictionary?: Uint8Array): Uint8Array {
  return deflateRaw(raw, {
    level: params.level,
    memLevel: params.memLevel,
    windowBits: params.windowBits,
    strategy: params.strategy as Z_Strategy,
    legacyHash: params.legacyHash,
    // zlib's deflateSetDictionary: the window starts out holding these bytes.
    ...(dictionary && dictionary.length > 0 ? { dictionary } : {}),
  })
}
