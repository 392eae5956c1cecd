/**
 * zlib's Huffman tree construction (its trees.c, which GNU gzip's trees.c is the ancestor of),
 * reimplemented bit for bit from the algorithm: given a block's symbol frequencies it yields the
 * same code lengths and the same dynamic block header zlib would send, so a parse can leave out
 * every header zlib would have computed (parse.ts) and the encoder can recompute it (encode.ts).
 *
 * What has to match exactly, because any other choice among equally optimal codes gives different
 * bits:
 * - build: a binary min-heap of the symbols with nonzero frequency, inserted in symbol order and
 *   heapified bottom-up; ties in frequency go to the node of smaller depth (subtree height), then to
 *   the node already higher in the heap. New internal nodes are numbered from `elems` upward. When
 *   fewer than two symbols occur, zlib adds symbols of frequency 1: `++maxCode` while maxCode < 2,
 *   else symbol 0 (so one used distance code 1 adds code 2, not 0).
 * - lengths: depth in that tree, clamped to 15 (7 for the code-length code); the overflow repair
 *   moves leaves down exactly as zlib does and then hands out lengths again in the order the heap
 *   removed the nodes (least frequent first get the longest).
 * - header: HLIT/HDIST from the largest symbol in the tree (including the added ones), each tree
 *   run-length coded on its own (runs never cross from literal/length into distance lengths) with
 *   zlib's max/min run rules, the code-length code built from those runs' frequencies, and HCLEN
 *   trimmed in RFC order but never below 4.
 */
import { BitWriter } from './bits.ts'
import { BL_CODES, CLEN_ORDER, canonicalCodes, D_CODES, L_CODES, MAX_BITS } from './tables.ts'

const MAX_BL_BITS = 7
/** Leaves plus internal nodes of the largest tree (zlib's HEAP_SIZE); heap[0] is unused. */
const HEAP_SIZE = 2 * L_CODES + 1

/** Per node (leaf or internal) of the tree being built; one tree at a time. */
const nodeFreq = new Float64Array(HEAP_SIZE)
const nodeDad = new Int32Array(HEAP_SIZE)
const nodeLen = new Int32Array(HEAP_SIZE)
const nodeDepth = new Int32Array(HEAP_SIZE)
/** heap[1..heapLen] is the priority queue; heap[heapMax..] collects removed nodes, root first. */
const heap = new Int32Array(HEAP_SIZE)
let heapLen = 0
let heapMax = 0
/** Leaves per code length after buildTree. */
const lengthCount = new Int32Array(MAX_BITS + 1)

/** Node n sorts before node m: less frequent, or as frequent and not deeper. */
function smaller(n: number, m: number): boolean {
  const fn = nodeFreq[n]!
  const fm = nodeFreq[m]!
  return fn < fm || (fn === fm && nodeDepth[n]! <= nodeDepth[m]!)
}

/** Moves heap[k] down until both children sort after it. */
function siftDown(k: number): void {
  const v = heap[k]!
  let j = k << 1
  while (j <= heapLen) {
    if (j < heapLen && smaller(heap[j + 1]!, heap[j]!)) j++
    if (smaller(v, heap[j]!)) break
    heap[k] = heap[j]!
    k = j
    j <<= 1
  }
  heap[k] = v
}

/**
 * zlib's build_tree + gen_bitlen: code lengths (at most maxLength bits) for freq[0, elems) into
 * lens[0, elems). Returns the largest symbol with a code (zlib's max_code).
 */
