/**
 * Archive-aware ("semantic") deltas for gzip / tgz and zip: diff the decompressed contents, rebuild
 * the exact compressed bytes on the client. Format: docs/formats/archive-delta.md; rationale:
 * docs/decisions/0004-exact-recompression.md.
 */
export {
  applyArchiveDelta,
  applyArchiveDeltaToSink,
  checkArchiveSourceLength,
  type DecodedArchiveDelta,
  decodeArchiveDelta,
  maxArchiveDeltaBytes,
} from './apply.ts'
export type { ArchiveDeltaDetails, ArchiveDeltaOptions, ArchiveDeltaResult } from './create.ts'
export { createArchiveDelta, createArchiveDeltaAsync } from './create.ts'
export { type DeflateEngine, type DeflateStream, deflateHostOf, pakoEngine } from './deflate-engine.ts'
export { detectArchive } from './detect.ts'
export type { InnerDiffer } from './differs.ts'
export { approxDiffer, defaultDiffers, vcdiffDiffer } from './differs.ts'
export type { ArchiveKind } from './expand.ts'
export type { ArchiveLimits } from './limits.ts'
export type { DeflateParams } from './recompress.ts'
