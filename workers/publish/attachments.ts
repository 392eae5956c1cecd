import { DeltaFraming } from '../../schemas/delta-stream.ts'
import type { ArtifactManifest } from '../../schemas/manifest.ts'
import { Problem } from '../http/problem.ts'
import { keys } from '../storage/keys.ts'

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