export function buildTree(
  freq: ArrayLike<number>,
  elems: number,
  maxLength: number,
  lens: Uint8Array,
): number {
  heapLen = 0
  heapMax = HEAP_SIZE
  let maxCode = -1
  for (let n = 0; n < elems; n++) {
    const f = freq[n]!
    nodeFreq[n] = f
    nodeLen[n] = 0
    if (f !== 0) {
      heap[++heapLen] = n
      maxCode = n
      nodeDepth[n] = 0
    }
  }
  // DEFLATE needs at least one distance code and at least one bit per code, so zlib always builds
  // a tree of at least two leaves.
  while (heapLen < 2) {
    const node = maxCode < 2 ? ++maxCode : 0
    heap[++heapLen] = node
    nodeFreq[node] = 1
    nodeDepth[node] = 0
  }
  for (let n = heapLen >> 1; n >= 1; n--) siftDown(n)

  let node = elems
  do {
    const n = heap[1]!
    heap[1] = heap[heapLen--]!
    siftDown(1)
    const m = heap[1]!
    heap[--heapMax] = n
    heap[--heapMax] = m
    nodeFreq[node] = nodeFreq[n]! + nodeFreq[m]!
    nodeDepth[node] = Math.max(nodeDepth[n]!, nodeDepth[m]!) + 1
    nodeDad[n] = node
    nodeDad[m] = node
    heap[1] = node++
    siftDown(1)
  } while (heapLen >= 2)
  heap[--heapMax] = heap[1]!

  assignLengths(maxCode, maxLength)
  for (let n = 0; n < elems; n++) lens[n] = nodeLen[n]!
  return maxCode
}

/** zlib's gen_bitlen: depths clamped to maxLength, then its overflow repair. */
function assignLengths(maxCode: number, maxLength: number): void {
  lengthCount.fill(0)
  nodeLen[heap[heapMax]!] = 0
  let overflow = 0
  let h = heapMax + 1
  // Parents were removed from the heap after their children, so they sit earlier: one pass.
  for (; h < HEAP_SIZE; h++) {
    const n = heap[h]!
    let bits = nodeLen[nodeDad[n]!]! + 1
    if (bits > maxLength) {
      bits = maxLength
      overflow++ // internal nodes count too, as in zlib
    }
    nodeLen[n] = bits
    if (n <= maxCode) lengthCount[bits]!++
  }
  if (overflow === 0) return

  // Move one leaf down from the deepest level below maxLength that has one, and pair an
  // overflowed leaf with it, until the count is consistent.
  do {
    let bits = maxLength - 1
    while (lengthCount[bits] === 0) bits--
    lengthCount[bits]!--
    lengthCount[bits + 1]! += 2
    lengthCount[maxLength]!--
    overflow -= 2
  } while (overflow > 0)

  // Hand the lengths out again, longest first, to leaves in the order they left the heap
  // (least frequent first).
  for (let bits = maxLength; bits !== 0; bits--) {
    let n = lengthCount[bits]!
    while (n !== 0) {
      const m = heap[--h]!
      if (m > maxCode) continue
      nodeLen[m] = bits
      n--
    }
  }
}

const REP_3_6 = 16
const REPZ_3_10 = 17
const REPZ_11_138 = 18
/** Extra bits after each repeat symbol. */
const REPEAT_EXTRA = Uint8Array.from([2, 3, 7])

/**
 * zlib's scan_tree/send_tree run-length coding of lens[0..maxCode]: appends to ops (symbol | extra
 * value << 5) from index at, returns the new end.
 */
function runLengths(lens: Uint8Array, maxCode: number, ops: Int32Array, at: number): number {
  let prevLen = -1
  let nextLen = lens[0]!
  let count = 0
  let maxCount = 7
  let minCount = 4
  if (nextLen === 0) {
    maxCount = 138
    minCount = 3
  }
  for (let n = 0; n <= maxCode; n++) {
    const curLen = nextLen
    nextLen = n < maxCode ? lens[n + 1]! : -1
    if (++count < maxCount && curLen === nextLen) continue
    if (count < minCount) {
      for (; count > 0; count--) ops[at++] = curLen
    } else if (curLen !== 0) {
      if (curLen !== prevLen) {
        ops[at++] = curLen
        count--
      }
      ops[at++] = REP_3_6 | ((count - 3) << 5)
    } else if (count <= 10) ops[at++] = REPZ_3_10 | ((count - 3) << 5)
    else ops[at++] = REPZ_11_138 | ((count - 11) << 5)
    count = 0
    prevLen = curLen
    if (nextLen === 0) {
      maxCount = 138
      minCount = 3
    } else if (curLen === nextLen) {
      maxCount = 6
      minCount = 3
    } else {
      maxCount = 7
      minCount = 4
    }
  }
  return at
}

