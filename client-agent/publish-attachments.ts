import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { readFile, stat } from 'node:fs/promises'
import { buildChunkIndex, encodeChunkIndex } from '../delta/chunking/index.ts'
import type { ChunkIndexRef, DeltaMethod, DeltaRef } from '../schemas/manifest.ts'
import { hashFile } from './download.ts'
import type { EdgeClient } from './edge-client.ts'
import { errorFromResponse } from './transfer/error-response.ts'

/** A delta to publish with a version: its bytes in memory or in a file (raw, unframed). */
export type DeltaInput = { from: string; method: DeltaMethod } & ({ bytes: Uint8Array } | { path: string })

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

/** The artifact's content-defined chunk index (streamed, bounded memory), encoded and described. */
export async function prepareChunkIndex(file: string): Promise<{ ref: ChunkIndexRef; bytes: Uint8Array }> {
  const index = await buildChunkIndex(createReadStream(file) as AsyncIterable<Uint8Array>)
  const bytes = encodeChunkIndex(index)
  const sha256 = createHash('sha256').update(bytes).digest('hex')
  return { ref: { size: bytes.length, sha256, chunkCount: index.chunks.length }, bytes }
}

/**
 * Uploads the deltas and the chunk index of a staged publish. They must be at the edge before the
 * blob: the blob's upload commits the version, and the edge refuses it while anything listed is missing.
 */
export async function uploadAttachments(
  edge: EdgeClient,
  base: string,
  auth: Record<string, string>,
  deltas: readonly PreparedDelta[],
  chunkIndex: Uint8Array | null,
): Promise<void> {
  for (const delta of deltas) {
    const body = await delta.read()
    const response = await edge.request(`${base}/deltas/${delta.ref.from}/${delta.ref.method}`, {
      method: 'PUT',
      // fetch sets Content-Length for byte bodies (undici refuses a hand-set one next to them).
      headers: { ...auth, 'content-type': 'application/octet-stream' },
      body,
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
    })
    if (response.status !== 201) throw await errorFromResponse(response, 'uploading the chunk index')
    await response.body?.cancel()
  }
}
