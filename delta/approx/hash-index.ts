/**
 * A cheaper source index for approx matching: hash chains over every 8-byte string of the source (the
 * structure zlib's matcher uses), walked a bounded number of steps per lookup. Building it is one pass
 * of hashing with two array writes a byte, against a suffix array's several random-access induce
 * passes: 2–4× faster on tar contents.
 *
 * It is not exhaustive, so it can miss the longest match where an 8-byte string occurs thousands of
 * times. Node's executable is like that (its unwind tables are runs of near-identical records): the
 * chains cost it 5.7 % of delta size against the suffix array, so executables keep the suffix array
 * (`chooseApproxIndex`, docs/decisions/0028-hash-chain-approx-index.md).
 */
import type { SourceRanges } from '../known-copies.ts'
import type { Match } from './source-index.ts'

/** Matches shorter than this are not indexed; the scan only ever switches to a match of ≥ 9 bytes. */
export const HASH_KEY_BYTES = 8
/**
 * Chain steps per lookup. Text repeats its short strings a lot: on typescript 5.5 → 5.6's contents 16
 * steps left the delta 17.7 % larger than the suffix array's, 256 steps 2.2 %, 1,024 steps 0.5 % at
 * 1.5× the time of 256.
 */
const MAX_CHAIN = 256
/**
 * Bytes compared per lookup, over all candidates: where every candidate matches for long (runs,
 * repeated records) the walk stops early, so a lookup costs no more than a suffix array's binary
 * search would (log n steps of a common prefix each).
 */
const MAX_COMPARED = 16 * 1024

export interface HashIndex {
  readonly source: Uint8Array
  /** Per hash: 1 + the latest position with it, 0 when none (so the table needs no fill). */
  readonly head: Int32Array
  /** Per position: 1 + the previous position with the same hash, 0 at a chain's end. */
  readonly prev: Int32Array
  /** 32 − table bits: hashes are the top bits of a 32-bit mix. */
  readonly shift: number
}

/** `ranges`: the stretches of the source to index (default all of it; see known-copies.ts). */
export function indexSourceByHash(
  source: Uint8Array,
  ranges: SourceRanges = [[0, source.length]],
): HashIndex {
  const n = source.length
  let indexed = 0
  for (const [start, end] of ranges) indexed += end - start
  // About two positions a slot (more collisions cost lookups; a larger table costs cache misses while
  // building), between 4 Ki and 4 Mi slots.
  const bits = Math.min(22, Math.max(12, Math.floor(Math.log2(Math.max(indexed, 1))) - 1))
  const shift = 32 - bits
  const head = new Int32Array(1 << bits)
  const prev = new Int32Array(Math.max(n, 1))
  const hashes = new Int32Array(INSERT_BLOCK)
  for (const [start, end] of ranges) {
    const limit = Math.min(end, n - HASH_KEY_BYTES + 1)
    for (let at = start; at < limit; at += INSERT_BLOCK) {
      const count = hashBlock(hashes, source, at, Math.min(limit, at + INSERT_BLOCK), shift)
      insertBlock(head, prev, hashes, at, count)
    }
  }
  return { source, head, prev, shift }
}

/** Positions hashed, then inserted, per call of the two functions below. */
const INSERT_BLOCK = 1024

/**
 * The index is built in blocks: hash INSERT_BLOCK positions, then link them, in the same order as one
 * loop would. Each insert reads a random slot of `head` (a cache miss on a big table); with the hash
 * arithmetic out of the insert loop the CPU overlaps those misses. And two small functions called per
 * block are optimized by V8 after a few calls, where one long loop in a function called once runs
 * unoptimized until on-stack replacement.
 */
function hashBlock(hashes: Int32Array, source: Uint8Array, from: number, to: number, shift: number): number {
  let k = 0
  for (let i = from; i < to; i++) hashes[k++] = hashAt(source, i, shift)
  return k
}

function insertBlock(head: Int32Array, prev: Int32Array, hashes: Int32Array, from: number, count: number) {
  for (let k = 0; k < count; k++) {
    const h = hashes[k]!
    prev[from + k] = head[h]!
    head[h] = from + k + 1
  }
}

function hashAt(b: Uint8Array, i: number, shift: number): number {
  const lo = b[i]! | (b[i + 1]! << 8) | (b[i + 2]! << 16) | (b[i + 3]! << 24)
  const hi = b[i + 4]! | (b[i + 5]! << 8) | (b[i + 6]! << 16) | (b[i + 7]! << 24)
  return (Math.imul(lo, 0x9e3779b1) ^ Math.imul(hi ^ (lo >>> 15), 0x85ebca77)) >>> shift
}

/**
 * Finds a long match for target[t..]: the current alignment (`hint`, a source position or −1) and up to
 * MAX_CHAIN chained candidates, longest first. Among equally long ones it takes the one whose first
 * differing byte is numerically closest to the target's, which is what a suffix array's binary search
 * lands on: a relocated address differs by a small amount, so the byte diff stays small and repeats.
 * Reports nothing (len 0) for a match shorter than HASH_KEY_BYTES unless it is the hint itself.
 */
export function longestMatchByHash(
  index: HashIndex,
  target: Uint8Array,
  t: number,
  hint: number,
  out: Match,
): void {
  const { source, head, prev } = index
  const n = source.length
  const rem = target.length - t
  out.len = 0
  out.pos = 0
  if (rem < HASH_KEY_BYTES || n === 0) return
  let best = 0
  let bestPos = -1
  let bestGap = 256
  if (hint >= 0 && hint < n) {
    const max = Math.min(n - hint, rem)
    let k = 0
    while (k < max && source[hint + k] === target[t + k]) k++
    best = k
    bestPos = hint
    bestGap = k < max ? Math.abs(source[hint + k]! - target[t + k]!) : 0
  }
  let compared = best
  let link = head[hashAt(target, t, index.shift)]!
  for (let steps = 0; link !== 0 && steps < MAX_CHAIN && best < rem && compared < MAX_COMPARED; steps++) {
    const p = link - 1
    link = prev[p]!
    const max = Math.min(n - p, rem)
    if (max < best) continue
    let k = 0
    while (k < max && source[p + k] === target[t + k]) k++
    compared += k + 1
    if (k < best) continue
    const gap = k < max ? Math.abs(source[p + k]! - target[t + k]!) : 0
    if (k > best || gap < bestGap) {
      best = k
      bestPos = p
      bestGap = gap
    }
  }
  if (best >= HASH_KEY_BYTES || (best > 0 && bestPos === hint)) {
    out.len = best
    out.pos = bestPos
  }
}
