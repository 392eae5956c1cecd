import type { SignedRoot } from '../../schemas/root.ts'
import { nextRootProblem, rootDigest, selfSignedProblem } from '../../schemas/root-chain.ts'
import { canonicalJson } from '../../schemas/signed-envelope.ts'
import { Problem } from '../http/problem.ts'
import { assertSameRoot, createRoot, readRoot } from '../storage/roots.ts'

/** What a root publish did, and the bytes now stored (and served) for its version. */
export interface RootPublished {
  outcome: 'created' | 'unchanged'
  raw: string
}

/**
 * Stores `envelope` as the next root of the chain (ADR 0035), or refuses it. The edge holds no root key
 * and cannot make a root trusted; it refuses what devices would refuse anyway (schemas/root-chain.ts, the
 * same code the agent runs), so a stolen PUBLISH_TOKEN cannot end the chain with a root no device can
 * follow, and a mistake shows up at publish time instead of on every device:
 * - root 1 must stand on its own: its own root keys' threshold of signatures, keyids that are their keys'
 *   sha256 (422 `untrusted-root`); it starts the chain, so it is refused (409) once any root is stored;
 * - root n > 1 needs root n−1 stored (409) and must be signed by the threshold of root n−1's root keys
 *   and of its own (422 `untrusted-root`);
 * - `expires` must be in the future (422): devices refuse an expired newest root;
 * - when MAINTAINER_KEYS pins a root (`root:<digest>`), root 1 must be that root (422 `untrusted-root`):
 *   the edge then takes its maintainers from this chain, which a stolen token must not be able to start.
 * A stored root never changes: the same root again (same canonical bytes, however the JSON was laid out)
 * is an idempotent retry, another root for a stored version a 409, checked before anything else.
 *
 * What is stored is the canonical JSON of the parsed envelope (signatures cover the canonical JSON of
 * `signed`, so they stay valid): exactly what was checked, and one spelling per root.
 */
export async function publishRoot(
  bucket: R2Bucket,
  envelope: SignedRoot,
  now: Date,
  pinnedDigest?: string,
): Promise<RootPublished> {
  const { version, expires } = envelope.signed
  const raw = canonicalJson(envelope)
  const stored = await readRoot(bucket, version)
  if (stored) {
    assertSameRoot(stored, raw)
    return { outcome: 'unchanged', raw: stored.raw }
  }
  if (Date.parse(expires) <= now.getTime())
    throw new Problem(422, 'unprocessable', `root ${version} expired at ${expires}; devices would refuse it`)
  if (version === 1 && pinnedDigest !== undefined && (await rootDigest(envelope.signed)) !== pinnedDigest)
    throw new Problem(422, 'untrusted-root', "root 1 is not the root this edge's MAINTAINER_KEYS pins")
  const problem = version === 1 ? await selfSignedProblem(envelope) : await chainProblem(bucket, envelope)
  if (problem) throw new Problem(422, 'untrusted-root', problem)
  return { outcome: await createRoot(bucket, version, raw), raw }
}

/** Why root n may not follow the stored root n−1 (409 when that one is not stored). */
async function chainProblem(bucket: R2Bucket, envelope: SignedRoot): Promise<string | null> {
  const { version } = envelope.signed
  const previous = await readRoot(bucket, version - 1)
  if (!previous)
    throw new Problem(
      409,
      'conflict',
      `root ${version - 1} not published: publish the roots in order, each signed by the one before`,
    )
  return nextRootProblem(previous.envelope.signed, envelope)
}
