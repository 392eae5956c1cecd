import type { KnownCopy, KnownCopyCursor, SourceRanges, SourceSplit } from '../known-copies.ts'
import { RUN } from './code-table.ts'
import type { OpList } from './ops.ts'

// Source matches are found through 8-byte keys (fewer false candidates in big sources); target
// self-matches through 4-byte keys, since short repeats inside a window are still worth a COPY.
const SRC_KEY = 8
const TGT_KEY = 4
const MIN_RUN = 8
/** Source copies at least this long (or found at the expected place) re-anchor the alignment. */
const ANCHOR_LEN = 32
/** Largest extra stride when nothing has matched for a long while (see match()). */
const MAX_SKIP = 7
/** Matches at least this long are taken without looking one byte ahead for a better one. */
const LAZY_CUTOFF = 48

function word(b: Uint8Array, p: number): number {
  return b[p]! | (b[p + 1]! << 8) | (b[p + 2]! << 16) | (b[p + 3]! << 24)
}

// Hashes return all 32 bits: the top bits pick the bucket and the whole value is stored as a tag,
// so most wrong candidates are rejected without touching (and cache-missing on) the data.
function hash8(b: Uint8Array, p: number): number {
  const w0 = word(b, p)
  return Math.imul(w0, 0x9e3779b1) ^ Math.imul(word(b, p + 4) ^ (w0 >>> 15), 0x85ebca77)
}

/** A 32-byte key: rarer coincidences, used to find the long match among many short decoys. */
function hash32(b: Uint8Array, p: number): number {
  let h = 0x811c9dc5
  for (let i = p; i < p + 32; i += 4) {
    h = Math.imul(h ^ word(b, i), 0x9e3779b1)
    h ^= h >>> 15
  }
  return Math.imul(h, 0x85ebca77)
}

/**
 * How much more sparsely the short index samples known copies' sources. Measured on lodash-es
 * 4.17.20 → 4.17.21 (1.1 MB of tar, 39 KB changed): leaving them out made the inner delta 2.7 %
 * larger (2,851 bytes against 2,777); every 16th position brings it back (2,778), every 8th
 * 2,757, every 4th 2,721 at twice the index time on @types/node.
 */
const COPIED_STRIDE = 16

/** Candidates kept per source hash bucket: repetitive data (tar headers, padding) needs several. */
const WAYS = 4
const LONG_KEY = 32

/**
 * Bucketed hash table of source positions, newest first, each slot a (position + 1, tag) pair so
 * a bucket fits in half a cache line. Big sources are sampled every `step`
 * bytes to keep at most 2^maxBits buckets; a match of at least step + key - 1 bytes is still
 * found, and matches are then extended in both directions.
 */
export class HashIndex {
  readonly table: Int32Array
  readonly shift: number
  readonly key: number
  /** Distance between indexed positions (1 unless the source is big enough to be sampled). */
  readonly step: number

  /**
   * `ranges`: the stretches of the source to index (default all of it); `sampled`: stretches indexed
   * `sampledStride` times more sparsely (known copies' sources, see known-copies.ts).
   */
  constructor(
    source: Uint8Array,
    key: number,
    maxBits: number,
    minStep: number,
    ranges: SourceRanges = [[0, source.length]],
    sampled: SourceRanges = [],
    sampledStride = 1,
  ) {
    this.key = key
    // Keys start at positions [start, limit) of each range (a key may run into the next stretch).
    const last = source.length - key + 1
    const count = (rs: SourceRanges) => rs.reduce((n, [a, b]) => n + Math.max(0, Math.min(b, last) - a), 0)
    const positions = count(ranges) + count(sampled) / sampledStride
    let bits = 8
    while (bits < maxBits && 1 << bits < positions / (2 * minStep)) bits++
    const step = Math.max(minStep, Math.ceil(positions / ((1 << bits) * 2)))
    this.step = step
    this.table = new Int32Array((1 << bits) * WAYS * 2)
    this.shift = 32 - bits
    // The sampled stretches first, so that in a full bucket the searched ones, newer, stay.
    this.insert(source, sampled, last, step * sampledStride)
    this.insert(source, ranges, last, step)
  }

