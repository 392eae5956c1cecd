/**
 * The archive-delta container (docs/formats/archive-delta.md). Decoding validates every count, length
 * and cross-field sum before anything is allocated, so hostile input fails fast with DeltaFormatError.
 */
import type { Block } from '../deflate/parse-types.ts'
import { check } from '../errors.ts'
import { ByteReader, ByteWriter } from './bytes.ts'
import type { Checkpoint } from './checkpoints.ts'
import { type ArchiveKind, hasParams, type Segment } from './expand.ts'
import { NO_TABLE_CHARGES, type TableEntryCharges, tableEntriesFor } from './limits.ts'
import { blockDescriptor, readBlockHead } from './puff.ts'
import type { DeflateParams } from './recompress.ts'
import type { Range } from './reference.ts'
import { MIN_RUN_BYTES, type SpliceRun } from './splice.ts'

const MAGIC = [0x44, 0x50, 0x41, 0x52] // "DPAR"
export const CONTAINER_VERSION = 1
const FLAG_INNER_DEFLATED = 1
/** Deflate segments carry checkpoint lists (added after version 1 shipped; older decoders refuse it). */
const FLAG_CHECKPOINTS = 2
/** The source's deflate streams are expanded in puffed form (puff.ts), like the target's token segments. */
const FLAG_SOURCE_PUFFED = 4
const KNOWN_FLAGS = FLAG_INNER_DEFLATED | FLAG_CHECKPOINTS | FLAG_SOURCE_PUFFED
const TAG_LITERAL = 0
const TAG_DEFLATE = 1
/** Token and reblocked segments (added after version 1 shipped; older decoders refuse the tags). */
const TAG_TOKENS = 2
const TAG_REBLOCKED = 3
/** Spliced segments (splice.ts), likewise added later. */
const TAG_SPLICED = 4
/** More restart points than any rebuild could use; bounds what a hostile list can make us allocate. */
const MAX_CHECKPOINTS = 1024
const KIND_CODES: Record<ArchiveKind, number> = { gzip: 1, zip: 2 }

export interface Container {
  sourceKind: ArchiveKind
  differId: string
  sourceLength: number
  sourceCrc: number
  targetLength: number
  targetCrc: number
  expandedLength: number
  /** Expand the source with puffAll instead of inflateAll (expand.ts). */
  sourcePuffed: boolean
  segments: Segment[]
  recipe: Range[]
  /** Inner delta as stored; deflated (raw, RFC 1951) when `innerDeflated`. */
  inner: Uint8Array
  innerDeflated: boolean
  innerLength: number
}

