import { DeltaFormatError } from '../../delta/errors.ts'
import type { ByteSource } from '../../delta/io.ts'
import { frameStreamIterable } from '../../delta/stream/frame.ts'
import { HEADER_SIZE } from '../../delta/stream/header.ts'
import {
  dataBlockCount,
  encodeMetadata,
  expectedBlockCount,
  MAX_BLOCK_SIZE,
  MIN_BLOCK_SIZE,
} from '../../delta/stream/metadata.ts'
import { Sha256 } from '../../delta/stream/sha256.ts'
import type { DeltaFraming } from '../../schemas/delta-stream.ts'
import type { RuntimeConfig } from '../../schemas/runtime-config.ts'
import { UploadBodyProblem } from '../http/upload-body.ts'
import { refuseBody } from '../storage/guarded-bucket.ts'

/**
 * Bytes the metadata block's JSON may take for this delta, whatever block size is picked: it is
 * encoded at the largest block size, and the block count (the only other field that varies, at most
 * 1 + 128 + 64 below a full group) may have a few more digits at a smaller one.
 */
function metadataBytesFor(id: DeltaIdentity, payloadLength: number, payloadSha256: string): number {
  const shape = { payloadLength, blockSize: MAX_BLOCK_SIZE, k: 1, m: 0, controlBlocks: 0 }
  const meta = {
    format: 'deltaport-stream',
    version: 1,
    artifact: id.name,
    fromVersion: id.from,
    toVersion: id.to,
    method: id.method,
    sha256: payloadSha256,
    ...shape,
    blockCount: expectedBlockCount(shape),
  } as const
  return encodeMetadata(meta).length + 8
}

/**
 * The block size for one payload: the configured size, shrunk for small payloads so that a tiny
 * delta is not padded to k blocks of 64 KiB: the smallest power of two (≥ 512, the format's least)
 * that covers payload/k and holds the metadata block's JSON.
 */
export function blockSizeFor(
  payloadLength: number,
  metadataBytes: number,
  stream: RuntimeConfig['stream'],
): number {
  const perBlock = Math.max(1, Math.ceil(payloadLength / stream.fecK), metadataBytes)
  let size = MIN_BLOCK_SIZE
  while (size < perBlock && size < stream.blockSize) size *= 2
  size = Math.min(size, stream.blockSize)
  // A configured block too small for this delta's metadata (long names) would not frame at all.
  while (size < metadataBytes) size *= 2
  return size
}

/**
 * Parity blocks per group: m, but never more than the stream's data blocks. Parity beyond D blocks
 * costs more bytes than re-fetching every data block (which the agent does for what FEC cannot
 * rebuild), so for a tiny delta it is pure overhead: a 50-byte delta under fecM 4 was 1 data block
 * and 4 parity blocks. Such a stream still survives the loss or corruption of any D of its 2·D
 * blocks without a round trip. Streams of at least m data blocks (every real delta) keep m. The
 * stream records its own m (metadata block, R2 customMetadata, plan layout, `v`), so agents already
 * deployed read it as they read any framing.
 */
export function parityFor(dataBlocks: number, stream: RuntimeConfig['stream']): number {
  return Math.min(stream.fecM, dataBlocks)
}

export function framingFor(
  id: DeltaIdentity,
  payloadLength: number,
  payloadSha256: string,
  stream: RuntimeConfig['stream'],
): DeltaFraming {
  const blockSize = blockSizeFor(payloadLength, metadataBytesFor(id, payloadLength, payloadSha256), stream)
  const m = parityFor(dataBlockCount(payloadLength, blockSize), stream)
  const shape = { payloadLength, blockSize, k: stream.fecK, m, controlBlocks: 0 }
  return {
    blockSize,
    k: stream.fecK,
    m,
    framedLength: expectedBlockCount(shape) * (HEADER_SIZE + blockSize),
    payloadLength,
    payloadSha256,
  }
}

/** A stored delta stream: its framing, and the R2 etag of the object that framing describes. */
export interface StoredDelta {
  framing: DeltaFraming
  storedEtag: string
}

export interface DeltaIdentity {
  name: string
  from: string
  to: string
  method: string
}

/**
 * Frames `source` (the raw delta, streamed from the request) into a DeltaStream and writes it to R2
 * without buffering it. The framer checks length and sha256 against the declared values as it goes;
 * on a mismatch the stream is aborted, so R2 refuses the write and nothing is stored. With `onlyIf`,
 * the write happens only if the key is still as the caller saw it: null when it was not (nothing was
 * written, and what another upload stored there stays). Else the stored object (its etag names exactly
 * this stream, for reads that must not pick up a later write to the key).
 */
