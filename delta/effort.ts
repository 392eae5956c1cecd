/**
 * When an expensive delta method is worth running. Shared by createDelta and the archive method's inner
 * differs so both prune the same way (docs/decisions/0012-codec-performance.md).
 */

/**
 * The approx method costs a suffix array of the source (≈10–20× vcdiff's make time), and can at best
 * save the bytes of the delta already in hand. When that delta is tiny, both in bytes and relative to
 * the target, the saving cannot be worth it: returns why approx is skipped, or null to run it.
 */
export function approxNotWorth(bestSoFar: number, targetLength: number): string | null {
  const floor = Math.max(APPROX_MIN_GAIN_BYTES, targetLength * APPROX_MIN_GAIN_FRACTION)
  return bestSoFar <= floor
    ? `a ${bestSoFar}-byte delta leaves approx at most ${bestSoFar} bytes to save`
    : null
}

/** approx is skipped when the best delta so far is at most this many bytes … */
export const APPROX_MIN_GAIN_BYTES = 4096
/** … or at most this fraction of the target. */
export const APPROX_MIN_GAIN_FRACTION = 0.001