export function encodeContainer(c: Container): Uint8Array {
  const w = new ByteWriter()
  for (const b of MAGIC) w.u8(b)
  w.u8(CONTAINER_VERSION)
  w.u8(KIND_CODES[c.sourceKind])
  const checkpointed = c.segments.some((s) => s.kind === 'deflate' && (s.checkpoints?.length ?? 0) > 0)
  w.u8(
    (c.innerDeflated ? FLAG_INNER_DEFLATED : 0) |
      (checkpointed ? FLAG_CHECKPOINTS : 0) |
      (c.sourcePuffed ? FLAG_SOURCE_PUFFED : 0),
  )
  const id = new TextEncoder().encode(c.differId)
  if (id.length === 0 || id.length > 255) throw new RangeError('differ id must be 1..255 bytes')
  w.u8(id.length)
  w.bytes(id)
  w.varint(c.sourceLength)
  w.u32(c.sourceCrc)
  w.varint(c.targetLength)
  w.u32(c.targetCrc)
  w.varint(c.expandedLength)
  const table: DeflateParams[] = []
  const index = new Map<string, number>()
  const keyOf = (p: DeflateParams) => `${p.level}/${p.memLevel}/${p.windowBits}/${p.strategy}/${p.legacyHash}`
  for (const s of c.segments) {
    if (hasParams(s) && !index.has(keyOf(s.params))) {
      index.set(keyOf(s.params), table.length)
      table.push(s.params)
    }
  }
  w.varint(table.length)
  for (const p of table) {
    w.u8(p.level)
    w.u8(p.memLevel)
    w.u8(p.windowBits)
    w.u8(p.strategy)
    w.u8(p.legacyHash ? 1 : 0)
  }
  w.varint(c.segments.length)
  for (const s of c.segments) {
    if (s.kind === 'literal') {
      w.u8(TAG_LITERAL)
      w.varint(s.length)
    } else if (s.kind === 'tokens') {
      w.u8(TAG_TOKENS)
      w.varint(s.puffLength)
      w.varint(s.compressedLength)
    } else if (s.kind === 'reblocked') {
      w.u8(TAG_REBLOCKED)
      w.varint(s.rawLength)
      w.varint(s.compressedLength)
      w.varint(index.get(keyOf(s.params))!)
      writeBlocks(w, s.blocks)
    } else if (s.kind === 'spliced') {
      w.u8(TAG_SPLICED)
      w.varint(s.rawLength)
      w.varint(s.compressedLength)
      w.varint(index.get(keyOf(s.params))!)
      writeBlocks(w, s.blocks === 'zlib' ? [] : s.blocks)
      writeRuns(w, s.runs)
    } else {
      w.u8(TAG_DEFLATE)
      w.varint(s.rawLength)
      w.varint(s.compressedLength)
      w.varint(index.get(keyOf(s.params))!)
      if (checkpointed) {
        const points = s.checkpoints ?? []
        w.varint(points.length)
        let raw = 0
        let bit = 0
        for (const p of points) {
          w.varint(p.raw - raw)
          w.varint(p.bit - bit)
          raw = p.raw
          bit = p.bit
        }
      }
    }
  }
  w.varint(c.recipe.length)
  for (const r of c.recipe) {
    w.varint(r.offset)
    w.varint(r.length)
  }
  w.varint(c.innerLength)
  w.varint(c.inner.length)
  w.bytes(c.inner)
  return w.finish()
}

/** A block list as its count, then each block's head as in a puffed stream (no tokens). */
function writeBlocks(w: ByteWriter, blocks: readonly Block[]): void {
  w.varint(blocks.length)
  let start = 0
  for (const b of blocks) {
    w.u8(blockDescriptor(b))
    w.varint(b.end - start)
    if (b.header) {
      w.varint(b.header.bitLength)
      w.bytes(b.header.bytes)
    }
    start = b.end
  }
}

/** Runs: count, then per run the gap, the source position relative to where the last run ended, the count. */
function writeRuns(w: ByteWriter, runs: readonly SpliceRun[]): void {
  w.varint(runs.length)
  let source = 0
  for (const run of runs) {
    w.varint(run.gap)
    w.svarint(run.source - source)
    w.varint(run.count)
    source = run.source + run.count
  }
}

export interface ContainerLimits {
  maxTargetBytes: number
  maxExpandedBytes: number
  /** Default tableEntriesFor(maxExpandedBytes) (limits.ts). */
  maxTableEntries?: number
  /** Default NO_TABLE_CHARGES (limits.ts). */
  tableEntryCharges?: TableEntryCharges
  /** Default 0: the delta's own bytes are not charged (limits.ts). */
  deltaBytesPerExpandedByte?: number
}

/** A decoded container, with the number of entries its tables decoded into and what they were charged. */
export interface DecodedContainer extends Container {
  tableEntries: number
  /** The expanded bytes the tables were charged as (tableEntryCharges). */
  tableCharge: number
  /**
   * The expanded bytes the delta's own bytes were charged as (deltaBytesPerExpandedByte): the container
   * as given, and the inner delta's inflated length when it is deflated.
   */
  deltaCharge: number
}

/**
 * Counts the entries the tables decode into against the limits, each list by its declared count
 * before any of it is read: a hostile delta is refused before it costs heap, not after. The entries
 * are also charged as expanded bytes by kind (tableEntryCharges), which with the expanded target must
 * stay within maxExpandedBytes: a list at its declared count at its lightest kind's charge, then each
 * entry's heavier kind, list and header as it is read, so at most one entry is read past the limit.
 */
