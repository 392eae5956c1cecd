export {
  buildChunkIndex,
  type ChunkEntry,
  type ChunkIndex,
  chunkHash,
  decodeChunkIndex,
  encodeChunkIndex,
  HASH_BYTES,
} from './chunk-index.ts'
export { type ChunkerOptions, chunkLengths, chunkSource, DEFAULT_CHUNKER } from './fastcdc.ts'
export {
  applyChunkPlan,
  type ByteRange,
  planChunkSync,
  type SyncOptions,
  type SyncPlan,
  type SyncStep,
  verifyingSink,
} from './plan.ts'
