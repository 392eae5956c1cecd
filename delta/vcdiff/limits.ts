/** Caller-chosen ceilings; anything a delta declares beyond them is a DeltaFormatError. */
export interface VcdiffLimits {
  /** Largest target window accepted (bytes). Default 64 MiB. */
  maxWindowSize?: number
  /** Largest total output accepted (bytes). Default 4 GiB. */
  maxTargetSize?: number
  /** Largest encoded window buffered at once (bytes). Default 2 x maxWindowSize + 1 MiB. */
  maxDeltaWindowSize?: number
  /** Largest application header or custom code table accepted (bytes). Default 64 KiB. */
  maxHeaderDataSize?: number
  /**
   * Bytes of earlier output the streaming decoder keeps for VCD_TARGET windows (whose source
   * segment is earlier target data). Default 8 MiB (or maxWindowSize if smaller). Older references
   * fail with a limit error.
   */
  maxTargetHistory?: number
  /**
   * Bytes of source the streaming decoder keeps in memory (whole 64 KiB pages, at least two).
   * Default 16 MiB: a segment that fits is read once, up front; larger ones are paged on demand.
   */
  maxSourceCache?: number
}

export interface ResolvedLimits {
  maxWindowSize: number
  maxTargetSize: number
  maxDeltaWindowSize: number
  maxHeaderDataSize: number
  maxTargetHistory: number
  maxSourceCache: number
}

const MiB = 1024 * 1024
/** Default streaming history: one default-size deltaport window. */
export const DEFAULT_TARGET_HISTORY = 8 * MiB

/** Default streaming source cache: a whole esbuild-sized source, or two default windows' worth. */
export const DEFAULT_SOURCE_CACHE = 16 * MiB

export function resolveLimits(l: VcdiffLimits = {}): ResolvedLimits {
  // Windows are addressed with 32-bit typed arrays internally, hence the 2^31 ceiling.
  const maxWindowSize = Math.min(l.maxWindowSize ?? 64 * MiB, 2 ** 31 - 1)
  return {
    maxWindowSize,
    maxTargetSize: l.maxTargetSize ?? 4096 * MiB,
    maxDeltaWindowSize: l.maxDeltaWindowSize ?? 2 * maxWindowSize + MiB,
    maxHeaderDataSize: l.maxHeaderDataSize ?? 64 * 1024,
    // deltaport and xdelta3 encoders never emit VCD_TARGET windows, so history only serves foreign
    // deltas; keeping 64 MiB of it by default doubled the streaming decoder's memory for nothing.
    maxTargetHistory: l.maxTargetHistory ?? Math.min(maxWindowSize, DEFAULT_TARGET_HISTORY),
    maxSourceCache: l.maxSourceCache ?? DEFAULT_SOURCE_CACHE,
  }
}
