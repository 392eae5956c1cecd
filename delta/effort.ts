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
