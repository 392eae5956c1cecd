/**
 * In-memory apply. A first pass walks the block headers only, proving every claimed size is backed by
 * bytes actually present in the delta (and DEFLATE's maximum ratio). The target then grows as blocks
 * decode (doubling, like VCDIFF's in-memory decoder), never sized from the header alone: a few KB of
 * block headers can claim as much as the caller's maxTargetSize, while each block must decode before
 * its bytes are allocated.
 */
import { check, DeltaFormatError } from '../errors.ts'
import { blockInflaters, type CopySource, decodeBlock, replayBlock } from './block.ts'
import { crc32 } from './crc32.ts'
import {
  type ApproxLimits,
  BLOCK_HEADER_SIZE,
  blockCount,
  HEADER_SIZE,
  type Header,
  parseBlockHeader,
  parseHeader,
  payloadSize,
  resolveLimits,
} from './format.ts'
import type { InflateHost } from './inflate.ts'

/** `host` may lend a faster raw inflate for the block streams (inflate.ts). */
export function applyApproxDelta(
  source: Uint8Array,
  delta: Uint8Array,
  limits?: ApproxLimits,
  host?: InflateHost,
): Uint8Array {
  const h = parseHeader(delta, resolveLimits(limits))
  checkSource(h, source.length, crc32(source))
  walkBlocks(delta, h, () => {})

  let target: Uint8Array = new Uint8Array(0)
  const copySource: CopySource = (pos, len, dst, at) => dst.set(source.subarray(pos, pos + len), at)
  const inflaters = blockInflaters(host)
  walkBlocks(delta, h, (index, header, payload) => {
    const block = decodeBlock(header, payload, h.sourceLength, inflaters)
    const at = index * h.blockSize
    const end = at + header.targetBytes
    if (end > target.length) {
      const grown = allocate(Math.min(h.targetLength, Math.max(end, target.length * 2)))
      grown.set(target.subarray(0, at))
      target = grown
    }
    replayBlock(block, copySource, target, at)
  })
  check(crc32(target) === h.targetCrc, 'target-mismatch', 'reconstructed target fails its checksum')
  return target
}

/** A target the host cannot hold is a limit error, as one over maxTargetSize is, never a RangeError. */
function allocate(size: number): Uint8Array {
  try {
    return new Uint8Array(size)
  } catch {
    throw new DeltaFormatError('too-large', `cannot allocate ${size} bytes of target`)
  }
}

/** Checks the source's length and (unless `withCrc` is false, for a length-only check) its CRC. */
export function checkSource(h: Header, length: number, crc: number, withCrc = true): void {
  check(
    length === h.sourceLength,
    'source-mismatch',
    `source is ${length} bytes, delta expects ${h.sourceLength}`,
  )
  if (!withCrc) return
  check(crc === h.sourceCrc, 'source-mismatch', 'source checksum differs from the one the delta was made for')
}

function walkBlocks(
  delta: Uint8Array,
  h: Header,
  visit: (index: number, header: ReturnType<typeof parseBlockHeader>, payload: Uint8Array) => void,
): void {
  let at = HEADER_SIZE
  const count = blockCount(h)
  for (let i = 0; i < count; i++) {
    check(at + BLOCK_HEADER_SIZE <= delta.length, 'truncated', `delta ends inside block ${i}'s header`)
    const header = parseBlockHeader(delta.subarray(at, at + BLOCK_HEADER_SIZE), h, i)
    at += BLOCK_HEADER_SIZE
    const size = payloadSize(header)
    check(at + size <= delta.length, 'truncated', `delta ends inside block ${i}'s streams`)
    visit(i, header, delta.subarray(at, at + size))
    at += size
  }
  check(at === delta.length, 'trailing-bytes', 'bytes after the last block')
}
