/**
 * Create: expand both archives, search exact recompression parameters for the target's deflate
 * streams, line the source's entries up with the target's, diff with every available inner differ,
 * keep the smallest, and prove the result by applying it before handing it out.
 */
import { deflateSync } from 'fflate'
import { approxLeads, approxNotWorth, FORECAST_MIN_EDITED_BYTES, vcdiffNotWorth } from '../effort.ts'
import { DeltaFormatError } from '../errors.ts'
import type { KnownCopy } from '../known-copies.ts'
import { applyArchiveDelta } from './apply.ts'
import { sameBytes } from './bytes.ts'
import { findCheckpoints, findCheckpointsAsync } from './checkpoints.ts'
import { decodeContainer, encodeContainer } from './container.ts'
import { crc32 } from './crc32.ts'
import { type DeflateEngine, deflateHostOf, inflaterFor } from './deflate-engine.ts'
import { detectArchive } from './detect.ts'
import { defaultDiffers, type InnerDiffer } from './differs.ts'
import {
  type ArchiveKind,
  archiveSize,
  type Expansion,
  expand,
  expandedSize,
  hasParams,
  inflateAll,
  puffAll,
  recompressPolicy,
  type Segment,
  type Splicer,
} from './expand.ts'
import { type ArchiveLimits, resolveArchiveLimits } from './limits.ts'
import { type DeferredProof, paramsKey, settleDeferredProofs } from './recompress.ts'
import { buildRecipe, materialize, type Range, type RecipeStats, unchangedEntries } from './reference.ts'
import { findSplice, SourceTokenIndex, spliceMayPay } from './splice-plan.ts'
import { estimateVcdiffBytes } from './vcdiff-estimate.ts'

export interface ArchiveDeltaOptions {
  /** Inner differs to try; the smallest result wins. Default: every production differ. */
  differs?: readonly InnerDiffer[]
  /** Time allowed for the parameter search of one deflate stream. Default 20 s. */
  searchBudgetMs?: number
  /** Time allowed for all parameter searches of one archive (matters for zips with many entries). */
  totalSearchBudgetMs?: number
  limits?: ArchiveLimits
  /**
   * Prove the delta before returning it. true (default): decode the container and apply the inner
   * delta, comparing with the expanded target; the recompression half needs no second proof because
   * every deflate segment was reproduced byte for byte while expanding the target. 'full': rebuild the
   * whole archive through applyArchiveDelta and compare (one more full pako deflate). false: neither.
   */
  verify?: boolean | 'full'
  /**
   * 'auto' (default) runs vcdiff first and approx only when it could save more than a few KiB, or,
   * when a sample forecasts a big vcdiff delta, approx first and vcdiff only if approx did worse than
   * the forecast (delta/effort.ts); 'exhaustive' runs every differ.
   */
  differEffort?: 'auto' | 'exhaustive'
  /**
   * A faster deflate for proving recompression parameters (the publisher passes Node's zlib); pako
   * rules out wrong settings on a prefix, this engine checks the whole stream. When it can restart
   * deflate, big target streams also get proved checkpoints for parallel rebuilds (checkpoints.ts).
   * Default: pako alone, no checkpoints.
   */
  deflateEngine?: DeflateEngine
  /**
   * Rebuild target streams that share most of their tokens with the source from those tokens
   * (splice-plan.ts): 'auto' (default) where that is expected to apply faster than recompressing the
   * stream whole in a fresh agent process (spliceWorthIt); 'always' whenever a plan proves (a
   * long-running client, whose parse and encode loops are warm); 'never' recompresses every stream
   * whole (checkpoints then apply).
   */
  splice?: 'auto' | 'always' | 'never'
}

export interface ArchiveDeltaDetails {
  sourceKind: ArchiveKind
  targetKind: ArchiveKind
  differ: string
  deltaBytes: number
  innerBytes: number
  innerDeflated: boolean
  candidates: { differ: string; bytes: number }[]
  /** Differs not run, and why (effort pruning). */
  skippedDiffers: string[]
  expandedSourceBytes: number
  expandedTargetBytes: number
  referenceBytes: number
  /**
   * Deflate streams in the target; how many pako reproduced exactly, how many with zlib's tokens in
   * the stream's own blocks (reblock.ts), and how many were puffed (puff.ts).
   */
  streams: number
  reproduced: number
  reblocked: number
  puffed: number
  /** Of those, how many are rebuilt mostly from the source's tokens (splice.ts). */
  spliced: number
  params: string[]
  /** `unchangedBytes`: target bytes handed to the differs as known copies (unchanged entries). */
  entries: RecipeStats & { source: number; target: number; unchangedBytes: number }
  timingsMs: { expandSource: number; expandTarget: number; checkpoints: number; diff: number; verify: number }
}