  private insert(source: Uint8Array, ranges: SourceRanges, last: number, step: number): void {
    // Inserts are cache misses on a big table. Hashing a block first and then inserting it lets
    // the CPU overlap those misses instead of interleaving them with hash arithmetic.
    const hashes = new Int32Array(256)
    for (const [start, end] of ranges) {
      const limit = Math.min(end, last)
      for (let p0 = start; p0 < limit; p0 += 256 * step) {
        const n =
          this.key === LONG_KEY
            ? hashBlock32(hashes, source, p0, limit, step)
            : hashBlock8(hashes, source, p0, limit, step)
        insertBlock(this.table, hashes, n, p0, step, this.shift)
      }
    }
  }

  hash(b: Uint8Array, p: number): number {
    return this.key === LONG_KEY ? hash32(b, p) : hash8(b, p)
  }

  bucket(h: number): number {
    return (h >>> this.shift) * WAYS * 2
  }
}

/** Hashes of up to 256 positions from p0 on, `step` apart (see insertBlock); returns how many. */
function hashBlock8(hashes: Int32Array, source: Uint8Array, p0: number, limit: number, step: number) {
  let n = 0
  for (let p = p0; p < limit && n < 256; p += step) hashes[n++] = hash8(source, p)
  return n
}

/** hashBlock8 for the long key: a function per key keeps each call site of one shape. */
function hashBlock32(hashes: Int32Array, source: Uint8Array, p0: number, limit: number, step: number) {
  let n = 0
  for (let p = p0; p < limit && n < 256; p += step) hashes[n++] = hash32(source, p)
  return n
}

/**
 * Inserts the `n` positions p0, p0 + step, … whose hashes are in `hashes`, newest first in each bucket
 * (the four ways written out: WAYS is 4). Small functions called once per 256 positions, rather than
 * loops inside the constructor, so V8 optimizes them after a few calls instead of waiting for
 * on-stack replacement: measured in fresh processes, an index over a 140 KB tar after the first went
 * from 14–24 to 6–11 ms and the first over a 2.3 MB tar from 58–123 to 52–86 ms; the same table.
 */
function insertBlock(
  table: Int32Array,
  hashes: Int32Array,
  n: number,
  p0: number,
  step: number,
  shift: number,
) {
  for (let k = 0; k < n; k++) {
    const h = hashes[k]!
    const b = (h >>> shift) * WAYS * 2
    table[b + 7] = table[b + 5]!
    table[b + 6] = table[b + 4]!
    table[b + 5] = table[b + 3]!
    table[b + 4] = table[b + 2]!
    table[b + 3] = table[b + 1]!
    table[b + 2] = table[b]!
    table[b] = p0 + k * step + 1 // p + 1, so that 0 means "empty"
    table[b + 1] = h
  }
}

/** Both source indexes, built once per encode (at most 16 + 8 MiB of tables). */
export class SourceIndex {
  readonly source: Uint8Array
  readonly short: HashIndex
  readonly long: HashIndex

  /**
   * `split`: the source outside and inside known copies (default: all of it searched). Inside, the
   * short index samples every COPIED_STRIDE-th position: changed files still find phrases they share
   * with unchanged ones, at a fraction of the inserts.
   */
  constructor(source: Uint8Array, split: SourceSplit = { searched: [[0, source.length]], copied: [] }) {
    this.source = source
    this.short = new HashIndex(source, SRC_KEY, 19, 1, split.searched, split.copied, COPIED_STRIDE)
    // The long index only has to catch long matches, so sampling it sparsely loses little and
    // saves most of its build time (each insert is a cache miss).
    this.long = new HashIndex(source, LONG_KEY, 18, 8, split.searched)
  }
}

function gcd(a: number, b: number): number {
  while (b !== 0) [a, b] = [b, a % b]
  return a
}

