import type { ArchiveKind } from './expand.ts'
import { isGzip } from './gzip.ts'
import { isZip } from './zip.ts'

/** Sniffs the container format from magic bytes only; parsing may still reject the file later. */
export function detectArchive(bytes: Uint8Array): ArchiveKind | null {
  if (isGzip(bytes)) return 'gzip'
  if (isZip(bytes)) return 'zip'
  return null
}
