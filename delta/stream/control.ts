import { check } from '../errors.ts'
import { encodeBlock, verifyBlock } from './block.ts'

/**
 * Hints from the edge to the agent. They ride in control blocks: either placed in the stream right
 * after the metadata (counted by `controlBlocks`), or sent on their own as a single framed block
 * (e.g. as the body of a 503) so the agent parses every response with the same code.
 */
export interface ControlHints {
  /** Preferred Range size in bytes for the next requests. */
  recommendedChunkSize?: number
  /** Back off this long before the next request. */
  retryAfterMs?: number
}

function optionalCount(v: unknown): boolean {
  return v === undefined || (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0)
}

export function encodeControlPayload(hints: ControlHints): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(validateHints(hints)))
}

export function validateHints(value: unknown): ControlHints {
  check(
    typeof value === 'object' && value !== null && !Array.isArray(value),
    'stream.bad-control',
    'hints must be an object',
  )
  const h = value as Record<string, unknown>
  check(
    optionalCount(h.recommendedChunkSize) && optionalCount(h.retryAfterMs),
    'stream.bad-control',
    'hints must be non-negative integers',
  )
  const out: ControlHints = {}
  if (h.recommendedChunkSize !== undefined) out.recommendedChunkSize = h.recommendedChunkSize as number
  if (h.retryAfterMs !== undefined) out.retryAfterMs = h.retryAfterMs as number
  return out
}

export function decodeControlPayload(bytes: Uint8Array): ControlHints {
  let parsed: unknown
  try {
    parsed = JSON.parse(new TextDecoder('utf-8', { fatal: true, ignoreBOM: false }).decode(bytes))
  } catch {
    check(false, 'stream.bad-control', 'control payload is not valid UTF-8 JSON')
  }
  return validateHints(parsed)
}

/** A standalone control block (sequence 0, group 0) framed at `blockSize`. */
export function encodeControlBlock(hints: ControlHints, blockSize: number, streamTag = 0): Uint8Array {
  const fields = { type: 'control', flags: 0, sequence: 0, group: 0, indexInGroup: 0, streamTag } as const
  return encodeBlock(fields, encodeControlPayload(hints), blockSize)
}

export function decodeControlBlock(frame: Uint8Array, blockSize: number): ControlHints {
  const { header, area } = verifyBlock(frame, blockSize)
  check(header.type === 'control', 'stream.bad-control', `expected a control block, got ${header.type}`)
  check(
    header.sequence === 0 && header.group === 0 && header.indexInGroup === 0 && header.flags === 0,
    'stream.bad-control',
    'a standalone control block has sequence, group, index and flags 0',
  )
  return decodeControlPayload(area.subarray(0, header.payloadLength))
}
