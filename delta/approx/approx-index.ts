/**
 * Which source index the approx scan looks matches up in. A suffix array finds the longest match every
 * time; hash chains (hash-index.ts) make it 2–4× faster on tar contents but can miss it where short strings repeat by the
 * thousand, which is what executables' relocation and unwind tables look like. Measured in
 * docs/decisions/0028-hash-chain-approx-index.md.
 */
import { looksExecutable } from '../effort.ts'
import type { SourceRanges } from '../known-copies.ts'
import { type HashIndex, indexSourceByHash } from './hash-index.ts'
import { indexSource, type SourceIndex } from './source-index.ts'

export type ApproxIndexKind = 'suffix-array' | 'hash'

export type ApproxIndex =
  | { readonly kind: 'suffix-array'; readonly index: SourceIndex }
  | { readonly kind: 'hash'; readonly index: HashIndex }

/**
 * `ranges`: what the hash chains index when known copies cover the rest. The suffix array always takes
 * the whole source: it is built for executables, whose stretches rarely survive a release unchanged.
 */
export function buildApproxIndex(
  source: Uint8Array,
  kind: ApproxIndexKind,
  ranges?: SourceRanges,
): ApproxIndex {
  return kind === 'hash'
    ? { kind, index: indexSourceByHash(source, ranges) }
    : { kind, index: indexSource(source) }
}

/** Tar members start on 512-byte boundaries, so an executable packed in a tar is found there. */
const TAR_BLOCK = 512

/**
 * The suffix array for anything that holds an executable (at its start, or at a tar member's start:
 * archive deltas diff tar contents), hash chains for the rest.
 */
export function chooseApproxIndex(source: Uint8Array, target: Uint8Array): ApproxIndexKind {
  return holdsExecutable(source) || holdsExecutable(target) ? 'suffix-array' : 'hash'
}

function holdsExecutable(bytes: Uint8Array): boolean {
  for (let at = 0; at + 4 <= bytes.length; at += TAR_BLOCK) {
    if (looksExecutable(bytes.subarray(at, at + 4))) return true
  }
  return false
}
