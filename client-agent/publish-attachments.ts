import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { readFile, stat } from 'node:fs/promises'
import { buildChunkIndex, encodeChunkIndex } from '../delta/chunking/index.ts'
import type { ChunkIndexRef, DeltaMethod, DeltaRef } from '../schemas/manifest.ts'
import { hashFile } from './download.ts'
import type { EdgeClient } from './edge-client.ts'
import { errorFromResponse } from './transfer/error-response.ts'

/**
 * A delta to publish with a version: its bytes in memory or in a file (raw, unframed). `targetSha256`,
 * when known, is the sha256 of the artifact the delta was made to produce: the publish refuses the
 * delta if the artifact file no longer hashes to it (it was rewritten after the deltas were built).
 */
export type DeltaInput = { from: string; method: DeltaMethod; targetSha256?: string } & (
  | { bytes: Uint8Array }
  | { path: string }
)

/** What the manifest lists about a delta, plus how to read its bytes for the upload. */
export interface PreparedDelta {
  ref: DeltaRef
  read: () => Promise<Uint8Array>
}

export async function prepareDelta(input: DeltaInput): Promise<PreparedDelta> {
  if ('bytes' in input) {
    const { bytes } = input
    const sha256 = createHash('sha256').update(bytes).digest('hex')
    return {
      ref: { from: input.from, method: input.method, size: bytes.length, sha256 },
      read: async () => bytes,
    }
  }
  const { path } = input
  const [{ size }, sha256] = await Promise.all([stat(path), hashFile(path)])
  return {
    ref: { from: input.from, method: input.method, size, sha256 },
    read: async () => new Uint8Array(await readFile(path)),
  }
}

/** What one read of the artifact file gives: the sha256 and length of the bytes read, and the chunk index. */
export interface ArtifactRead {
  sha256: string
  length: number
  chunks: { ref: ChunkIndexRef; bytes: Uint8Array } | null
}

/**
 * Reads the artifact once, streaming: its sha256 and, when `withChunkIndex`, its content-defined chunk
 * index (bounded memory), encoded and described, come from the same bytes, so a manifest cannot sign
 * one state of a file being rewritten and describe the chunks of another.
 */
export async function readArtifact(file: string, withChunkIndex: boolean): Promise<ArtifactRead> {
  const hash = createHash('sha256')
  let length = 0
  async function* hashed(): AsyncIterable<Uint8Array> {
    for await (const chunk of createReadStream(file) as AsyncIterable<Uint8Array>) {
      hash.update(chunk)
      length += chunk.length
      yield chunk
    }
  }
  let chunks: ArtifactRead['chunks'] = null
  if (withChunkIndex) {
    const index = await buildChunkIndex(hashed())
    const bytes = encodeChunkIndex(index)
    const sha256 = createHash('sha256').update(bytes).digest('hex')
    chunks = { ref: { size: bytes.length, sha256, chunkCount: index.chunks.length }, bytes }
  } else {
    for await (const _ of hashed()) {
      // Hashing only.
    }
  }
  return { sha256: hash.digest('hex'), length, chunks }
}

/**
 * Uploads the deltas and the chunk index of a staged publish. They must be at the edge before the
 * blob: the blob's upload commits the version, and the edge refuses it while anything listed is missing.
 * `signal` stops them (Ctrl-C: the publish then gives its staged attempt up).
 */
export async function uploadAttachments(
  edge: EdgeClient,
  base: string,
  auth: Record<string, string>,
  deltas: readonly PreparedDelta[],
  chunkIndex: Uint8Array | null,
  signal?: AbortSignal,
): Promise<void> {
  for (const delta of deltas) {
    const body = await delta.read()
    const response = await edge.request(`${base}/deltas/${delta.ref.from}/${delta.ref.method}`, {
      method: 'PUT',
      // fetch sets Content-Length for byte bodies (undici refuses a hand-set one next to them).
      headers: { ...auth, 'content-type': 'application/octet-stream' },
      body,
      ...(signal ? { signal } : {}),
    })
    if (response.status !== 201)
      throw await errorFromResponse(
        response,
        `uploading the ${delta.ref.method} delta from ${delta.ref.from}`,
      )
    await response.body?.cancel()
  }
  if (chunkIndex) {
    const response = await edge.request(`${base}/chunks`, {
      method: 'PUT',
      headers: { ...auth, 'content-type': 'application/octet-stream' },
      body: chunkIndex,
      ...(signal ? { signal } : {}),
    })
    if (response.status !== 201) throw await errorFromResponse(response, 'uploading the chunk index')
    await response.body?.cancel()
  }
}
