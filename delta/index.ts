import {
  type ApproxLimits,
  applyApproxDelta,
  applyApproxDeltaStream,
  type CreateApproxOptions,
  createApproxDelta,
} from './approx/index.ts'
import {
  type ArchiveDeltaOptions,
  type ArchiveDeltaResult,
  type ArchiveLimits,
  applyArchiveDelta,
  applyArchiveDeltaToSink,
  checkArchiveSourceLength,
  createArchiveDelta,
  createArchiveDeltaAsync,
  type DeflateEngine,
  decodeArchiveDelta,
  defaultDiffers,
  deflateHostOf,
  detectArchive,
  maxArchiveDeltaBytes,
} from './archive/index.ts'
import { approxNotWorth, looksExecutable, VCDIFF_AFTER_APPROX_FRACTION } from './effort.ts'
import { check, DeltaFormatError } from './errors.ts'
import {
  type ByteSink,
  type ByteSource,
  collectingSink,
  concatBytes,
  type RandomAccessReader,
  readerFromBytes,
} from './io.ts'
import { decodeVcdiff, decodeVcdiffStream, encodeVcdiff, type VcdiffLimits } from './vcdiff/index.ts'

/**
 * The codec's one front door. `createDelta` tries the methods that fit the pair and keeps the smallest;
 * `applyDelta` recognises the container by its magic bytes, so a delta carries its own method.
 */
export type DeltaMethodId = 'vcdiff' | 'approx' | 'archive'

export interface CreateDeltaOptions {
  /** Methods to try; default all that apply. */
  methods?: readonly DeltaMethodId[]
  /**
   * 'auto' (default) runs the cheap methods first and skips a costly one when it cannot plausibly pay
   * off (see `worthTryingApprox`, docs/decisions/0012-codec-performance.md); 'exhaustive' runs every
   * listed method on every pair and keeps the smallest, whatever it costs.
   */
  effort?: 'auto' | 'exhaustive'
  /** Clock for the timings in the report (injected so callers can make runs deterministic). */
  now?: () => number
  /**
   * Faster deflate for the archive method's parameter proof (delta/archive/deflate-engine.ts); it also
   * compresses approx's block streams (deflateHostOf).
   */
  deflateEngine?: DeflateEngine
}

export interface CandidateReport {
  method: DeltaMethodId
  size?: number
  ms: number
  /** Why a method produced nothing (not an archive, exact recompression impossible, …). */
  skipped?: string
}

export interface CreatedDelta {
  delta: Uint8Array
  method: DeltaMethodId
  candidates: CandidateReport[]
}

export interface ApplyLimits {
  vcdiff?: VcdiffLimits
  approx?: ApproxLimits
  archive?: ArchiveLimits
}

export interface ApplyOptions extends ApplyLimits {
  /**
   * Faster deflate for rebuilding archives; pako's output is the reference (deflate-engine.ts). Its
   * inflateRaw, when it has one, also inflates approx blocks.
   */
  deflateEngine?: DeflateEngine
}

const VCDIFF_MAGIC = [0xd6, 0xc3, 0xc4]
const APPROX_MAGIC = [0x44, 0x50, 0x41, 0x58] // DPAX
const ARCHIVE_MAGIC = [0x44, 0x50, 0x41, 0x52] // DPAR

export function createDelta(
  source: Uint8Array,
  target: Uint8Array,
  options: CreateDeltaOptions = {},
): CreatedDelta {
  const clock = clockOf(options)
  const started = clock()
  const archive = wantsArchive(source, target, options)
  const made =
    archive === true ? archiveOutcome(createArchiveDelta(source, target, archiveOptions(options))) : archive
  return chooseMethod(source, target, options, made === null ? null : { made, ms: clock() - started })
}

/**
 * createDelta with the archive method's checkpoint proofs on the engine's threads while the contents
 * are diffed (createArchiveDeltaAsync): the same delta, sooner where a core is free. The publisher
 * runs this one.
 */
export async function createDeltaAsync(
  source: Uint8Array,
  target: Uint8Array,
  options: CreateDeltaOptions = {},
): Promise<CreatedDelta> {
  const clock = clockOf(options)
  const started = clock()
  const archive = wantsArchive(source, target, options)
  const made =
    archive === true
      ? archiveOutcome(await createArchiveDeltaAsync(source, target, archiveOptions(options)))
      : archive
  return chooseMethod(source, target, options, made === null ? null : { made, ms: clock() - started })
}

const clockOf = (options: CreateDeltaOptions) => options.now ?? (() => performance.now())

/** true: try the archive method; a string: why it does not apply; null: not asked for. */
function wantsArchive(
  source: Uint8Array,
  target: Uint8Array,
  options: CreateDeltaOptions,
): true | string | null {
  if (!(options.methods ?? ALL_METHODS).includes('archive')) return null
  return detectArchive(source) && detectArchive(target) ? true : 'not a gzip or zip pair'
}

