import { DeltaFraming } from '../../schemas/delta-stream.ts'
import type { ArtifactManifest } from '../../schemas/manifest.ts'
import type { RuntimeConfig } from '../../schemas/runtime-config.ts'
import { Problem } from '../http/problem.ts'
import { keys } from '../storage/keys.ts'
import { MAX_SLOT_BYTES } from './blob-slot.ts'
import { framingFor } from './frame-delta.ts'

/** Header + CRC of the chunk index format (docs/formats/chunk-index.md) and bytes per entry. */
const CHUNK_INDEX_OVERHEAD = 36
const CHUNK_ENTRY_BYTES = 20
/** 2^20 chunks ≈ 8 GiB at the default 8 KiB average; the index is buffered to be decoded. */
const MAX_CHUNKS = 1 << 20

/** Whether a chunk index reference describes an index the chunks upload would take. */
export function chunkIndexFits(ref: { size: number; chunkCount: number }): boolean {
  return (
    ref.chunkCount <= MAX_CHUNKS && ref.size === CHUNK_INDEX_OVERHEAD + CHUNK_ENTRY_BYTES * ref.chunkCount
  )
}

/**
 * Refuses (422), before it is staged, a manifest listing attachments no upload could ever store: two
 * deltas with the same source and method (they share one R2 key, so the commit gate would find one of
 * them missing for good), a delta whose framed stream is beyond one R2 put, or a chunk index whose size
 * does not fit its chunk count (its upload is refused). Staged, such a manifest could never commit and would hold its version for the abandonment
 * period, refusing the corrected manifest meanwhile.
 */
export function assertAttachmentsStorable(manifest: ArtifactManifest, stream: RuntimeConfig['stream']): void {
  const seen = new Set<string>()
  for (const ref of manifest.deltas) {
    // Framed with the config in force, the stream is stored by one put, which R2 caps.
    const id = { name: manifest.name, from: ref.from, to: manifest.version, method: ref.method }
    if (framingFor(id, ref.size, ref.sha256, stream).framedLength > MAX_SLOT_BYTES)
      throw new Problem(
        422,
        'unprocessable',
        `the ${ref.method} delta from ${ref.from} (${ref.size} bytes) is too large to store; ship the full artifact instead`,
      )
    const slot = `${ref.from}\u0000${ref.method}`
    if (seen.has(slot))
      throw new Problem(
        422,
        'unprocessable',
        `the manifest lists more than one ${ref.method} delta from ${ref.from}; a version has one delta per source and method`,
      )
    seen.add(slot)
  }
  if (manifest.chunkIndex && !chunkIndexFits(manifest.chunkIndex))
    throw new Problem(422, 'unprocessable', "the manifest's chunk index size does not fit its chunk count")
}

/**
 * The commit gate: every delta and the chunk index the signed manifest lists must already be stored
 * and match it, or agents would be promised objects the edge cannot serve. Stale objects from an
 * abandoned earlier attempt (same version, other bytes) are caught by comparing the hashes.
 */
export async function assertAttachmentsStored(bucket: R2Bucket, manifest: ArtifactManifest): Promise<void> {
  const { name, version } = manifest
  const missing: string[] = []
  const heads = manifest.deltas.map(async (ref) => {
    const head = await bucket.head(keys.delta(name, ref.from, version, ref.method))
    const framing = DeltaFraming.safeParse(head?.customMetadata ?? {})
    if (
      !framing.success ||
      framing.data.payloadSha256 !== ref.sha256 ||
      framing.data.payloadLength !== ref.size
    ) {
      missing.push(`delta ${ref.from} (${ref.method})`)
    }
  })
  if (manifest.chunkIndex) {
    const expected = manifest.chunkIndex
    heads.push(
      bucket.head(keys.chunks(name, version)).then((head) => {
        // Recorded only after R2 itself verified the bytes against it (put's `sha256` option).
        const sha = head?.customMetadata?.sha256
        if (!head || head.size !== expected.size || sha !== expected.sha256) missing.push('chunk index')
      }),
    )
  }
  await Promise.all(heads)
  if (missing.length > 0) {
    throw new Problem(
      409,
      'conflict',
      `upload what the manifest lists before the blob: missing ${missing.sort().join(', ')}`,
    )
  }
}