class TableBudget {
  private used = 0
  private spent = 0
  /** What the delta's own bytes were charged (chargeDelta), checked with the tables' charge. */
  private held = 0
  private readonly limit: number
  readonly costs: TableEntryCharges
  private readonly expandedLength: number
  private readonly maxExpandedBytes: number
  private readonly perExpandedByte: number

  constructor(limits: ContainerLimits, expandedLength: number) {
    this.limit = limits.maxTableEntries ?? tableEntriesFor(limits.maxExpandedBytes)
    this.costs = limits.tableEntryCharges ?? NO_TABLE_CHARGES
    this.expandedLength = expandedLength
    this.maxExpandedBytes = limits.maxExpandedBytes
    this.perExpandedByte = limits.deltaBytesPerExpandedByte ?? 0
  }

  get entries(): number {
    return this.used
  }

  /** The expanded bytes the entries so far are charged as. */
  get charged(): number {
    return this.spent
  }

  /** The expanded bytes the delta's own bytes are charged as. */
  get deltaCharged(): number {
    return this.held
  }

  /** The tables' and the delta's charges together: what the expansions may not use. */
  get total(): number {
    return this.spent + this.held
  }

  /**
   * `bytes` of the delta held in memory, charged at deltaBytesPerExpandedByte (rounded up) with the
   * tables and the expanded target.
   */
  chargeDelta(bytes: number, what: string): void {
    if (this.perExpandedByte <= 0) return
    this.held += Math.ceil(bytes / this.perExpandedByte)
    check(
      this.expandedLength + this.total <= this.maxExpandedBytes,
      'archive-limit',
      `the archive delta's ${what} take the memory of ${this.held} expanded bytes, which with the expanded target of ${this.expandedLength} bytes${this.spent > 0 ? ` and ${this.spent} charged for ${this.entries} table entries` : ''} exceeds the limit of ${this.maxExpandedBytes} bytes`,
    )
  }

  /** `count` entries of a list, each charged `cost`. */
  spend(count: number, what: string, cost: number): void {
    this.used += count
    check(
      this.entries <= this.limit,
      'archive-limit',
      `container tables of ${this.entries}+ table entries (${what}) exceed the limit of ${this.limit}`,
    )
    this.charge(count * cost, what)
  }

  /** `count` entries of a block, run or checkpoint list: the entries, and the list's own cost if any. */
  spendList(count: number, what: string, cost: number): void {
    this.spend(count, what, cost)
    if (count > 0) this.charge(this.costs.list, what)
  }

  /** More expanded bytes for what was counted already (a segment's kind, a block's header). */
  charge(bytes: number, what: string): void {
    this.spent += bytes
    check(
      this.expandedLength + this.total <= this.maxExpandedBytes,
      'archive-limit',
      `container tables of ${this.entries}+ table entries (${what}) take the memory of ${this.spent} expanded bytes, which with the expanded target of ${this.expandedLength} bytes${this.held > 0 ? ` and ${this.held} charged for the delta's own bytes` : ''} exceeds the limit of ${this.maxExpandedBytes} bytes`,
    )
  }
}

const E = 'archive-container'
/** The shortest deflate stream: one empty final fixed-Huffman block, 3 header bits and a 7-bit end code. */
const MIN_DEFLATE_STREAM = 2
/**
 * The shortest deflate stream with content (reblocked and spliced segments have rawLength > 0): one
 * literal in a final fixed-Huffman block, 3 header bits, an 8-bit literal (0–143) and the 7-bit end
 * code, 18 bits. Dynamic blocks spend more on their header alone (HLIT, HDIST, HCLEN and at least four
 * 3-bit code length lengths: 26 bits), stored blocks 5 bytes before their content.
 */
const MIN_DEFLATE_STREAM_WITH_CONTENT = 3

/**
 * Deflate cannot shrink content beyond ~1032:1 (a 258-byte match in 2 bits of 1-bit codes), so more
 * content than that for `compressedLength` is a lie that would only cost a rebuild before failing.
 */
