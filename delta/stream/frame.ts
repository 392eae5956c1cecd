import { check } from '../errors.ts'
import { encodeParity } from '../fec/index.ts'
import type { ByteSource } from '../io.ts'
import { concatBytes } from '../io.ts'
import { allocateBlock, type BlockFields, encodeBlock, payloadArea, sealBlock } from './block.ts'
import { type ControlHints, encodeControlPayload } from './control.ts'
import { FLAG_FINAL_DATA, HEADER_SIZE } from './header.ts'
import { encodeMetadata, expectedBlockCount, type StreamMetadata, streamTagOf } from './metadata.ts'
import { Sha256 } from './sha256.ts'

/** What the caller knows about the payload; length and hash are computed when given bytes. */
export interface StreamMetaInput {
  artifact: string
  fromVersion: string | null
  toVersion: string
  method: string
  blockSize: number
  /** Required when framing a ByteSource: the metadata block goes out before the payload is read. */
  payloadLength?: number
  sha256?: string
  /** Embedded as one control block right after the metadata. */
  hints?: ControlHints
}

export interface FecParams {
  k: number
  m: number
}

export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  // Bare `crypto` is globalThis.crypto; workerd's typings declare it only as a global const.
  // WebCrypto's typings refuse views that might be SharedArrayBuffer-backed; ours never are.
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes as Uint8Array<ArrayBuffer>))
  let hex = ''
  for (const b of digest) hex += b.toString(16).padStart(2, '0')
  return hex
}

async function resolveMetadata(
  payload: Uint8Array | ByteSource,
  input: StreamMetaInput,
  fec: FecParams,
): Promise<StreamMetadata> {
  let { payloadLength, sha256 } = input
  if (payload instanceof Uint8Array) {
    const actual = await sha256Hex(payload)
    check(
      sha256 === undefined || sha256 === actual,
      'stream.payload-mismatch',
      'sha256 does not match the payload',
    )
    check(
      payloadLength === undefined || payloadLength === payload.length,
      'stream.payload-mismatch',
      'payloadLength does not match',
    )
    payloadLength = payload.length
    sha256 = actual
  }
  check(
    payloadLength !== undefined && sha256 !== undefined,
    'stream.bad-metadata',
    'framing a ByteSource needs payloadLength and sha256',
  )
  const shape = {
    payloadLength,
    blockSize: input.blockSize,
    k: fec.k,
    m: fec.m,
    controlBlocks: input.hints ? 1 : 0,
  }
  return {
    format: 'deltaport-stream',
    version: 1,
    artifact: input.artifact,
    fromVersion: input.fromVersion,
    toVersion: input.toVersion,
    method: input.method,
    sha256,
    ...shape,
    blockCount: expectedBlockCount(shape),
  }
}

/** Cuts a source into framed data blocks, writing straight into each block's payload area. */
async function* dataFrames(
  source: ByteSource,
  blockSize: number,
): AsyncGenerator<{ frame: Uint8Array; length: number }> {
  let frame = allocateBlock(blockSize)
  let fill = 0
  for await (const chunk of source) {
    for (let at = 0; at < chunk.length; ) {
      const n = Math.min(blockSize - fill, chunk.length - at)
      frame.set(chunk.subarray(at, at + n), HEADER_SIZE + fill)
      fill += n
      at += n
      if (fill === blockSize) {
        yield { frame, length: fill }
        frame = allocateBlock(blockSize)
        fill = 0
      }
    }
  }
  if (fill > 0) yield { frame, length: fill }
}

async function* once(bytes: Uint8Array): ByteSource {
  yield bytes
}

/**
 * The framed stream, one block per yielded array. Holds at most one group (k data + m parity blocks)
 * in memory. Yielded arrays must not be mutated: parity is computed from them after they are yielded.
 */
export async function* frameStreamIterable(
  payload: Uint8Array | ByteSource,
  input: StreamMetaInput,
  fec: FecParams,
): AsyncGenerator<Uint8Array> {
  const meta = await resolveMetadata(payload, input, fec)
  const tag = streamTagOf(meta.sha256)
  const { blockSize, k, m } = meta
  const base = { flags: 0, group: 0, indexInGroup: 0, streamTag: tag }
  yield encodeBlock({ ...base, type: 'metadata', sequence: 0 }, encodeMetadata(meta), blockSize)
  if (input.hints)
    yield encodeBlock({ ...base, type: 'control', sequence: 1 }, encodeControlPayload(input.hints), blockSize)

  const totalData = Math.ceil(meta.payloadLength / blockSize)
  let sequence = 1 + meta.controlBlocks
  let group = 0
  let dataIndex = 0
  let seen = 0
  let members: Uint8Array[] = []
  // Bytes were hashed up front; a source is checked against its declared hash as it streams.
  const hash = payload instanceof Uint8Array ? null : new Sha256()
  const parityFrames = (): Uint8Array[] => {
    const parity = encodeParity(members.map(payloadArea), m)
    const frames = parity.map((p, j) => {
      const fields: BlockFields = {
        ...base,
        type: 'parity',
        sequence: sequence++,
        group,
        indexInGroup: members.length + j,
      }
      return encodeBlock(fields, p, blockSize)
    })
    members = []
    group++
    return frames
  }

  for await (const { frame, length } of dataFrames(
    payload instanceof Uint8Array ? once(payload) : payload,
    blockSize,
  )) {
    seen += length
    hash?.update(frame.subarray(HEADER_SIZE, HEADER_SIZE + length))
    check(
      seen <= meta.payloadLength,
      'stream.payload-mismatch',
      `source is longer than payloadLength ${meta.payloadLength}`,
    )
    const flags = dataIndex === totalData - 1 ? FLAG_FINAL_DATA : 0
    yield sealBlock(
      frame,
      { ...base, flags, type: 'data', sequence: sequence++, group, indexInGroup: members.length },
      length,
    )
    members.push(frame)
    dataIndex++
    if (members.length === k) yield* parityFrames()
  }
  if (members.length > 0) yield* parityFrames()
  check(
    seen === meta.payloadLength,
    'stream.payload-mismatch',
    `source ended after ${seen} of ${meta.payloadLength} bytes`,
  )
  check(
    hash === null || hash.digestHex() === meta.sha256,
    'stream.payload-mismatch',
    'the source does not match the declared sha256',
  )
}

/** The whole framed stream in one array (for small payloads and tests). */
export async function frameStream(
  payload: Uint8Array | ByteSource,
  input: StreamMetaInput,
  fec: FecParams,
): Promise<Uint8Array> {
  const blocks: Uint8Array[] = []
  for await (const b of frameStreamIterable(payload, input, fec)) blocks.push(b)
  return concatBytes(blocks)
}
