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
   * segment is earlier target data). Default maxWindowSize. Older references fail with a limit error.
   */
  maxTargetHistory?: number
}

export interface ResolvedLimits {
  maxWindowSize: number
  maxTargetSize: number
  maxDeltaWindowSize: number
  maxHeaderDataSize: number
  maxTargetHistory: number
}

const MiB = 1024 * 1024

export function resolveLimits(l: VcdiffLimits = {}): ResolvedLimits {
  // Windows are addressed with 32-bit typed arrays internally, hence the 2^31 ceiling.
  const maxWindowSize = Math.min(l.maxWindowSize ?? 64 * MiB, 2 ** 31 - 1)
  return {
    maxWindowSize,
    maxTargetSize: l.maxTargetSize ?? 4096 * MiB,
    maxDeltaWindowSize: l.maxDeltaWindowSize ?? 2 * maxWindowSize + MiB,
    maxHeaderDataSize: l.maxHeaderDataSize ?? 64 * 1024,
    maxTargetHistory: l.maxTargetHistory ?? maxWindowSize,
  }
}
