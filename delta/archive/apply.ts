/**
 * Apply: expand the source, replay the reference recipe, run the inner differ to get the expanded
 * target, then recompress its deflate segments with the recorded parameters and re-encode its token
 * segments from their puffed tokens.
 *
 * applyArchiveDelta holds the expanded source, the reference, the expanded target and the output.
 * applyArchiveDeltaToSink holds only the expanded source (the reference is read through the recipe
 * and the target is recompressed as the inner differ streams it out), when the differ can stream.
 */
import type { Tokens } from '../deflate/parse-types.ts'
import { check, DeltaFormatError } from '../errors.ts'
import { type ByteSink, sourceFromBytes } from '../io.ts'
import { type Container, type DecodedContainer, decodeContainer } from './container.ts'
import { crc32 } from './crc32.ts'
import { type DeflateEngine, deflatePieces, inflaterFor } from './deflate-engine.ts'
import { defaultDiffers, type InnerDiffer } from './differs.ts'
import { expand, expandedSize, inflateAll, puffAll } from './expand.ts'
import { inflateRawPrefix } from './inflate.ts'
import { type ArchiveLimits, resolveArchiveLimits } from './limits.ts'
import { RebuildSink, rebuildGathered } from './rebuild-sink.ts'
import { materialize, recipeReader } from './reference.ts'

interface Prepared {
  c: Container
  differ: InnerDiffer
  expandedSource: Uint8Array
  /** The source's tokens, taken only when a spliced segment copies from them. */
  sourceTokens: Tokens | undefined
  inner: Uint8Array
}

/** The inner differ is a trust boundary too: whatever it throws on hostile bytes becomes our error. */
function innerError(differ: InnerDiffer, err: unknown): DeltaFormatError {
  if (err instanceof DeltaFormatError) return err
  return new DeltaFormatError('archive-inner', `inner ${differ.id} delta failed: ${String(err)}`)
}

/**
 * An archive delta's container, decoded and checked against the limits it carries: a streaming apply
 * decodes it once for the checks before the source is read and again for none after. `limits` are
 * the caller's less what the tables and the delta's own bytes were charged (tableEntryCharges,
 * deltaBytesPerExpandedByte): maxExpandedBytes is what is left for the expansions.
 */
export interface DecodedArchiveDelta {
  readonly container: DecodedContainer
  readonly limits: Required<ArchiveLimits>
}

export function decodeArchiveDelta(delta: Uint8Array, limits?: ArchiveLimits): DecodedArchiveDelta {
  const L = resolveArchiveLimits(limits)
  const container = decodeContainer(delta, L)
  // Within the limit, as the decode checked (with the expanded target); the source expands in the rest.
  const charged = container.tableCharge + container.deltaCharge
  return { container, limits: { ...L, maxExpandedBytes: L.maxExpandedBytes - charged } }
}

/** A delta as given: its bytes (decoded here, within `limits`) or decodeArchiveDelta's result. */
function decodedOf(
  delta: Uint8Array | DecodedArchiveDelta,
  limits: ArchiveLimits | undefined,
): DecodedArchiveDelta {
  return delta instanceof Uint8Array ? decodeArchiveDelta(delta, limits) : delta
}

function prepare(
  source: Uint8Array,
  delta: Uint8Array | DecodedArchiveDelta,
  limits: ArchiveLimits | undefined,
  differs: readonly InnerDiffer[],
  engine: DeflateEngine | undefined,
): Prepared {
  const { container: c, limits: L } = decodedOf(delta, limits)
  check(
    source.length === c.sourceLength && crc32(source) === c.sourceCrc,
    'archive-source-mismatch',
    'source does not match the one this delta was made from',
  )
  const differ = differs.find((d) => d.id === c.differId)
  check(differ !== undefined, 'archive-differ-unknown', `no inner differ with id ${c.differId}`)
  const expansion = expand(
    c.sourceKind,
    source,
    c.sourcePuffed ? puffAll : inflateAll,
    L.maxExpandedBytes,
    inflaterFor(engine),
    c.segments.some((s) => s.kind === 'spliced'),
  )
  const expandedSource = expansion.expanded
  for (const r of c.recipe) {
    check(
      r.offset + r.length <= expandedSource.length,
      'archive-container',
      'recipe range outside the source',
    )
  }
  let inner = c.inner
  if (c.innerDeflated) {
    const out = inflateRawPrefix(c.inner, c.innerLength, 'archive-inner')
    check(
      out.consumed === c.inner.length && out.data.length === c.innerLength,
      'archive-inner',
      'inner size mismatch',
    )
    inner = out.data
  }
  return { c, differ, expandedSource, sourceTokens: expansion.tokens, inner }
}

function expandedTarget(p: Prepared, engine: DeflateEngine | undefined): Uint8Array {
  let expanded: Uint8Array
  try {
    const reference = materialize(p.expandedSource, p.c.recipe)
    expanded = p.differ.apply(reference, p.inner, p.c.expandedLength, engine)
  } catch (err) {
    throw innerError(p.differ, err)
  }
  check(expanded.length === p.c.expandedLength, 'archive-mismatch', 'inner delta produced the wrong length')
  return expanded
}

