import type { ArtifactManifest, SignedManifest } from '../../schemas/manifest.ts'
import { Problem } from '../http/problem.ts'
import { requirePublished } from './artifact-store.ts'
import { keys } from './keys.ts'

/**
 * Replaces a published version's signed manifest with a re-signed one that differs only in `expires`.
 *
 * Manifests expire so a frozen or replayed edge cannot serve stale releases forever; without a way to
 * extend them, a version nobody re-released for 90 days became uninstallable for good (a new publish
 * of the same version is refused: versions are immutable). Everything an agent verifies about the
 * bytes — size, sha256, serial, dependencies, deltas, chunk index — must stay identical, so the edge
 * compares the signed fields, not trusting the maintainer's tooling to have kept them. The signature is
 * checked by the route against MAINTAINER_KEYS when the operator set them, and by agents always.
 *
 * The write is conditional on the stored manifest's etag, so two re-signs racing cannot interleave
 * with each other's read; the loser gets 409 and re-reads.
 */
export async function resignManifest(
  bucket: R2Bucket,
  name: string,
  version: string,
  envelope: SignedManifest,
  now: Date,
): Promise<{ expires: string; previousExpires: string }> {
  const incoming = envelope.signed
  if (incoming.name !== name || incoming.version !== version)
    throw new Problem(
      422,
      'unprocessable',
      `the manifest describes ${incoming.name}@${incoming.version}, not ${name}@${version}`,
    )
  const stored = await requirePublished(bucket, name, version)
  const changed = changedFields(stored.envelope.signed, incoming)
  if (changed.length > 0)
    throw new Problem(
      422,
      'unprocessable',
      `re-signing may change only expires; ${changed.join(', ')} differ from ${name}@${version} as published (publish a new version to change them)`,
    )
  if (Date.parse(incoming.expires) <= now.getTime())
    throw new Problem(422, 'unprocessable', `expires ${incoming.expires} is not in the future`)
  const written = await bucket.put(keys.manifest(name, version), JSON.stringify(envelope), {
    onlyIf: { etagMatches: stored.etag.replace(/"/g, '') },
    httpMetadata: { contentType: 'application/json' },
  })
  if (written === null)
    throw new Problem(409, 'conflict', `${name}@${version}'s manifest changed meanwhile; fetch it again`)
  return { expires: incoming.expires, previousExpires: stored.envelope.signed.expires }
}

/** Signed fields other than `expires` whose values differ (both sides parsed by the same schema). */
function changedFields(published: ArtifactManifest, incoming: ArtifactManifest): string[] {
  const fields = new Set([...Object.keys(published), ...Object.keys(incoming)])
  fields.delete('expires')
  return [...fields].filter((field) => {
    const a = (published as Record<string, unknown>)[field]
    const b = (incoming as Record<string, unknown>)[field]
    return JSON.stringify(a) !== JSON.stringify(b)
  })
}
