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
import { type ArchiveLimits, tableEntriesFor } from '../../delta/archive/limits.ts'

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
 * Heap one entry of an archive delta's container tables (segment, block, run, checkpoint, recipe range,
 * parameter set) takes once decoded, at most, with the arrays and headers it brings along. Measured
 * on this Node (22, node_modules/.bin/node --expose-gc): decodeContainer of a container of 1 M entries
 * of one shape, held, heapUsed after gc() less before, per entry counted against maxTableEntries:
 * recipe ranges and literal segments 50, checkpoints 50, tokens segments 58, spliced runs 58,
 * parameter sets 68, deflate segments 75, a deflate segment with one checkpoint 145, a reblocked or
 * spliced segment with one block 157, blocks with an explicit header 202 (their header and its view
 * of the delta), a reblocked segment with one such block 225, a spliced one with one such block and
 * no runs 245, the heaviest shape (archive-budget.test.ts measures it again). Honest tables are a few
 * thousand entries; a hostile one may have up to maxTableEntries, which at 245 bytes each would have
 * been ~15 bytes per byte of the expanded limit on top of the 6 budgeted for it.
 */
export const APPLY_BYTES_PER_TABLE_ENTRY = 256

/** The codec's default ceiling, never raised by a roomy host. */
const CODEC_CEILING = 1024 * MiB

/** Limits for an archive apply that fits in `availableBytes` of memory. */
export function archiveLimitsFor(availableBytes: number): Required<ArchiveLimits> {
  const spare = Math.max(0, availableBytes - APPLY_FIXED_BYTES)
  const expanded = Math.min(CODEC_CEILING, Math.floor(spare / APPLY_BYTES_PER_EXPANDED_BYTE))
  return {
    maxExpandedBytes: expanded,
    maxTargetBytes: CODEC_CEILING,
    maxTableEntries: tableEntriesFor(expanded),
    // The tables share the expanded limit with the larger expanded side, each entry paid for as the
    // expanded bytes its heap would buy: 43 per entry, so a container whose tables and archive would
    // not fit together is refused (archive-limit, exit 17) before its tables are decoded. Honest
    // tables take a few hundred KB of it; the apply stays within `availableBytes` whatever the tables.
    expandedBytesPerTableEntry: Math.ceil(APPLY_BYTES_PER_TABLE_ENTRY / APPLY_BYTES_PER_EXPANDED_BYTE),
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
