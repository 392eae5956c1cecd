export { type ControlHints, decodeControlBlock, encodeControlBlock } from './control.ts'
export { crc32c } from './crc32c.ts'
export { type FecParams, frameStream, frameStreamIterable, type StreamMetaInput, sha256Hex } from './frame.ts'
export { type BlockHeader, type BlockType, HEADER_SIZE, readHeader } from './header.ts'
export {
  type BlockRange,
  type BlockRole,
  type ByteRange,
  blockRangeFor,
  groupBlockRange,
  layoutOf,
  rangeHeader,
  roleOf,
  type StreamLayout,
} from './layout.ts'
export { decodeMetadata, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE, type StreamMetadata } from './metadata.ts'
export { type ReassemblerOptions, type ReassemblyReport, StreamReassembler } from './reassembler.ts'