function checkDeflateRatio(rawLength: number, compressedLength: number): void {
  check(rawLength <= compressedLength * 1032 + 1024, E, 'raw length exceeds deflate ratio')
}

/**
 * The most puffed bytes (puff.ts) per byte of the deflate stream a token segment re-encodes to: 3 per
 * bit. No valid stream, honest or not, puffs to more, since every part of a puffed stream stands for
 * bits of the stream that cost at least a third as many:
 * - a literal is at least 1 bit (no deflate code is shorter; stored content 8) and puffs to at most
 *   2 bytes (itself and the head of the run it may start); a match is at least 2 bits (a length code and
 *   a distance code of at least 1 bit each) and puffs to 3: each token at most 2 bytes a bit, so at
 *   least 1 byte a bit is left over;
 * - a block is at least 4 bits (3 header bits and an end-of-block code of at least 1) and puffs to its
 *   descriptor and a token count (2 bytes of the 12 its bits allow; each further count byte needs at
 *   least 128 times as many tokens, whose leftover byte a bit pays for it), and an explicit header of
 *   H bits to at most 2 + ⌈H/8⌉ bytes (H ≤ 8192), within 3 a bit for every H ≥ 1.
 * What encoders write is far below: ~1 puffed byte per byte of text streams, ~12 for long runs of one
 * byte (zlib's 258-byte matches, about 2 bits each: the densest stream an encoder makes). Without a
 * bound a segment of a 2-byte stream could claim the whole expanded target, free in the length sums.
 */
export const MAX_PUFFED_PER_COMPRESSED_BYTE = 24

/** The sizes every stream with content (reblocked, spliced) must have. */
function checkStreamWithContent(rawLength: number, compressedLength: number, what: string): void {
  check(rawLength > 0, E, `empty ${what} segment`)
  check(
    compressedLength >= MIN_DEFLATE_STREAM_WITH_CONTENT,
    E,
    `${what} segment shorter than any deflate stream with content`,
  )
  checkDeflateRatio(rawLength, compressedLength)
}

function readParams(r: ByteReader): DeflateParams {
  const level = r.u8('level')
  const memLevel = r.u8('memLevel')
  const windowBits = r.u8('windowBits')
  const strategy = r.u8('strategy')
  const hash = r.u8('hash')
  check(level >= 0 && level <= 9, E, 'deflate level out of range')
  check(memLevel >= 1 && memLevel <= 9, E, 'deflate memLevel out of range')
  check(windowBits >= 9 && windowBits <= 15, E, 'deflate windowBits out of range')
  check(strategy <= 4, E, 'deflate strategy out of range')
  check(hash <= 1, E, 'deflate hash selector out of range')
  return { level, memLevel, windowBits, strategy, legacyHash: hash === 1 }
}

/** The largest integer a 64-bit JS engine keeps unboxed (V8's Smi without pointer compression, Node's build). */
const MAX_SMALL_INTEGER = 2 ** 31 - 1

/** Strictly increasing restart points strictly inside the stream, in both coordinates. */
function readCheckpoints(
  r: ByteReader,
  rawLength: number,
  compressedLength: number,
  budget: TableBudget,
): Checkpoint[] {
  const count = r.varint('checkpoint count')
  // Bit offsets are below 8 × compressedLength: past the small integers only in a stream over 256 MiB.
  const boxed = compressedLength * 8 - 1 > MAX_SMALL_INTEGER
  budget.spendList(count, 'checkpoints', boxed ? budget.costs.boxedCheckpoint : budget.costs.checkpoint)
  check(count <= MAX_CHECKPOINTS && count <= r.remaining / 2, E, 'checkpoint list too long')
  const out: Checkpoint[] = []
  let raw = 0
  let bit = 0
  for (let i = 0; i < count; i++) {
    raw += r.varint('checkpoint offset')
    bit += r.varint('checkpoint bit offset')
    const last = out.at(-1)
    check(
      raw > (last?.raw ?? 0) && raw < rawLength,
      E,
      'checkpoint offset out of order or outside the stream',
    )
    check(
      bit > (last?.bit ?? 0) && bit < compressedLength * 8,
      E,
      'checkpoint bit offset out of order or outside the stream',
    )
    out.push({ raw, bit })
  }
  return out
}