export type ArchiveDeltaResult =
  | { delta: Uint8Array; details: ArchiveDeltaDetails }
  | { notApplicable: string }

/** Each target deflate stream with its raw content and compressed bytes, in archive order. */
function deflateStreams(
  tgt: Expansion,
  target: Uint8Array,
): { segment: Extract<Segment, { kind: 'deflate' }>; raw: Uint8Array; compressed: Uint8Array }[] {
  const out = []
  let expandedAt = 0
  let targetAt = 0
  for (const s of tgt.segments) {
    if (s.kind === 'deflate') {
      out.push({
        segment: s,
        raw: tgt.expanded.subarray(expandedAt, expandedAt + s.rawLength),
        compressed: target.subarray(targetAt, targetAt + s.compressedLength),
      })
    }
    expandedAt += expandedSize(s)
    targetAt += archiveSize(s)
  }
  return out
}

/**
 * Proves restart points in each big target deflate stream, so a rebuild with an engine that can restart
 * deflate runs the pieces on several cores (checkpoints.ts). Costs about one more deflate per stream.
 */
function addCheckpoints(tgt: Expansion, target: Uint8Array, engine: DeflateEngine): void {
  for (const { segment, raw, compressed } of deflateStreams(tgt, target)) {
    const checkpoints = findCheckpoints(raw, compressed, segment.params, engine)
    if (checkpoints.length > 0) segment.checkpoints = checkpoints
  }
}

/** addCheckpoints with the engine's asynchronous restarts: the proofs run while the caller diffs. */
async function addCheckpointsAsync(tgt: Expansion, target: Uint8Array, engine: DeflateEngine): Promise<void> {
  await Promise.all(
    deflateStreams(tgt, target).map(async ({ segment, raw, compressed }) => {
      const checkpoints = await findCheckpointsAsync(raw, compressed, segment.params, engine)
      if (checkpoints.length > 0) segment.checkpoints = checkpoints
    }),
  )
}

/** True when more of the target's compressed bytes come back from tokens than from recompression. */
function puffedMostly(segments: readonly Segment[]): boolean {
  let puffed = 0
  let recompressed = 0
  for (const s of segments) {
    if (s.kind === 'tokens') puffed += s.compressedLength
    else if (s.kind !== 'literal') recompressed += s.compressedLength
  }
  return puffed > recompressed
}

function tryExpand(run: () => Expansion): Expansion | string {
  try {
    return run()
  } catch (err) {
    if (err instanceof DeltaFormatError) return `${err.code}: ${err.message}`
    throw err
  }
}

/**
 * Container decode + inner apply, compared with the expanded target (see `verify`). With an engine,
 * its inflate decodes the inner delta and lends itself to the differ, as on the agent: pako's and the
 * approx decoder's inflate loops would otherwise run cold in the publisher's process for this alone.
 */
function innerRebuildsTarget(
  delta: Uint8Array,
  reference: Uint8Array,
  expandedTarget: Uint8Array,
  limits: ArchiveLimits,
  differ: InnerDiffer,
  failures: string[],
  engine: DeflateEngine | undefined,
): boolean {
  try {
    const c = decodeContainer(delta, resolveArchiveLimits(limits))
    let inner = c.inner
    if (c.innerDeflated) {
      const out = inflaterFor(engine)(c.inner, c.innerLength, 'archive-inner')
      inner = out.data
    }
    const rebuilt = differ.apply(reference, inner, c.expandedLength, engine)
    if (sameBytes(rebuilt, expandedTarget)) return true
    failures.push(`${differ.id}: inner delta does not rebuild the expanded target`)
  } catch (err) {
    failures.push(`${differ.id}: verification failed: ${String(err)}`)
  }
  return false
}

function rebuildsTarget(
  source: Uint8Array,
  target: Uint8Array,
  delta: Uint8Array,
  limits: ArchiveLimits,
  differ: InnerDiffer,
  failures: string[],
  engine: DeflateEngine | undefined,
): boolean {
  try {
    const rebuilt = applyArchiveDelta(source, delta, limits, [differ], engine)
    if (rebuilt.length === target.length && rebuilt.every((b, i) => b === target[i])) return true
    failures.push(`${differ.id}: rebuilt archive differs from the target`)
  } catch (err) {
    failures.push(`${differ.id}: verification failed: ${String(err)}`)
  }
  return false
}