function archiveOptions(options: CreateDeltaOptions): ArchiveDeltaOptions {
  return {
    ...(options.effort === 'exhaustive' ? { differEffort: 'exhaustive' } : {}),
    ...(options.deflateEngine ? { deflateEngine: options.deflateEngine } : {}),
  }
}

/** The publisher's engine also deflates approx's block streams (any valid deflate will do there). */
function approxOptions(options: CreateDeltaOptions): CreateApproxOptions {
  const deflateHost = deflateHostOf(options.deflateEngine)
  return deflateHost ? { deflateHost } : {}
}

const archiveOutcome = (result: ArchiveDeltaResult): Uint8Array | string =>
  'notApplicable' in result ? result.notApplicable : result.delta

const ALL_METHODS: readonly DeltaMethodId[] = ['archive', 'vcdiff', 'approx']

/** The rest of createDelta, after the archive attempt (if any): byte-level methods, then the smallest. */
function chooseMethod(
  source: Uint8Array,
  target: Uint8Array,
  options: CreateDeltaOptions,
  archive: { made: Uint8Array | string; ms: number } | null,
): CreatedDelta {
  const methods = options.methods ?? ALL_METHODS
  const now = clockOf(options)
  const candidates: CandidateReport[] = []
  let best: { delta: Uint8Array; method: DeltaMethodId } | null = null
  const record = (method: DeltaMethodId, made: Uint8Array | string, ms: number) => {
    if (typeof made === 'string') {
      candidates.push({ method, ms, skipped: made })
      return
    }
    candidates.push({ method, size: made.length, ms })
    if (!best || made.length < best.delta.length) best = { delta: made, method }
  }
  const consider = (method: DeltaMethodId, make: () => Uint8Array | string) => {
    const started = now()
    const made = make()
    record(method, made, now() - started)
  }
  const exhaustive = options.effort === 'exhaustive'
  const bestSize = () => (best as { delta: Uint8Array } | null)?.delta.length ?? Number.POSITIVE_INFINITY
  // Archive-aware first (made by the caller): when it applies it already ran the byte differs on the
  // expanded contents.
  if (archive) record('archive', archive.made, archive.ms)
  // Byte-level deltas of compressed data are nearly as large as the file (80–99% on every .tgz
  // measured), so once the archive method made one under half the target they cannot win.
  const archiveWon = !exhaustive && bestSize() < target.length / 2
  // Executables: approx first, and VCDIFF only if approx did poorly (delta/effort.ts).
  const approxFirst =
    !exhaustive &&
    !archiveWon &&
    methods.includes('approx') &&
    looksExecutable(source) &&
    looksExecutable(target)
  if (approxFirst) {
    consider('approx', () => createApproxDelta(source, target, approxOptions(options)))
    if (methods.includes('vcdiff')) {
      if (bestSize() < target.length * VCDIFF_AFTER_APPROX_FRACTION)
        candidates.push({
          method: 'vcdiff',
          ms: 0,
          skipped: `executable: approx delta already < ${VCDIFF_AFTER_APPROX_FRACTION * 100}% of target`,
        })
      else consider('vcdiff', () => encodeVcdiff(source, target))
    }
  }
  if (methods.includes('vcdiff') && !approxFirst) {
    if (archiveWon)
      candidates.push({ method: 'vcdiff', ms: 0, skipped: 'archive delta already < 50% of target' })
    else consider('vcdiff', () => encodeVcdiff(source, target))
  }
  if (methods.includes('approx') && !approxFirst) {
    const why = archiveWon
      ? 'archive delta already < 50% of target'
      : exhaustive
        ? null
        : approxNotWorth(bestSize(), target.length)
    if (why) candidates.push({ method: 'approx', ms: 0, skipped: why })
    else consider('approx', () => createApproxDelta(source, target, approxOptions(options)))
  }
  const chosen = best as { delta: Uint8Array; method: DeltaMethodId } | null
  if (!chosen) {
    // Every listed method declined the pair (only a restricted list can end here): say why each did.
    const why = candidates.map((c) => `${c.method}: ${c.skipped}`).join('; ')
    throw new DeltaFormatError('no-method', `no delta method produced a delta (${why || 'no method given'})`)
  }
  return { ...chosen, candidates }
}

/** Which container a delta is, from its first bytes. */
export function detectDeltaMethod(prefix: Uint8Array): DeltaMethodId {
  const starts = (magic: number[]) => magic.every((b, i) => prefix[i] === b)
  if (starts(VCDIFF_MAGIC)) return 'vcdiff'
  if (starts(APPROX_MAGIC)) return 'approx'
  if (starts(ARCHIVE_MAGIC)) return 'archive'
  throw new DeltaFormatError('unknown-container', 'not a deltaport delta (unknown magic bytes)')
}

