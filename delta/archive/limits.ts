/** Ceilings for apply (and create): everything is held in memory, so these bound memory use. */
export interface ArchiveLimits {
  /** Largest rebuilt archive accepted. Default 1 GiB. */
  maxTargetBytes?: number
  /** Largest expanded (decompressed) source, reference or target accepted. Default 1 GiB. */
  maxExpandedBytes?: number
}

const GiB = 1024 * 1024 * 1024

export function resolveArchiveLimits(l: ArchiveLimits = {}): Required<ArchiveLimits> {
  return { maxTargetBytes: l.maxTargetBytes ?? GiB, maxExpandedBytes: l.maxExpandedBytes ?? GiB }
}

/** The code of an archive that expands past maxExpandedBytes: a limit reached (isLimitError), not damage. */
export const ARCHIVE_TOO_LARGE = 'archive-too-large'
