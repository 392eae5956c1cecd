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

/** The codec's default ceiling, never raised by a roomy host. */
const CODEC_CEILING = 1024 * MiB

/** Limits for an archive apply that fits in `availableBytes` of memory. */
export function archiveLimitsFor(availableBytes: number): Required<ArchiveLimits> {
  const spare = Math.max(0, availableBytes - APPLY_FIXED_BYTES)
  const expanded = Math.min(CODEC_CEILING, Math.floor(spare / APPLY_BYTES_PER_EXPANDED_BYTE))
  // A hostile container's tables then cost at most ~4 bytes per byte of this limit on top of the 6
  // budgeted (honest ones: next to nothing), not ~24 per byte of a delta as long as maxTargetBytes.
  return {
    maxExpandedBytes: expanded,
    maxTargetBytes: CODEC_CEILING,
    maxTableEntries: tableEntriesFor(expanded),
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
