/**
 * When an expensive delta method is worth running. Shared by createDelta and the archive method's inner
 * differs so both prune the same way (docs/decisions/0012-codec-performance.md).
 */

/**
 * The approx method costs an index of the source (a suffix array or hash chains, ≈3–20× vcdiff's make
 * time), and can at best save the bytes of the delta already in hand. When that delta is tiny, both in
 * bytes and relative to the target, the saving cannot be worth it: returns why approx is skipped, or null to run it.
 */
export function approxNotWorth(bestSoFar: number, targetLength: number): string | null {
  const floor = Math.max(APPROX_MIN_GAIN_BYTES, targetLength * APPROX_MIN_GAIN_FRACTION)
  return bestSoFar <= floor
    ? `a ${bestSoFar}-byte delta leaves approx at most ${bestSoFar} bytes to save`
    : null
}

/**
 * Archive pairs: whether approx should run before vcdiff, given a forecast of vcdiff's inner delta
 * (archive/vcdiff-estimate.ts, in bytes before deflate). When the forecast is well past the point where
 * approx would run anyway, vcdiff's index would only be built for a delta that approx then beats
 * (approx was smaller on 7 of the 8 shipped bench pairs when both ran). A forecast just past the point
 * may still land under it: a sample of a few slices is noisy, hence the factor.
 */
export function approxLeads(vcdiffForecast: number, targetLength: number): boolean {
  return (
    vcdiffForecast >
    APPROX_LEADS_FACTOR * Math.max(APPROX_MIN_GAIN_BYTES, targetLength * APPROX_MIN_GAIN_FRACTION)
  )
}

/**
 * The forecast itself costs a few vcdiff runs over small slices (10–70 ms on the bench pairs, cold).
 * Below this much edited content vcdiff is about that cheap itself, so it just runs first.
 */
export const FORECAST_MIN_EDITED_BYTES = 512 * 1024

/**
 * Measured forecasts on the bench pairs (bytes): typescript 5.5 → 5.6 384 K, lodash 24 K, react-dom
 * 22 K (approx smaller in each) against typescript 5.8.2 → 5.8.3 4.9 K, lodash-es 0.7 K, @types/node
 * and esbuild 0.2 K (vcdiff's delta under the floor, approx not worth running).
 */
const APPROX_LEADS_FACTOR = 4

/**
 * When approx ran first, vcdiff still runs if approx did worse than vcdiff was forecast to: returns
 * why vcdiff is skipped, or null to run it.
 */
export function vcdiffNotWorth(approxBytes: number, vcdiffForecast: number): string | null {
  return approxBytes <= vcdiffForecast
    ? `approx's ${approxBytes}-byte delta is under vcdiff's forecast of ${vcdiffForecast} bytes`
    : null
}

/** approx is skipped when the best delta so far is at most this many bytes … */
export const APPROX_MIN_GAIN_BYTES = 4096
/** … or at most this fraction of the target. */
export const APPROX_MIN_GAIN_FRACTION = 0.001

/**
 * Native executables (ELF, Mach-O thin or fat, PE): code moves and every address operand shifts, which
 * cuts VCDIFF's exact copies short everywhere; approx wins by 4× on both executable pairs of the codec
 * bench. For these createDelta runs approx first and VCDIFF only when approx did poorly.
 */
export function looksExecutable(bytes: Uint8Array): boolean {
  const magic = (...m: number[]) => m.every((b, i) => bytes[i] === b)
  return (
    magic(0x7f, 0x45, 0x4c, 0x46) || // ELF
    magic(0xcf, 0xfa, 0xed, 0xfe) || // Mach-O 64, little-endian
    magic(0xce, 0xfa, 0xed, 0xfe) || // Mach-O 32, little-endian
    magic(0xfe, 0xed, 0xfa, 0xcf) || // Mach-O 64, big-endian
    magic(0xfe, 0xed, 0xfa, 0xce) || // Mach-O 32, big-endian
    magic(0xca, 0xfe, 0xba, 0xbe) || // Mach-O universal (also a Java class file; approx suits both)
    magic(0x4d, 0x5a) // MZ: PE/COFF
  )
}

/** For executables, VCDIFF still runs when approx's delta is at least this fraction of the target. */
export const VCDIFF_AFTER_APPROX_FRACTION = 0.25