/** A dynamic block's codes and header as zlib builds them from the block's frequencies. */
export interface DynamicCode {
  litLens: Uint8Array
  distLens: Uint8Array
  /** HLIT + 257, HDIST + 1, HCLEN + 4: how many lengths of each code the header sends. */
  nlen: number
  ndist: number
  nbl: number
  blLens: Uint8Array
  blCodes: Uint16Array
  /** The run-length coded lengths: code-length symbol | repeat extra value << 5. */
  ops: Int32Array
  nops: number
}

const zlibCode: DynamicCode = {
  litLens: new Uint8Array(L_CODES),
  distLens: new Uint8Array(D_CODES),
  nlen: 0,
  ndist: 0,
  nbl: 0,
  blLens: new Uint8Array(BL_CODES),
  blCodes: new Uint16Array(BL_CODES),
  ops: new Int32Array(L_CODES + D_CODES),
  nops: 0,
}
const blFreq = new Int32Array(BL_CODES)

/**
 * zlib's trees for a block with these symbol frequencies (litFreq[256], END_BLOCK, must be 1 as in
 * every zlib block). Returns a shared object, valid until the next call.
 */
export function zlibDynamicCode(litFreq: ArrayLike<number>, distFreq: ArrayLike<number>): DynamicCode {
  const c = zlibCode
  c.nlen = buildTree(litFreq, L_CODES, MAX_BITS, c.litLens) + 1
  c.ndist = buildTree(distFreq, D_CODES, MAX_BITS, c.distLens) + 1
  c.nops = runLengths(c.litLens, c.nlen - 1, c.ops, 0)
  c.nops = runLengths(c.distLens, c.ndist - 1, c.ops, c.nops)
  blFreq.fill(0)
  for (let i = 0; i < c.nops; i++) blFreq[c.ops[i]! & 31]!++
  buildTree(blFreq, BL_CODES, MAX_BL_BITS, c.blLens)
  let last = BL_CODES - 1
  while (last >= 4 && c.blLens[CLEN_ORDER[last]!] === 0) last--
  c.nbl = last + 1
  canonicalCodes(c.blLens, BL_CODES, c.blCodes)
  return c
}

/** Writes a dynamic header (after the 3 block-type bits) as send_all_trees does. */
export function writeDynamicHeader(c: DynamicCode, w: BitWriter): void {
  w.put(c.nlen - 257, 5)
  w.put(c.ndist - 1, 5)
  w.put(c.nbl - 4, 4)
  for (let i = 0; i < c.nbl; i++) w.put(c.blLens[CLEN_ORDER[i]!]!, 3)
  for (let i = 0; i < c.nops; i++) {
    const op = c.ops[i]!
    const sym = op & 31
    w.put(c.blCodes[sym]!, c.blLens[sym]!)
    if (sym >= REP_3_6) w.put(op >>> 5, REPEAT_EXTRA[sym - REP_3_6]!)
  }
}

/**
 * The bits writeDynamicHeader writes for c, without writing them: what zlib's build_bl_tree adds to
 * a block's dynamic cost (opt_len) for the header.
 */
export function dynamicHeaderBitLength(c: DynamicCode): number {
  let bits = 14 + 3 * c.nbl
  for (let i = 0; i < c.nops; i++) {
    const sym = c.ops[i]! & 31
    bits += c.blLens[sym]!
    if (sym >= REP_3_6) bits += REPEAT_EXTRA[sym - REP_3_6]!
  }
  return bits
}

/** Upper bound of a dynamic header's bits: 14 + 19·3 + (286 + 30)·(7 + 7). */
export const MAX_HEADER_BITS = 14 + BL_CODES * 3 + (L_CODES + D_CODES) * 14

/** A header's bits as HeaderBits-shaped bytes (fresh arrays). */
export function dynamicHeaderBits(c: DynamicCode): { bytes: Uint8Array; bitLength: number } {
  const w = new BitWriter((MAX_HEADER_BITS >>> 3) + 8)
  writeDynamicHeader(c, w)
  const bitLength = w.bitLength()
  w.align()
  return { bytes: w.bytes.slice(0, w.pos), bitLength }
}