/** `deferred`: the engine's whole-stream proofs are left there, for the caller to run (reproducesWith). */
function prepare(
  source: Uint8Array,
  target: Uint8Array,
  options: ArchiveDeltaOptions,
  deferred?: DeferredProof[],
): Prepared | { notApplicable: string } {
  const sourceKind = detectArchive(source)
  const targetKind = detectArchive(target)
  if (!sourceKind || !targetKind) return { notApplicable: 'source or target is not a gzip or zip archive' }
  const differs = options.differs ?? defaultDiffers
  if (differs.length === 0) return { notApplicable: 'no inner differ available' }
  const limits = resolveArchiveLimits(options.limits)

  const inflate = inflaterFor(options.deflateEngine)
  // The source is taken apart into tokens too when some target stream could be worth splicing
  // (spliceMayPay): target streams that mostly share them are rebuilt from them (splice.ts), which
  // spares their parameter search and proof. That parse runs at about a third of inflate speed, so it
  // waits until findSplice asks for the source's tokens, i.e. until some setting could pay and
  // reproduces a target stream's start: the target is expanded first, and where no stream gets that
  // far (react-dom 18.2 → 18.3.1: level 9, but only the classic hash could pay and its start parts at
  // once) the source is only inflated afterwards. Either way the source is expanded once.
  const splicing =
    options.splice === 'always' ||
    (options.splice !== 'never' && spliceMayPay(targetKind, target, options.deflateEngine))
  let expandSource = 0
  let src: Expansion | string | undefined
  const expandSourceOnce = (collectTokens: boolean): Expansion | string => {
    if (src === undefined) {
      const t = performance.now()
      src = tryExpand(() =>
        expand(sourceKind, source, inflateAll, limits.maxExpandedBytes, inflate, collectTokens),
      )
      expandSource += performance.now() - t
    }
    return src
  }
  let index: SourceTokenIndex | undefined
  const splicer: Splicer | undefined = splicing
    ? (raw, compressed, parse, candidates) => {
        // Built on first use: findSplice asks for it only when some setting could splice. An
        // unreadable source gives no tokens (nothing splices) and is reported below, before the target.
        const sourceIndex = () => {
          if (index === undefined) {
            const expanded = expandSourceOnce(true)
            index = new SourceTokenIndex(
              typeof expanded === 'string' ? new Uint32Array(0) : (expanded.tokens ?? new Uint32Array(0)),
            )
          }
          return index
        }
        const payoff = options.splice !== 'always'
        return findSplice(raw, compressed, parse, sourceIndex, candidates, options.deflateEngine, payoff)
      }
    : undefined
  let t = performance.now()
  const policy = recompressPolicy(
    options.searchBudgetMs ?? 20_000,
    options.totalSearchBudgetMs ?? 60_000,
    options.deflateEngine,
    splicer,
    deferred,
    () => expandSource,
  )
  const tgt = tryExpand(() => expand(targetKind, target, policy, limits.maxExpandedBytes, inflate))
  // The source's expansion, if a splice plan ran it, is the source's time, not the target's.
  const expandTarget = performance.now() - t - expandSource
  const expandedSource = expandSourceOnce(false)
  if (typeof expandedSource === 'string')
    return { notApplicable: `source archive unreadable (${expandedSource})` }
  let srcOut: Expansion = expandedSource
  if (typeof tgt === 'string') return { notApplicable: `target archive unreadable (${tgt})` }
  if (tgt.reproduced + tgt.reblocked + tgt.puffed + tgt.spliced === 0) {
    return {
      notApplicable: `none of the target's ${tgt.streams} deflate streams could be reproduced exactly`,
    }
  }
  // Diff like with like: puffed target streams against puffed source streams.
  const sourcePuffed = puffedMostly(tgt.segments)
  if (sourcePuffed) {
    t = performance.now()
    const puffed = tryExpand(() =>
      expand(sourceKind, source, puffAll, limits.maxExpandedBytes, inflate, splicing),
    )
    if (typeof puffed === 'string') return { notApplicable: `source archive unreadable (${puffed})` }
    srcOut = puffed
    expandSource += performance.now() - t
  }
  return {
    source,
    target,
    sourceKind,
    targetKind,
    src: srcOut,
    tgt,
    sourcePuffed,
    limits,
    differs,
    expandSource,
    expandTarget,
  }
}

