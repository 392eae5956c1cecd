import { check } from '../errors.ts'
import { crc32c } from './crc32c.ts'
import { type BlockHeader, HEADER_SIZE, readHeader, writeHeader } from './header.ts'

export type BlockFields = Omit<BlockHeader, 'payloadCrc' | 'payloadLength'>

/** A framed block of HEADER_SIZE + blockSize bytes whose payload area the caller fills before sealing. */
export function allocateBlock(blockSize: number): Uint8Array {
  return new Uint8Array(HEADER_SIZE + blockSize)
}

export function payloadArea(frame: Uint8Array): Uint8Array {
  return frame.subarray(HEADER_SIZE)
}

/** Writes the header once the payload area is final (the checksum covers padding too). */
export function sealBlock(frame: Uint8Array, fields: BlockFields, payloadLength: number): Uint8Array {
  writeHeader(frame, { ...fields, payloadLength, payloadCrc: crc32c(payloadArea(frame)) })
  return frame
}

export function encodeBlock(fields: BlockFields, payload: Uint8Array, blockSize: number): Uint8Array {
  check(
    payload.length <= blockSize,
    'stream.bad-block',
    `payload of ${payload.length} B exceeds blockSize ${blockSize}`,
  )
  const frame = allocateBlock(blockSize)
  frame.set(payload, HEADER_SIZE)
  return sealBlock(frame, fields, payload.length)
}

/** Header plus checksum-verified payload area; throws DeltaFormatError on any mismatch. */
export function verifyBlock(frame: Uint8Array, blockSize: number): { header: BlockHeader; area: Uint8Array } {
  check(frame.length === HEADER_SIZE + blockSize, 'stream.bad-block', 'block has the wrong framed size')
  const header = readHeader(frame)
  check(header.payloadLength <= blockSize, 'stream.bad-block', 'payload length exceeds blockSize')
  const area = payloadArea(frame)
  check(
    crc32c(area) === header.payloadCrc,
    'stream.bad-checksum',
    `block ${header.sequence} payload checksum mismatch`,
  )
  return { header, area }
}