/** The head every recompressed segment starts with: its two sizes and its settings. */
function readRecompressed(
  r: ByteReader,
  table: readonly DeflateParams[],
): { rawLength: number; compressedLength: number; params: DeflateParams } {
  const rawLength = r.varint('raw length')
  const compressedLength = r.varint('compressed length')
  const p = r.varint('params index')
  check(p < table.length, E, 'params index out of range')
  return { rawLength, compressedLength, params: table[p]! }
}

/** A block list (writeBlocks) whose tokens, at least a content byte each, fit in `rawLength`. */
function readBlocks(r: ByteReader, rawLength: number, count: number, budget: TableBudget): Block[] {
  check(count <= r.remaining / 2, E, 'block count longer than the delta')
  budget.spendList(count, 'blocks', budget.costs.block)
  const blocks: Block[] = []
  let tokens = 0
  for (let b = 0; b < count; b++) {
    const head = readBlockHead(r)
    tokens += head.count
    // Every token stands for at least one byte of content.
    check(tokens <= rawLength, E, 'blocks hold more tokens than the stream has bytes')
    const block = head.block(tokens)
    if (block.header) budget.charge(budget.costs.blockHeader, 'block headers')
    blocks.push(block)
  }
  return blocks
}

/**
 * Runs of a spliced segment. Gaps and copies each cover content, copies at least MIN_RUN_BYTES (checked
 * on apply, where the tokens' sizes are known), so a stream holds at most rawLength / MIN_RUN_BYTES + 1.
 */
function readRuns(r: ByteReader, rawLength: number, budget: TableBudget): SpliceRun[] {
  const count = r.varint('run count')
  check(count <= r.remaining / 3 && count <= rawLength / MIN_RUN_BYTES + 1, E, 'too many spliced runs')
  budget.spendList(count, 'spliced runs', budget.costs.run)
  const runs: SpliceRun[] = []
  let source = 0
  let gaps = 0
  let tokens = 0
  for (let i = 0; i < count; i++) {
    const gap = r.varint('gap')
    const at = source + r.svarint('run source')
    const n = r.varint('run count')
    gaps += gap
    tokens += n
    check(at >= 0 && Number.isSafeInteger(at), E, 'run source before the start')
    check(n > 0 && gaps + tokens <= rawLength, E, 'spliced runs exceed the stream')
    runs.push({ gap, source: at, count: n })
    source = at + n
  }
  return runs
}

/** A segment's charge by its tag (an unknown tag, refused next, as the lightest). */
function segmentCharge(c: TableEntryCharges, tag: number): number {
  if (tag === TAG_LITERAL) return c.literal
  if (tag === TAG_TOKENS) return c.tokens
  if (tag === TAG_REBLOCKED) return c.reblocked
  if (tag === TAG_SPLICED) return c.spliced
  if (tag === TAG_DEFLATE) return c.deflate
  return Math.min(c.literal, c.tokens, c.deflate, c.reblocked, c.spliced)
}

