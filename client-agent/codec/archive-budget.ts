/**
 * How much archive the agent lets one archive-aware delta expand on this device.
 *
 * An archive apply holds both archives' decompressed contents (and the deflate tokens of spliced
 * streams) in memory; the codec's own ceiling is 1 GiB per side. On a small device that is an OOM
 * kill half-way through an update, retried forever. So the agent derives the ceiling from the memory
 * the process can still get: a delta whose container declares more is refused before anything is
 * expanded (DeltaFormatError 'archive-limit'), and the update falls back to the next plan (the edge
 * then offers chunk-sync or the full artifact, which stream in bounded memory). Archive deltas are
 * tiny, so the refusal costs a few kilobytes of download.
 */
import { type ArchiveLimits, type TableEntryCharges, tableEntriesFor } from '../../delta/archive/limits.ts'

const MiB = 1024 * 1024

/**
 * Peak RSS of an archive apply above a Node process at rest, per byte of the larger expanded side,
 * and what it costs regardless of size (tables, JIT, collector slack). The codec bench measured
 * +115 MiB for typescript's 23 MB tar, +35–37 MiB for react-dom's 4.5 MB, +14–21 MiB for lodash's
 * and @types/node's 2.3 MB (bench/RESULTS.md); 32 MiB + 6 bytes per byte is above every one of them.
 */
export const APPLY_FIXED_BYTES = 32 * MiB
export const APPLY_BYTES_PER_EXPANDED_BYTE = 6

/**
 * Heap each kind of an archive delta's container table entries takes once decoded, at most, with the
 * arrays and headers it brings along (in bytes; charged as APPLY_BYTES_PER_EXPANDED_BYTE per expanded
 * byte, rounded up). Measured on this Node (22, 64-bit, node_modules/.bin/node --expose-gc, and again
 * under vitest): decodeContainer of a container of 25–50 K entries of one shape (long lists: 50 of
 * 1000), held, heapUsed after gc() less before, divided by the shape's count, one kind's share the
 * difference between shapes. archive-budget.test.ts measures every shape again and fails if one
 * outgrows its charge or falls below 70% of it (the median of five tries each: code the optimizing
 * compiler finishes lands on the heap at times, and a try can come out ~8 bytes an entry short). Measured: recipe ranges 47–51, literal segments 45–52,
 * tokens 47–60, deflate 71–77, a deflate segment with its own parameter set 133–139 (so a set 62–68),
 * reblocked with one block 297–318, spliced with zlib's blocks and no runs 109–113; a non-empty list
 * 150–180 beyond its entries (the segment and recipe lists, ~180 bytes once per container, are left to
 * APPLY_FIXED_BYTES); a list's blocks 56 (64–69 in lists of 1000: the array's growth slack),
 * checkpoints 40 (50–54), runs 48 (58; 74 with a source position past 2^31 - 1, boxed: 16 bytes more,
 * which every run of a hostile delta can have); an explicit block header 136 beyond its block. Other
 * numbers stay below 2^31 within the agent's 1 GiB limits, but for a checkpoint's bit offset in a
 * stream over 256 MiB (at most 4 such streams, 4096 checkpoints): such a stream's checkpoints are
 * charged as boxed, measured 66 (lists of 1000; 16 more than unboxed). So a delta at the entry cap of its heaviest
 * shape costs no more heap than its charge, and honest ones are charged ~1.1–1.3× what they take (a
 * 1000-file zip, a literal and a deflate segment a file: 129 KB of heap, charged 145 KB = 24 KB of
 * expanded room, where a flat 256 per entry charged 513 KB).
 */
export const APPLY_TABLE_ENTRY_HEAP: TableEntryCharges = {
  parameterSet: 72,
  literal: 56,
  tokens: 64,
  deflate: 80,
  reblocked: 80,
  spliced: 120,
  list: 192,
  checkpoint: 56,
  boxedCheckpoint: 72,
  block: 72,
  blockHeader: 144,
  run: 80,
  range: 56,
}

/**
 * About the most heap one table entry can take, for messages: a spliced segment with one block carrying
 * an explicit header and no runs (segment, block list, block and header over two entries) measured 245,
 * 246 under vitest. The charge itself is by kind (APPLY_TABLE_ENTRY_HEAP).
 */
export const APPLY_BYTES_PER_TABLE_ENTRY = 256

/** The codec's default ceiling, never raised by a roomy host. */
export const CODEC_CEILING = 1024 * MiB

/** Heap bytes per kind as the expanded bytes they are charged as (rounded up: never short). */
export function tableEntryChargesFor(heap: TableEntryCharges): TableEntryCharges {
  const charge = (bytes: number) => Math.ceil(bytes / APPLY_BYTES_PER_EXPANDED_BYTE)
  return {
    parameterSet: charge(heap.parameterSet),
    literal: charge(heap.literal),
    tokens: charge(heap.tokens),
    deflate: charge(heap.deflate),
    reblocked: charge(heap.reblocked),
    spliced: charge(heap.spliced),
    list: charge(heap.list),
    checkpoint: charge(heap.checkpoint),
    boxedCheckpoint: charge(heap.boxedCheckpoint),
    block: charge(heap.block),
    blockHeader: charge(heap.blockHeader),
    run: charge(heap.run),
    range: charge(heap.range),
  }
}

/** Limits for an archive apply that fits in `availableBytes` of memory. */
export function archiveLimitsFor(availableBytes: number): Required<ArchiveLimits> {
  const spare = Math.max(0, availableBytes - APPLY_FIXED_BYTES)
  const expanded = Math.min(CODEC_CEILING, Math.floor(spare / APPLY_BYTES_PER_EXPANDED_BYTE))
  return {
    maxExpandedBytes: expanded,
    maxTargetBytes: CODEC_CEILING,
    maxTableEntries: tableEntriesFor(expanded),
    // The tables share the expanded limit with the larger expanded side, each entry paid for by kind
    // as the expanded bytes its heap would buy, so a container whose tables and archive would not fit
    // together is refused (archive-limit, exit 17) before its tables are decoded. Honest tables take a
    // few KB of it (a zip ~24 bytes per file); the apply stays within `availableBytes` whatever the tables.
    tableEntryCharges: tableEntryChargesFor(APPLY_TABLE_ENTRY_HEAP),
    // The delta's own bytes too: the whole container is held for the apply (and a deflated inner delta
    // once inflated), a byte of heap each, so 6 of them cost what one expanded byte is budgeted. A long
    // hostile delta is refused before its tables are decoded, and not even collected past half the
    // memory (collecting holds it twice for a moment).
    deltaBytesPerExpandedByte: APPLY_BYTES_PER_EXPANDED_BYTE,
  }
}

/**
 * Limits from what this process can still allocate (cgroup limits included), read at call time, and
 * at most `configuredBytes` (the agent config's `applyMemoryBytes`) when given.
 */
export function deviceArchiveLimits(configuredBytes?: number): Required<ArchiveLimits> {
  return archiveLimitsFor(deviceMemoryBytes(configuredBytes))
}

/** The memory an apply may use here: what the process can still allocate, capped by `configuredBytes`. */
export function deviceMemoryBytes(configuredBytes?: number): number {
  const available = process.availableMemory()
  return configuredBytes === undefined ? available : Math.min(configuredBytes, available)
}