/** Walks the segments, yielding rebuilt archive bytes in order; checks each stream's size. */
function* rebuild(
  p: Prepared,
  expanded: Uint8Array,
  engine: DeflateEngine | undefined,
): Generator<Uint8Array> {
  let at = 0
  for (const s of p.c.segments) {
    if (s.kind === 'literal') {
      yield expanded.subarray(at, at + s.length)
      at += s.length
      continue
    }
    if (s.kind !== 'deflate') {
      const part = expanded.subarray(at, at + expandedSize(s))
      const rebuilt = rebuildGathered(s, part, engine, p.sourceTokens)
      check(rebuilt.length === s.compressedLength, 'archive-mismatch', 'rebuilt stream has the wrong length')
      yield rebuilt
      at += part.length
      continue
    }
    let produced = 0
    for (const chunk of deflatePieces(engine, expanded.subarray(at, at + s.rawLength), s.params)) {
      produced += chunk.length
      check(produced <= s.compressedLength, 'archive-mismatch', 'recompressed stream is longer than recorded')
      yield chunk
    }
    check(produced === s.compressedLength, 'archive-mismatch', 'recompressed stream is shorter than recorded')
    at += s.rawLength
  }
}

/**
 * An archive expands into its header bytes plus its streams' contents (raw or puffed, never smaller
 * than the deflate bits they came from but for framing), and deflate frames content in at most
 * ~1.1 × its size (5 bytes per 64 KiB stored block, 2 bytes for an empty stream, which sits inside at
 * least 18 bytes of gzip or zip headers that stay): a source archive over twice the expanded limit
 * cannot expand within it, so reading it into memory would only be waste.
 */
const MAX_SOURCE_PER_EXPANDED_BYTE = 2

/**
 * Most bytes an archive delta can take within `limits`: its inner delta (at most 2 × the expanded
 * limit + 1 KiB, as the container checks) plus its segment table and recipe (a few bytes per stream
 * and entry, far less than the target they rebuild), with a MiB to spare. A streaming apply collects
 * the delta in memory, so it stops reading there instead of at the end of whatever it was handed. With
 * deltaBytesPerExpandedByte, at most half what the memory behind maxExpandedBytes holds (the chunks
 * and their concatenation are held at once while collecting): a longer delta would take more memory
 * than the caller's limit stands for before its own charge (once its length, checked when decoded)
 * could refuse it, so it is refused here even where that decode alone would take it.
 */
export function maxArchiveDeltaBytes(limits?: ArchiveLimits): number {
  const L = resolveArchiveLimits(limits)
  const codec = L.maxTargetBytes + 2 * L.maxExpandedBytes + 2 ** 20
  if (L.deltaBytesPerExpandedByte <= 0) return codec
  return Math.min(codec, Math.floor((L.maxExpandedBytes * L.deltaBytesPerExpandedByte) / 2))
}

/**
 * The checks a streaming apply makes before it reads the source into memory (applyArchiveDeltaToSink
 * needs it whole): the container is within `limits`, the source has the length the delta was made for
 * (a delta for another file fails here, not after reading gigabytes of it), and that length could
 * expand within the limits. Returns the source length to read.
 */
export function checkArchiveSourceLength(
  delta: Uint8Array | DecodedArchiveDelta,
  sourceLength: number,
  limits?: ArchiveLimits,
): number {
  const { container: c, limits: L } = decodedOf(delta, limits)
  check(
    c.sourceLength <= MAX_SOURCE_PER_EXPANDED_BYTE * L.maxExpandedBytes,
    'archive-limit',
    `source archive of ${c.sourceLength} bytes cannot expand within the limit of ${L.maxExpandedBytes} bytes`,
  )
  check(
    sourceLength === c.sourceLength,
    'archive-source-mismatch',
    'source does not match the one this delta was made from',
  )
  return sourceLength
}

export function applyArchiveDelta(
  source: Uint8Array,
  delta: Uint8Array,
  limits?: ArchiveLimits,
  differs: readonly InnerDiffer[] = defaultDiffers,
  engine?: DeflateEngine,
): Uint8Array {
  const p = prepare(source, delta, limits, differs, engine)
  // The inner delta first: it grows its output as it decodes, so a container that claims a target
  // (up to maxTargetBytes) its inner delta cannot produce is refused before the claim is allocated.
  const expanded = expandedTarget(p, engine)
  const out = new Uint8Array(p.c.targetLength)
  let at = 0
  for (const chunk of rebuild(p, expanded, engine)) {
    out.set(chunk, at)
    at += chunk.length
  }
  check(crc32(out) === p.c.targetCrc, 'archive-mismatch', 'rebuilt archive fails its CRC-32 check')
  return out
}

/**
 * Streaming variant. The final CRC can only be checked after the last chunk, so on a throw the sink
 * has received unverified bytes and must be discarded (write to a temporary file, rename on success).
 * `delta` may be decodeArchiveDelta's result, whose own limits then apply (`limits` is not read).
 */
export async function applyArchiveDeltaToSink(
  source: Uint8Array,
  delta: Uint8Array | DecodedArchiveDelta,
  sink: ByteSink,
  limits?: ArchiveLimits,
  differs: readonly InnerDiffer[] = defaultDiffers,
  engine?: DeflateEngine,
): Promise<void> {
  const p = prepare(source, delta, limits, differs, engine)
  const out = new RebuildSink(p.c.segments, sink, engine, p.sourceTokens)
  if (p.differ.applyStream) {
    try {
      const reference = recipeReader(p.expandedSource, p.c.recipe)
      await p.differ.applyStream(reference, sourceFromBytes(p.inner), out, p.c.expandedLength, engine)
    } catch (err) {
      if (err === out.sinkFailure) throw err
      throw innerError(p.differ, err)
    }
  } else {
    await out.write(expandedTarget(p, engine))
  }
  await out.finish()
  check(
    out.written === p.c.targetLength && out.crc === p.c.targetCrc,
    'archive-mismatch',
    'rebuilt archive fails its CRC-32 check',
  )
}