/**
 * The largest stride up to `wanted` that shares no factor with the index's sampling step. The source
 * index holds every step-th position (32 for a 32 MiB source), so a target probed every `stride` bytes
 * meets an indexed position only if the probes' residues modulo the step reach the match's: stride 8
 * and step 32 cycle through 4 of 32. After new bytes inserted into random or compressed data (a miss
 * stretch long enough for stride 8, the target resuming where neither expected alignment looks),
 * 7 times in 8 nothing matched again for the rest of the window. Measured: 20,001 random bytes
 * inserted into a 32 MiB random file made a 6.3 MB delta instead of 20 KB; a 5 GiB pair with 79 edits
 * (streamed) 80 MiB instead of 9.4 MiB. A coprime stride meets every residue within `step` probes.
 */
function strideCoprimeTo(wanted: number, step: number): number {
  let stride = wanted
  while (stride > 1 && gcd(stride, step) !== 1) stride--
  return stride
}

function matchLength(a: Uint8Array, ai: number, b: Uint8Array, bi: number, max: number): number {
  let n = 0
  while (n < max && a[ai + n] === b[bi + n]) n++
  return n
}

function varintBytes(v: number): number {
  return v < 0x80 ? 1 : v < 0x4000 ? 2 : v < 0x200000 ? 3 : v < 0x10000000 ? 4 : 5
}

/** Reusable per-window matcher state; holds no per-byte allocations. */
export class WindowMatcher {
  private readonly index: SourceIndex
  private tgtTable = new Int32Array(0)
  private tgtShift = 0
  // Result slots of find(), kept as fields so the hot path allocates nothing.
  private bestLen = 0
  private bestAddr = 0
  private bestSelf = false
  private bestRun = false
  private bestExpected = false
  // Where the last source copy ended, and its source-minus-target offset: after an insertion the
  // target resumes at expectSrc, after a same-length replacement at p + delta. Both are cheap
  // guesses that beat hash candidates in repetitive data, where a hash hit is often a decoy.
  private expectSrc = -1
  private delta = 0

  /** The probe stride after k·64 misses in a row (index min(k, MAX_SKIP)); see strideCoprimeTo. */
  private readonly strides: Uint8Array

  constructor(index: SourceIndex) {
    this.index = index
    this.strides = Uint8Array.from({ length: MAX_SKIP + 1 }, (_, k) =>
      strideCoprimeTo(1 + k, index.short.step),
    )
  }

