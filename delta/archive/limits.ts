/** Ceilings for apply (and create): everything is held in memory, so these bound memory use. */
export interface ArchiveLimits {
  /** Largest rebuilt archive accepted. Default 1 GiB. */
  maxTargetBytes?: number
  /** Largest expanded (decompressed) source, reference or target accepted. Default 1 GiB. */
  maxExpandedBytes?: number
  /**
   * Most entries the container's tables may decode into (segments, blocks, runs, checkpoints, recipe
   * ranges, parameter sets), each about 50–250 bytes of heap (measured: client-agent/codec/archive-budget.ts).
   * Default tableEntriesFor(maxExpandedBytes).
   */
  maxTableEntries?: number
  /**
   * Expanded bytes each kind of table entry is charged as against maxExpandedBytes, for a caller that
   * sized that limit from its memory: the tables and the larger expanded side then share it (the
   * entries' charges + expanded bytes ≤ maxExpandedBytes), the target's side checked as the tables are
   * counted, the source's as it expands. Default NO_TABLE_CHARGES (all 0): the tables are bounded by
   * maxTableEntries alone.
   */
  tableEntryCharges?: TableEntryCharges
  /**
   * Bytes of memory one expanded byte of maxExpandedBytes stands for, for a caller that sized that
   * limit from its memory (the agent: 6). The delta's own bytes are then charged against it at that
   * rate, rounded up, with the tables and the larger expanded side: the container as read (a streaming
   * apply holds all of it) before anything else of it is decoded, and a raw-deflated inner delta's
   * inflated length as it is read, before it is inflated. A streaming apply also stops collecting a delta
   * past maxExpandedBytes × this / 2 (collecting holds the chunks and their concatenation at once).
   * Default 0: the delta is not charged, bounded by maxArchiveDeltaBytes alone.
   */
  deltaBytesPerExpandedByte?: number
}

/**
 * What a container's tables decode into, each kind with its own cost: the deflate parameter sets, the
 * segments by kind (each with what it always holds), each non-empty block, run or checkpoint list
 * beyond its entries (`list`), those entries, a block's explicit header beyond the block, and the
 * recipe ranges. `list` and `blockHeader` are charged but not counted against maxTableEntries.
 */
export interface TableEntryCharges {
  readonly parameterSet: number
  readonly literal: number
  readonly tokens: number
  readonly deflate: number
  readonly reblocked: number
  readonly spliced: number
  readonly list: number
  readonly checkpoint: number
  /**
   * A checkpoint of a stream over 256 MiB, charged instead of `checkpoint`: its bit offset can be past
   * 2^31 - 1, which a JS engine keeps boxed (a heap number of its own).
   */
  readonly boxedCheckpoint: number
  readonly block: number
  readonly blockHeader: number
  readonly run: number
  readonly range: number
}

/** The codec's default: tables charged nothing (bounded by maxTableEntries alone). */
export const NO_TABLE_CHARGES: TableEntryCharges = {
  parameterSet: 0,
  literal: 0,
  tokens: 0,
  deflate: 0,
  reblocked: 0,
  spliced: 0,
  list: 0,
  checkpoint: 0,
  boxedCheckpoint: 0,
  block: 0,
  blockHeader: 0,
  run: 0,
  range: 0,
}

/**
 * Expanded bytes each table entry must be paid for by. Every honest entry covers content: a zip entry
 * is at least 76 bytes of headers for its 2–3 entries (local header, stream, recipe range), a tar member
 * 512, so an archive within maxExpandedBytes needs far fewer than one entry per 16 of its bytes. A
 * hostile delta could otherwise declare one per 2 delta bytes (24 heap bytes per delta byte), whatever
 * the memory its expanded size was budgeted for; at 16 the tables cost at most ~4 bytes per byte of
 * the expanded limit.
 */
const EXPANDED_BYTES_PER_TABLE_ENTRY = 16

/** The default maxTableEntries for an expanded limit (at least 4096, for tiny limits). */
export function tableEntriesFor(maxExpandedBytes: number): number {
  return Math.max(4096, Math.floor(maxExpandedBytes / EXPANDED_BYTES_PER_TABLE_ENTRY))
}

const GiB = 1024 * 1024 * 1024

export function resolveArchiveLimits(l: ArchiveLimits = {}): Required<ArchiveLimits> {
  const maxExpandedBytes = l.maxExpandedBytes ?? GiB
  return {
    maxTargetBytes: l.maxTargetBytes ?? GiB,
    maxExpandedBytes,
    maxTableEntries: l.maxTableEntries ?? tableEntriesFor(maxExpandedBytes),
    tableEntryCharges: l.tableEntryCharges ?? NO_TABLE_CHARGES,
    deltaBytesPerExpandedByte: l.deltaBytesPerExpandedByte ?? 0,
  }
}

/** The code of an archive that expands past maxExpandedBytes: a limit reached (isLimitError), not damage. */
export const ARCHIVE_TOO_LARGE = 'archive-too-large'
