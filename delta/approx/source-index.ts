/**
 * The source side of matching: its suffix array plus a table from the first two bytes to the range of
 * suffixes starting with them, so a lookup skips ~16 binary-search steps and starts with 2 bytes known.
 */
import { suffixArray } from './sais.ts'

/** Bucket key: length-1 suffixes sort before every longer suffix with the same first byte. */
const GROUP = 257

export interface SourceIndex {
  readonly source: Uint8Array
  readonly sa: Int32Array
  /** starts[key] .. starts[key + 1] is the SA range whose suffixes have that 2-byte key. */
  readonly starts: Int32Array
}

export function indexSource(source: Uint8Array): SourceIndex {
  const sa = suffixArray(source)
  const n = source.length
  const starts = new Int32Array(256 * GROUP + 1)
  for (let i = 0; i < n; i++) starts[keyAt(source, n, i) + 1]!++
  for (let k = 1; k < starts.length; k++) starts[k]! += starts[k - 1]!
  return { source, sa, starts }
}

function keyAt(bytes: Uint8Array, n: number, i: number): number {
  return bytes[i]! * GROUP + (i + 1 < n ? bytes[i + 1]! + 1 : 0)
}

/** Result slot for `longestMatch`, reused so the scan loop allocates nothing. */
export interface Match {
  pos: number
  len: number
}

/**
 * Finds a longest prefix of target[t..] occurring in the source (length and one position). Binary search
 * over the suffix array, skipping the bytes both bounds are already known to share with the target.
 */
export function longestMatch(index: SourceIndex, target: Uint8Array, t: number, out: Match): void {
  const { source, sa, starts } = index
  const n = source.length
  const rem = target.length - t
  out.len = 0
  out.pos = 0
  if (rem <= 0 || n === 0) return
  const group = target[t]! * GROUP
  let lo = 0
  let hi = 0
  let known = 0
  if (rem >= 2) {
    const key = group + target[t + 1]! + 1
    lo = starts[key]!
    hi = starts[key + 1]!
    known = 2
  }
  if (lo === hi) {
    lo = starts[group]!
    hi = starts[group + GROUP]!
    known = 1
    if (lo === hi) return
  }
  // Invariant: suffixes at ranks ≤ left are < target, at ranks ≥ right are ≥ target; the virtual bounds
  // lo-1 and hi share `known` bytes like everything between them.
  let left = lo - 1
  let right = hi
  let lcpLeft = known
  let lcpRight = known
  while (right - left > 1) {
    const mid = (left + right) >>> 1
    const p = sa[mid]!
    let k = Math.min(lcpLeft, lcpRight)
    const max = Math.min(n - p, rem)
    while (k < max && source[p + k] === target[t + k]) k++
    if (k === rem) {
      // The whole remaining target occurs here: nothing can be longer.
      out.len = k
      out.pos = p
      return
    }
    if (k === n - p || source[p + k]! < target[t + k]!) {
      left = mid
      lcpLeft = k
    } else {
      right = mid
      lcpRight = k
    }
  }
  if (left >= lo && (right >= hi || lcpLeft >= lcpRight)) {
    out.len = lcpLeft
    out.pos = sa[left]!
  } else {
    out.len = lcpRight
    out.pos = sa[right]!
  }
}