  /**
   * Appends ops covering target[start, end) to `ops`. `origin` is the position of target[0] in the
   * whole target, so the first guess "same offset as in the source" also works for a buffer that
   * holds only one window (streaming). `known`: copies to take where their bytes agree (positions in
   * `target`'s coordinates), in place of a search.
   */
  match(
    target: Uint8Array,
    start: number,
    end: number,
    ops: OpList,
    origin = 0,
    known?: KnownCopyCursor,
  ): void {
    const size = end - start
    let bits = 10
    while (bits < 20 && 1 << bits < size) bits++
    // Slots are (position + 1, the 4 key bytes themselves), so a lookup compares the key exactly.
    if (this.tgtTable.length !== 2 << bits) this.tgtTable = new Int32Array(2 << bits)
    else this.tgtTable.fill(0)
    this.tgtShift = 32 - bits
    this.expectSrc = -1
    this.delta = origin

    let p = start
    let lit = start
    let misses = 0
    while (p + TGT_KEY <= end) {
      // A known copy is taken unless the search found one at least as long (say a self copy that
      // runs on past it), without the look one byte ahead; the emission below treats it as the
      // expected alignment.
      this.find(target, p, start, end)
      const copy = known?.at(p)
      const taken = copy !== undefined && this.takeKnown(copy, target, p, end)
      if (this.bestLen === 0) {
        // Every probe costs a few cache misses; in long unmatched stretches (new or compressed
        // data) probe ever more sparsely. Matches found later are extended backwards anyway.
        misses++
        p += this.strides[Math.min(MAX_SKIP, misses >>> 6)]!
        continue
      }
      misses = 0
      if (!taken && this.bestLen < LAZY_CUTOFF && p + 1 + TGT_KEY <= end) {
        const len = this.bestLen
        const addr = this.bestAddr
        const self = this.bestSelf
        const run = this.bestRun
        const expected = this.bestExpected
        this.find(target, p + 1, start, end)
        if (this.bestLen > len + 1) {
          p++
        } else {
          this.bestLen = len
          this.bestAddr = addr
          this.bestSelf = self
          this.bestRun = run
          this.bestExpected = expected
        }
      }
      if (!this.bestExpected && this.bestLen < ANCHOR_LEN && this.expectSrc >= 0)
        p = this.resync(target, p, end)
      let len = this.bestLen
      let addr = this.bestAddr
      if (this.bestRun) {
        ops.addLiteral(lit, p)
        ops.push(RUN, len, target[p]!, 0)
      } else {
        // Extend backwards over bytes we were about to emit as literals.
        const from = this.bestSelf ? target : this.index.source
        const floor = this.bestSelf ? start : 0
        while (p > lit && addr > floor && from[addr - 1] === target[p - 1]) {
          p--
          addr--
          len++
        }
        ops.addLiteral(lit, p)
        ops.addCopy(len, addr, this.bestSelf)
        // Short copies from elsewhere are often decoys (a phrase that also occurs far away);
        // letting them move the expectation would lose the alignment the edit left behind.
        if (!this.bestSelf && (len >= ANCHOR_LEN || this.bestExpected)) {
          this.expectSrc = addr + len
          this.delta = addr - p
        }
      }
      // Index positions inside the match sparsely so later repeats of it can still be found. Known
      // copies (whole unchanged files) more sparsely still: megabytes of them would make this loop
      // of cache misses the encoder's main cost.
      const stop = Math.min(p + len, end - TGT_KEY + 1)
      const stride = taken ? 32 : len > 64 ? 8 : 1
      for (let q = p + 1; q < stop; q += stride) {
        const w = word(target, q)
        const i = (Math.imul(w, 0x9e3779b1) >>> this.tgtShift) << 1
        this.tgtTable[i] = q + 1
        this.tgtTable[i + 1] = w
      }
      p += len
      lit = p
    }
    ops.addLiteral(lit, end)
  }

  /**
   * Takes the known copy holding p as this position's match when at least SRC_KEY of its bytes agree
   * from here (a hint is checked, never trusted) and find() found nothing longer; the match ends
   * where the bytes part.
   */
  private takeKnown(copy: KnownCopy, target: Uint8Array, p: number, end: number): boolean {
    const source = this.index.source
    const addr = copy.source + (p - copy.target)
    // Not cut at the copy's end: like any match it runs on while the bytes agree (an archive's
    // unchanged last entry and the end-of-archive blocks after it are one copy).
    const len = matchLength(source, addr, target, p, Math.min(end - p, source.length - addr))
    if (len < SRC_KEY || len < this.bestLen) return false
    this.bestIsExpected(len, addr)
    return true
  }

  /** Records a source copy at the expected alignment as the position's best match. */
  private bestIsExpected(len: number, addr: number): void {
    this.bestLen = len
    this.bestAddr = addr
    this.bestSelf = false
    this.bestRun = false
    this.bestExpected = true
  }

  /**
   * A short match from an unexpected place can swallow the point where the target resumes after
   * an edit (an inserted ", symbol" followed by text that also occurs elsewhere). If the expected
   * alignment matches from somewhere inside the short match and reaches further, start there
   * instead; the skipped bytes become literals. Returns the (possibly later) match position.
   */
  private resync(target: Uint8Array, p: number, end: number): number {
    const source = this.index.source
    const e = this.expectSrc
    const stop = p + this.bestLen
    for (let q = p + 1; q < stop; q++) {
      for (let k = 0; k < 2; k++) {
        const c = k === 0 ? e : q + this.delta
        if (c < 0 || c >= source.length || source[c] !== target[q]) continue
        const len = matchLength(source, c, target, q, Math.min(end - q, source.length - c))
        if (len >= 8 && q + len > stop) {
          this.bestIsExpected(len, c)
          return q
        }
      }
    }
    return p
  }

