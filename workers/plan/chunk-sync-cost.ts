import { decodeChunkIndex } from '../../delta/chunking/chunk-index.ts'
import type { ArtifactManifest } from '../../schemas/manifest.ts'
import type { RuntimeConfig } from '../../schemas/runtime-config.ts'
import { keys } from '../storage/keys.ts'

export interface ChunkSyncCost {
  bytes: number
  estimate: 'exact' | 'factor'
}

/**
 * Wire bytes of a chunk-sync to `target`: the index plus the target chunks the device lacks. Exact when
 * the edge knows what the device holds (its posted chunk hashes, or the chunk index of its installed
 * version); for an installed version published without an index, target size × the configured
 * factor; for a device that says nothing about its bytes, not offered at all.
 */
export async function chunkSyncCost(
  bucket: R2Bucket,
  target: ArtifactManifest,
  installed: ArtifactManifest | null,
  haveChunks: readonly string[] | undefined,
  plan: RuntimeConfig['plan'],
): Promise<ChunkSyncCost | null> {
  const ref = target.chunkIndex
  if (!ref) return null
  let have: Set<string> | null = haveChunks ? new Set(haveChunks) : null
  if (!have && installed?.chunkIndex) {
    const local = await readIndex(bucket, installed.name, installed.version)
    if (local) have = new Set(local.chunks.map((c) => c.hash))
  }
  // Nothing known about the device's bytes: chunk-sync could only be guessed at, and a device with no
  // base gains nothing from it, so it is not offered.
  if (!have && !installed) return null
  if (!have)
    return { bytes: ref.size + Math.round(target.size * plan.chunkSyncEstimateFactor), estimate: 'factor' }
  const remote = await readIndex(bucket, target.name, target.version)
  if (!remote) return null
  let missing = 0
  for (const chunk of remote.chunks) if (!have.has(chunk.hash)) missing += chunk.length
  return { bytes: ref.size + missing, estimate: 'exact' }
}

async function readIndex(bucket: R2Bucket, name: string, version: string) {
  const object = await bucket.get(keys.chunks(name, version))
  if (!object) return null
  return decodeChunkIndex(new Uint8Array(await object.arrayBuffer()))
}
