/**
 * Index of the last element of ascending `sorted` that is ≤ `value` (0 when none is, so callers whose
 * first element is 0 always land on a range). Used to find which range of a concatenation holds a
 * position.
 */
export function lastAtOrBefore(sorted: ArrayLike<number>, value: number): number {
  let lo = 0
  let hi = sorted.length - 1
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1
    if (sorted[mid]! <= value) lo = mid
    else hi = mid - 1
  }
  return lo
}