export async function storeFramedDelta(
  bucket: R2Bucket,
  key: string,
  source: ByteSource,
  id: DeltaIdentity,
  framing: DeltaFraming,
  extraMetadata: Record<string, string> = {},
  onlyIf?: R2Conditional,
): Promise<R2Object | null> {
  const { readable, writable } = new FixedLengthStream(framing.framedLength)
  const pump = (async () => {
    const writer = writable.getWriter()
    try {
      const blocks = frameStreamIterable(
        verifiedSource(source, framing.payloadLength, framing.payloadSha256),
        {
          artifact: id.name,
          fromVersion: id.from,
          toVersion: id.to,
          method: id.method,
          blockSize: framing.blockSize,
          payloadLength: framing.payloadLength,
          sha256: framing.payloadSha256,
        },
        { k: framing.k, m: framing.m },
      )
      // A copy per block: the framer reads yielded data blocks again to compute parity, and a
      // written chunk belongs to the stream from then on.
      for await (const block of blocks) await writer.write(block.slice())
      await writer.close()
    } catch (error) {
      // A forged payload, or a request body that failed on the client's side: the put fails because
      // of this abort, not because of the store.
      if (refusesPut(error)) refuseBody(readable)
      await writer.abort(error).catch(() => undefined)
      throw error
    }
  })()
  const put = bucket.put(key, readable, {
    httpMetadata: { contentType: 'application/vnd.deltaport.stream' },
    customMetadata: {
      method: id.method,
      blockSize: String(framing.blockSize),
      k: String(framing.k),
      m: String(framing.m),
      framedLength: String(framing.framedLength),
      payloadLength: String(framing.payloadLength),
      payloadSha256: framing.payloadSha256,
      ...extraMetadata,
    },
    ...(onlyIf ? { onlyIf } : {}),
  })
  const [pumped, stored] = await Promise.allSettled([pump, put])
  if (stored.status === 'fulfilled' && stored.value === null) {
    // The condition failed: nothing was written, and the key is another upload's, so it is not cleaned.
    if (pumped.status === 'rejected' && refusesPut(pumped.reason)) throw pumped.reason
    return null
  }
  if (pumped.status === 'rejected' || stored.status === 'rejected') {
    // A put that failed stored nothing, so its cleanup is best effort: a fault there must not turn a
    // forged delta's 422 into a 503. A put that went through (its framer failed only afterwards) must
    // be undone, or the commit gate would take the stored stream for the signed one.
    const removed = bucket.delete(key)
    await (stored.status === 'fulfilled' ? removed : removed.catch(() => undefined))
    // A forged payload (DeltaFormatError) or a failed request body (UploadBodyProblem) explains
    // everything; otherwise a failed put (a storage fault) is the cause and the framer's error only its
    // echo (its stream was cancelled).
    const framerFirst =
      pumped.status === 'rejected' && (refusesPut(pumped.reason) || stored.status !== 'rejected')
    throw framerFirst ? pumped.reason : (stored as PromiseRejectedResult).reason
  }
  return stored.value
}

/** An error of the upload itself (forged payload, failed request body), never one of the store. */
function refusesPut(error: unknown): boolean {
  return error instanceof DeltaFormatError || error instanceof UploadBodyProblem
}

/**
 * Passes `source` through but holds back its last chunk until the whole payload is known to match
 * `sha256`: the framer then never emits the final blocks of a forged payload, the fixed-length body
 * stays short, and R2 cannot commit it (the framer also checks, but only after its last block).
 */
export async function* verifiedSource(source: ByteSource, length: number, sha256: string): ByteSource {
  const hash = new Sha256()
  let seen = 0
  let held: Uint8Array | null = null
  for await (const chunk of source) {
    if (held) yield held
    hash.update(chunk)
    seen += chunk.length
    if (seen > length) throw new DeltaFormatError('stream.payload-mismatch', `more than ${length} bytes`)
    held = chunk
  }
  if (seen !== length || hash.digestHex() !== sha256) {
    throw new DeltaFormatError(
      'stream.payload-mismatch',
      'the delta does not match its sha256 in the manifest',
    )
  }
  if (held) yield held
}

/** A request body as the codec-facing ByteSource. */
export async function* bodySource(body: ReadableStream<Uint8Array>): ByteSource {
  for await (const chunk of body) yield chunk
}