/** Lines the source's entries up with the target's and runs the inner differs, smallest first. */
function diffPrepared(p: Prepared, options: ArchiveDeltaOptions): Diffed {
  const { src, tgt, limits, differs, target } = p
  const t = performance.now()

  const { ranges, stats, lineUps, edits } = buildRecipe(
    src.expanded.length,
    src.entries,
    tgt.entries,
    limits.maxExpandedBytes,
  )
  const reference = materialize(src.expanded, ranges)
  // Unchanged files are handed to the differs as they are, so only what changed is searched.
  const unchanged = unchangedEntries(reference, tgt.expanded, lineUps)
  const candidates: InnerCandidate[] = []
  const failures: string[] = []
  const skippedDiffers: string[] = []
  const pruning = options.differEffort !== 'exhaustive'
  // vcdiff first: it is an order of magnitude cheaper, and its result bounds what approx could save;
  // unless a forecast of vcdiff's delta says approx will run anyway (delta/effort.ts).
  const edited = edits.reduce((n, e) => n + e.length, 0)
  const forecast =
    pruning &&
    edited >= FORECAST_MIN_EDITED_BYTES &&
    differs.some((d) => d.id === 'approx') &&
    differs.some((d) => d.id === 'vcdiff')
      ? estimateVcdiffBytes(reference, tgt.expanded, edits).bytes
      : undefined
  const approxFirst = forecast !== undefined && approxLeads(forecast, target.length)
  const late = approxFirst ? 'vcdiff' : 'approx'
  const host = deflateHostOf(options.deflateEngine)
  const ordered = [...differs].sort((a, b) => Number(a.id === late) - Number(b.id === late))
  for (const differ of ordered) {
    if (pruning && differ.id === late && candidates.length > 0) {
      const smallest = Math.min(...candidates.map((c) => c.stored.length))
      const why =
        late === 'approx' || forecast === undefined
          ? approxNotWorth(smallest, target.length)
          : vcdiffNotWorth(smallest, forecast)
      if (why) {
        skippedDiffers.push(`${differ.id}: ${why}`)
        continue
      }
    }
    let inner: Uint8Array
    try {
      inner = differ.create(reference, tgt.expanded, unchanged, host)
    } catch (err) {
      // One differ failing (a limit, a bug) should not cost us the others' result.
      failures.push(`${differ.id}: ${String(err)}`)
      continue
    }
    // Inner deltas still carry literal bytes (new file contents) that often compress further.
    // fflate, not the host's zlib: on the small inner deltas of patch releases zlib's came out 1–3 % larger.
    const packed = deflateSync(inner, { level: 9 })
    const deflated = packed.length < inner.length
    candidates.push({ differ, inner, stored: deflated ? packed : inner, deflated })
  }
  candidates.sort((a, b) => a.stored.length - b.stored.length)
  const diff = performance.now() - t
  return { ranges, stats, reference, unchanged, candidates, failures, skippedDiffers, diffMs: diff }
}

/** Encodes the container around the smallest verified inner delta. */
function finish(
  p: Prepared,
  d: Diffed,
  options: ArchiveDeltaOptions,
  checkpointsMs: number,
): ArchiveDeltaResult {
  const {
    source,
    target,
    sourceKind,
    targetKind,
    src,
    tgt,
    sourcePuffed,
    limits,
    expandSource,
    expandTarget,
  } = p
  const { ranges, stats, reference, unchanged, candidates, failures, skippedDiffers, diffMs: diff } = d
  const t = performance.now()

  // Smallest first; a candidate whose delta does not rebuild the target exactly is skipped.
  let chosen: { best: (typeof candidates)[number]; delta: Uint8Array } | null = null
  for (const best of candidates) {
    const delta = encodeContainer({
      sourceKind,
      differId: best.differ.id,
      sourceLength: source.length,
      sourceCrc: crc32(source),
      targetLength: target.length,
      targetCrc: crc32(target),
      expandedLength: tgt.expanded.length,
      sourcePuffed,
      segments: tgt.segments,
      recipe: ranges,
      inner: best.stored,
      innerDeflated: best.deflated,
      innerLength: best.inner.length,
    })
    const verify = options.verify ?? true
    const ok =
      verify === false ||
      (verify === 'full'
        ? rebuildsTarget(source, target, delta, limits, best.differ, failures, options.deflateEngine)
        : innerRebuildsTarget(
            delta,
            reference,
            tgt.expanded,
            limits,
            best.differ,
            failures,
            options.deflateEngine,
          ))
    if (ok) {
      chosen = { best, delta }
      break
    }
  }
  const verify = performance.now() - t
  if (!chosen) return { notApplicable: `no inner differ produced a verified delta (${failures.join('; ')})` }
  const { best, delta } = chosen

  const params = [...new Set(tgt.segments.flatMap((s) => (hasParams(s) ? [paramsKey(s.params)] : [])))]
  return {
    delta,
    details: {
      sourceKind,
      targetKind,
      differ: best.differ.id,
      deltaBytes: delta.length,
      innerBytes: best.inner.length,
      innerDeflated: best.deflated,
      candidates: candidates.map((c) => ({ differ: c.differ.id, bytes: c.stored.length })),
      skippedDiffers,
      expandedSourceBytes: src.expanded.length,
      expandedTargetBytes: tgt.expanded.length,
      referenceBytes: reference.length,
      streams: tgt.streams,
      reproduced: tgt.reproduced,
      reblocked: tgt.reblocked,
      puffed: tgt.puffed,
      spliced: tgt.spliced,
      params,
      entries: {
        ...stats,
        source: src.entries.length,
        target: tgt.entries.length,
        unchangedBytes: unchanged.reduce((n, c) => n + c.length, 0),
      },
      timingsMs: { expandSource, expandTarget, checkpoints: checkpointsMs, diff, verify },
    },
  }
}