export function decodeContainer(bytes: Uint8Array, limits: ContainerLimits): DecodedContainer {
  const r = new ByteReader(bytes, E)
  for (const b of MAGIC) check(r.u8('magic') === b, 'archive-magic', 'not an archive delta')
  const version = r.u8('version')
  check(version === CONTAINER_VERSION, 'archive-version', `unsupported archive delta version ${version}`)
  const kindCode = r.u8('kind')
  const sourceKind = (Object.keys(KIND_CODES) as ArchiveKind[]).find((k) => KIND_CODES[k] === kindCode)
  check(sourceKind !== undefined, E, `unknown source kind ${kindCode}`)
  const flags = r.u8('flags')
  check((flags & ~KNOWN_FLAGS) === 0, E, 'unknown flags')
  const idLength = r.u8('differ id length')
  check(idLength > 0, E, 'empty differ id')
  const differId = new TextDecoder().decode(r.take(idLength, 'differ id'))
  const sourceLength = r.varint('source length')
  const sourceCrc = r.u32('source crc')
  const targetLength = r.varint('target length')
  const targetCrc = r.u32('target crc')
  const expandedLength = r.varint('expanded length')
  check(
    targetLength <= limits.maxTargetBytes,
    'archive-limit',
    `target of ${targetLength} bytes exceeds limit`,
  )
  check(
    expandedLength <= limits.maxExpandedBytes,
    'archive-limit',
    `expanded target of ${expandedLength} bytes exceeds the limit of ${limits.maxExpandedBytes} bytes`,
  )

  const budget = new TableBudget(limits, expandedLength)
  // The delta itself is in memory for the whole apply: charged before any of its tables is decoded.
  budget.chargeDelta(bytes.length, `${bytes.length} bytes`)
  const tableLength = r.varint('params count')
  check(tableLength <= r.remaining / 5, E, 'params table longer than the delta')
  budget.spend(tableLength, 'deflate parameters', budget.costs.parameterSet)
  const table: DeflateParams[] = []
  for (let i = 0; i < tableLength; i++) table.push(readParams(r))

  const segmentCount = r.varint('segment count')
  check(segmentCount <= r.remaining / 2, E, 'segment count longer than the delta')
  // Each segment at the lightest kind's charge, then what its own kind costs more once its tag is read.
  const c = budget.costs
  const lightest = Math.min(c.literal, c.tokens, c.deflate, c.reblocked, c.spliced)
  budget.spend(segmentCount, 'segments', lightest)
  const segments: Segment[] = []
  let expandedSum = 0
  let targetSum = 0
  for (let i = 0; i < segmentCount; i++) {
    const tag = r.u8('segment tag')
    budget.charge(segmentCharge(c, tag) - lightest, 'segments')
    if (tag === TAG_LITERAL) {
      const length = r.varint('literal length')
      check(length > 0, E, 'empty literal segment')
      segments.push({ kind: 'literal', length })
      expandedSum += length
      targetSum += length
    } else if (tag === TAG_TOKENS) {
      // Sizes are bounded by each other and the sums below: the re-encode checks its output against them.
      const puffLength = r.varint('puffed length')
      const compressedLength = r.varint('compressed length')
      check(puffLength > 0, E, 'empty token segment')
      // A puffed stream re-encodes to a deflate stream, an empty one (fflate's gzip of nothing) too.
      check(compressedLength >= MIN_DEFLATE_STREAM, E, 'token segment shorter than any deflate stream')
      check(
        puffLength <= compressedLength * MAX_PUFFED_PER_COMPRESSED_BYTE,
        E,
        `token segment of ${puffLength} puffed bytes for a ${compressedLength}-byte stream (at most ${MAX_PUFFED_PER_COMPRESSED_BYTE} a byte)`,
      )
      segments.push({ kind: 'tokens', puffLength, compressedLength })
      expandedSum += puffLength
      targetSum += compressedLength
    } else if (tag === TAG_REBLOCKED) {
      const { rawLength, compressedLength, params } = readRecompressed(r, table)
      checkStreamWithContent(rawLength, compressedLength, 'reblocked')
      const count = r.varint('block count')
      check(count > 0, E, 'reblocked segment without blocks')
      const blocks = readBlocks(r, rawLength, count, budget)
      segments.push({ kind: 'reblocked', rawLength, compressedLength, params, blocks })
      expandedSum += rawLength
      targetSum += compressedLength
    } else if (tag === TAG_SPLICED) {
      const { rawLength, compressedLength, params } = readRecompressed(r, table)
      checkStreamWithContent(rawLength, compressedLength, 'spliced')
      // Zero blocks: the ones zlib cuts for the spliced tokens.
      const count = r.varint('block count')
      const blocks = count === 0 ? 'zlib' : readBlocks(r, rawLength, count, budget)
      const runs = readRuns(r, rawLength, budget)
      segments.push({ kind: 'spliced', rawLength, compressedLength, params, blocks, runs })
      expandedSum += rawLength
      targetSum += compressedLength
    } else {
      check(tag === TAG_DEFLATE, E, `unknown segment tag ${tag}`)
      const { rawLength, compressedLength, params } = readRecompressed(r, table)
      // Every deflate stream, an empty one too, is at least MIN_DEFLATE_STREAM bytes; a shorter length
      // is a lie no encoder writes (their segments are streams that inflated), and free in the sums.
      check(compressedLength >= MIN_DEFLATE_STREAM, E, 'deflate segment shorter than any deflate stream')
      // Deflate can neither expand data beyond zlib's any-memLevel bound (tiny stored or fixed blocks)
      // nor shrink it beyond ~1032:1, so sizes outside those bounds are lies that would size allocations.
      const bound = rawLength + Math.ceil(rawLength / 8) + Math.ceil(rawLength / 64) + 64
      check(compressedLength <= bound, E, 'compressed length exceeds deflate bound')
      checkDeflateRatio(rawLength, compressedLength)
      const checkpoints =
        flags & FLAG_CHECKPOINTS ? readCheckpoints(r, rawLength, compressedLength, budget) : []
      segments.push({
        kind: 'deflate',
        rawLength,
        compressedLength,
        params,
        ...(checkpoints.length > 0 ? { checkpoints } : {}),
      })
      expandedSum += rawLength
      targetSum += compressedLength
    }
    check(expandedSum <= expandedLength && targetSum <= targetLength, E, 'segments exceed declared lengths')
  }
  check(expandedSum === expandedLength, E, 'segments do not cover the expanded target')
  check(targetSum === targetLength, E, 'segments do not cover the target')

  const recipeCount = r.varint('recipe count')
  check(recipeCount <= r.remaining / 2, E, 'recipe longer than the delta')
  budget.spend(recipeCount, 'recipe ranges', budget.costs.range)
  const recipe: Range[] = []
  let referenceLength = 0
  for (let i = 0; i < recipeCount; i++) {
    const offset = r.varint('range offset')
    const length = r.varint('range length')
    // Encoders merge and never emit empty ranges; an empty one only inflates the decoded recipe (an
    // object per two delta bytes), as empty segments would the segment table.
    check(length > 0, E, 'empty recipe range')
    // Either way the source would have to expand past the limit (what the tables leave of it) for the
    // recipe to hold.
    referenceLength += length
    const room = limits.maxExpandedBytes - budget.total
    check(
      referenceLength <= room && offset + length <= room,
      'archive-limit',
      `expanded source of ${Math.max(referenceLength, offset + length)}+ bytes exceeds the limit of ${room} bytes${budget.total > 0 ? ` (${limits.maxExpandedBytes} less ${budget.charged} charged for ${budget.entries} table entries${budget.deltaCharged > 0 ? ` and ${budget.deltaCharged} for the delta's own bytes` : ''})` : ''}`,
    )
    recipe.push({ offset, length })
  }
  const innerLength = r.varint('inner length')
  const storedLength = r.varint('stored inner length')
  const inner = r.take(storedLength, 'inner delta')
  check(r.remaining === 0, E, 'trailing bytes after the inner delta')
  const innerDeflated = (flags & FLAG_INNER_DEFLATED) !== 0
  check(innerDeflated || innerLength === storedLength, E, 'inner length mismatch')
  check(innerLength <= limits.maxExpandedBytes * 2 + 1024, 'archive-limit', 'inner delta exceeds limit')
  // Inflated on apply beside the delta that holds it: charged before it is.
  if (innerDeflated)
    budget.chargeDelta(innerLength, `bytes and its inner delta's ${innerLength} once inflated`)
  return {
    sourceKind,
    differId,
    sourceLength,
    sourceCrc,
    targetLength,
    targetCrc,
    expandedLength,
    sourcePuffed: (flags & FLAG_SOURCE_PUFFED) !== 0,
    segments,
    recipe,
    inner,
    innerDeflated,
    innerLength,
    tableEntries: budget.entries,
    tableCharge: budget.charged,
    deltaCharge: budget.deltaCharged,
  }
}