  private probed = false
  private probeAddr = 0

  /** Checks one bucket's candidates; on a longer match sets probed/probeAddr and returns its length. */
  private probe(
    index: HashIndex,
    target: Uint8Array,
    p: number,
    maxLen: number,
    e: number,
    aligned: number,
    bestLen: number,
    minLen: number,
  ): number {
    const source = this.index.source
    const table = index.table
    const h = index.hash(target, p)
    const b = index.bucket(h)
    for (let w = b; w < b + 2 * WAYS; w += 2) {
      const c = table[w]! - 1
      if (c < 0) break
      if (table[w + 1] !== h || c === e || c === aligned) continue
      const len = matchLength(source, c, target, p, Math.min(maxLen, source.length - c))
      if (len >= minLen && len > bestLen) {
        bestLen = len
        this.probed = true
        this.probeAddr = c
      }
    }
    return bestLen
  }

  /** Best candidate at p among: continuing source alignment, source hash, target hash, a run. */
  private find(target: Uint8Array, p: number, start: number, end: number): void {
    const source = this.index.source
    const maxLen = end - p
    let bestLen = 0
    let bestAddr = 0
    let bestSelf = false
    let bestRun = false
    let bestExpected = false

    const b0 = target[p]!
    if (maxLen >= MIN_RUN && target[p + 1] === b0 && target[p + 2] === b0 && target[p + 3] === b0) {
      let r = 4
      while (r < maxLen && target[p + r] === b0) r++
      if (r >= MIN_RUN) {
        bestLen = r
        bestRun = true
      }
    }

    const e = this.expectSrc
    if (e >= 0 && e < source.length) {
      const len = matchLength(source, e, target, p, Math.min(maxLen, source.length - e))
      if (len >= 4 && len > bestLen) {
        bestLen = len
        bestAddr = e
        bestRun = false
        bestExpected = true
      }
    }
    const aligned = p + this.delta
    if (aligned !== e && aligned >= 0 && aligned < source.length) {
      const len = matchLength(source, aligned, target, p, Math.min(maxLen, source.length - aligned))
      if (len >= 6 && len > bestLen) {
        bestLen = len
        bestAddr = aligned
        bestRun = false
        bestExpected = true
      }
    }

    if (maxLen >= SRC_KEY && source.length >= SRC_KEY) {
      bestLen = this.probe(this.index.short, target, p, maxLen, e, aligned, bestLen, SRC_KEY)
      // A short hit is often one of many copies of a phrase; the long index finds the one that
      // continues (e.g. the same function duplicated across bundles in a tarball).
      if (bestLen >= SRC_KEY && bestLen < 64 && maxLen >= LONG_KEY && source.length >= LONG_KEY) {
        bestLen = this.probe(this.index.long, target, p, maxLen, e, aligned, bestLen, LONG_KEY)
      }
      if (this.probed) {
        bestAddr = this.probeAddr
        bestRun = false
        bestExpected = false
        this.probed = false
      }
    }

    const w = word(target, p)
    const i = (Math.imul(w, 0x9e3779b1) >>> this.tgtShift) << 1
    const t = this.tgtTable[i]! - 1
    const same = this.tgtTable[i + 1] === w
    this.tgtTable[i] = p + 1
    this.tgtTable[i + 1] = w
    if (same && t >= start && t < p) {
      const len = matchLength(target, t, target, p, maxLen)
      // A self COPY costs about an opcode plus the HERE distance; below that, literals are as cheap.
      if (len > bestLen && len >= 3 + varintBytes(p - t)) {
        bestLen = len
        bestAddr = t
        bestSelf = true
        bestRun = false
        bestExpected = false
      }
    }

    this.bestLen = bestLen
    this.bestAddr = bestAddr
    this.bestSelf = bestSelf
    this.bestRun = bestRun
    this.bestExpected = bestExpected
  }
}