/** Both archives expanded and the target's streams proved: what the diff and the container come from. */
interface Prepared {
  source: Uint8Array
  target: Uint8Array
  sourceKind: ArchiveKind
  targetKind: ArchiveKind
  src: Expansion
  tgt: Expansion
  sourcePuffed: boolean
  limits: Required<ArchiveLimits>
  differs: readonly InnerDiffer[]
  expandSource: number
  expandTarget: number
}

type InnerCandidate = { differ: InnerDiffer; inner: Uint8Array; stored: Uint8Array; deflated: boolean }

interface Diffed {
  ranges: Range[]
  stats: RecipeStats
  reference: Uint8Array
  /** The unchanged entries given to the differs (known-copies.ts). */
  unchanged: KnownCopy[]
  /** Smallest stored size first. */
  candidates: InnerCandidate[]
  failures: string[]
  skippedDiffers: string[]
  diffMs: number
}

export function createArchiveDelta(
  source: Uint8Array,
  target: Uint8Array,
  options: ArchiveDeltaOptions = {},
): ArchiveDeltaResult {
  const prepared = prepare(source, target, options)
  if ('notApplicable' in prepared) return prepared
  const t = performance.now()
  if (options.deflateEngine) addCheckpoints(prepared.tgt, target, options.deflateEngine)
  const checkpointsMs = performance.now() - t
  return finish(prepared, diffPrepared(prepared, options), options, checkpointsMs)
}

/**
 * createArchiveDelta with the engine's proofs on its asynchronous deflate (Node's zlib runs them on its
 * thread pool) while this thread diffs the contents: the whole-stream proofs of the target's
 * parameters (the search accepts a candidate once the engine's prefix agrees, reproducesWith) and the
 * checkpoint proofs. The same delta, sooner on a machine with a core to spare. Should a whole stream
 * part from a prefix that agreed, everything is redone with every proof run in place. Without an
 * engine that deflates asynchronously it is createArchiveDelta.
 */
export async function createArchiveDeltaAsync(
  source: Uint8Array,
  target: Uint8Array,
  options: ArchiveDeltaOptions = {},
): Promise<ArchiveDeltaResult> {
  const engine = options.deflateEngine
  const resume = engine?.deflateResumed?.bind(engine)
  if (!engine || !resume) return createArchiveDelta(source, target, options)
  const deferred: DeferredProof[] = []
  const prepared = prepare(source, target, options, deferred)
  if ('notApplicable' in prepared) return prepared
  const t = performance.now()
  let checkpointsMs = 0
  // Settled into a value, so a failure while the diff still runs is never an unhandled rejection.
  const proving = Promise.all([
    settleDeferredProofs(deferred, resume),
    addCheckpointsAsync(prepared.tgt, target, engine),
  ]).then(
    ([held]) => {
      checkpointsMs = performance.now() - t
      return { held }
    },
    (error: unknown) => ({ error }),
  )
  const diffed = diffPrepared(prepared, options)
  const proved = await proving
  if ('error' in proved) throw proved.error
  if (!proved.held) return createArchiveDelta(source, target, options)
  return finish(prepared, diffed, options, checkpointsMs)
}