export function applyDelta(source: Uint8Array, delta: Uint8Array, options: ApplyOptions = {}): Uint8Array {
  switch (detectDeltaMethod(delta)) {
    case 'vcdiff':
      return decodeVcdiff(source, delta, options.vcdiff)
    case 'approx':
      return applyApproxDelta(source, delta, options.approx, options.deflateEngine)
    case 'archive':
      return applyArchiveDelta(source, delta, options.archive, defaultDiffers, options.deflateEngine)
  }
}

/**
 * What a streaming apply allows a VCDIFF or approx target to grow to when the caller names no
 * ceiling. The decoders' own defaults (4 GiB, 1 GiB) bound memory where the whole target is held;
 * here the target goes to the sink window by window, so its total costs no memory, and a default
 * ceiling only refused honest big files (a 5 GiB target streamed by createDeltaStream could not be
 * applied). The sink's owner bounds the total where it matters: an update by the signed size.
 */
const STREAMED_TARGET_MAX = Number.MAX_SAFE_INTEGER

/**
 * Streaming apply. VCDIFF and approx deltas stream with memory bounded by their window/block sizes,
 * whatever the target's total size (no ceiling on it unless `options.vcdiff`/`options.approx` name
 * one); an archive delta needs the source and the (small) delta in memory and streams its output, so
 * its memory follows the expanded archive size (docs/formats/archive-delta.md).
 */
export async function applyDeltaStream(
  source: RandomAccessReader,
  delta: ByteSource,
  sink: ByteSink,
  options: ApplyOptions = {},
): Promise<DeltaMethodId> {
  const iterator = delta[Symbol.asyncIterator]()
  const head: Uint8Array[] = []
  let headLength = 0
  // Enough bytes to tell the containers apart, however the transport chunked them.
  while (headLength < 4) {
    const next = await iterator.next()
    if (next.done) break
    head.push(next.value)
    headLength += next.value.length
  }
  check(headLength >= 3, 'truncated', 'the delta is too short to carry a header')
  const prefix = head.length === 1 ? head[0]! : concatBytes(head)
  const method = detectDeltaMethod(prefix)
  const rest: ByteSource = {
    async *[Symbol.asyncIterator]() {
      yield prefix
      for (let next = await iterator.next(); !next.done; next = await iterator.next()) yield next.value
    },
  }
  switch (method) {
    case 'vcdiff': {
      const maxTargetSize = options.vcdiff?.maxTargetSize ?? STREAMED_TARGET_MAX
      await decodeVcdiffStream(source, rest, sink, { ...options.vcdiff, maxTargetSize })
      break
    }
    case 'approx': {
      const maxTargetSize = options.approx?.maxTargetSize ?? STREAMED_TARGET_MAX
      await applyApproxDeltaStream(
        source,
        rest,
        sink,
        { ...options.approx, maxTargetSize },
        options.deflateEngine,
      )
      break
    }
    case 'archive': {
      const deltaBytes = await collectUpTo(rest, maxArchiveDeltaBytes(options.archive))
      // Decoded once, for the checks and the apply.
      const decoded = decodeArchiveDelta(deltaBytes, options.archive)
      // The whole source goes into memory: only once it is the one the delta names, of a size that fits.
      const sourceLength = checkArchiveSourceLength(decoded, source.size)
      const sourceBytes = await source.read(0, sourceLength)
      await applyArchiveDeltaToSink(
        sourceBytes,
        decoded,
        sink,
        options.archive,
        defaultDiffers,
        options.deflateEngine,
      )
      break
    }
  }
  return method
}

/** All of `source` in one array, refusing (archive-limit) one longer than `limit` as soon as it is. */
async function collectUpTo(source: ByteSource, limit: number): Promise<Uint8Array> {
  const collected = collectingSink()
  let length = 0
  for await (const chunk of source) {
    length += chunk.length
    check(length <= limit, 'archive-limit', `archive delta longer than the ${limit} bytes its limits allow`)
    await collected.write(chunk)
  }
  return collected.bytes()
}

export { adoptCrc32, type Crc32Update } from './approx/crc32.ts'
export { type DeflateEngine, type DeflateStream, pakoEngine } from './archive/index.ts'
export { DeltaFormatError } from './errors.ts'
export type { ByteSink, ByteSource, RandomAccessReader } from './io.ts'
export {
  type CreateDeltaStreamOptions,
  createDeltaStream,
  MAX_SOURCE_WINDOW,
  type StreamDeltaMethod,
} from './stream-create.ts'
export { readerFromBytes }
