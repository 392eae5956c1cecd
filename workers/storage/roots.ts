import { MAX_ROOT_VERSION, SignedRoot } from '../../schemas/root.ts'
import { Problem } from '../http/problem.ts'
import { keys } from './keys.ts'
import { parseStored } from './stored-json.ts'

/**
 * Root metadata in R2 (ADR 0035): `roots/<version>.json`, each the canonical JSON of a signed root,
 * written once by a create-only put and never replaced or deleted (the retention sweeps leave `roots/`
 * alone). The chain rules themselves are checked before the write, in workers/publish/roots.ts; here
 * is only what the store guarantees, which the reads rely on: root n is written only after root n−1
 * is stored, so the stored versions are always exactly 1..latest.
 */

/** A stored root: the envelope, its bytes exactly as stored and served, and R2's validator. */
export interface StoredRoot {
  envelope: SignedRoot
  raw: string
  etag: string
}

export async function readRoot(bucket: R2Bucket, version: number): Promise<StoredRoot | null> {
  const key = keys.root(version)
  const object = await bucket.get(key)
  if (!object) return null
  const raw = await object.text()
  const envelope = parseStored(SignedRoot, raw, key, 'root')
  if (envelope.signed.version !== version) throw new Problem(500, 'internal', `stored root ${key} is corrupt`)
  return { envelope, raw, etag: `"${object.httpEtag.replace(/"/g, '')}"` }
}

/**
 * The highest stored root version, 0 when none is stored.
 *
 * Why neither a listing nor a pointer: R2 lists keys in lexicographic order (`roots/10.json` before
 * `roots/2.json`) and a page at a time, so "the last key listed" is wrong from version 10 on and
 * finding the highest means reading the whole prefix; a pointer object is one more write per root,
 * which can fail or land out of order after the root it names is stored, so readers could not trust
 * it without a check like this one anyway. Because the stored versions are exactly 1..latest (see
 * above), "root k is stored" is true for every k up to latest and for none after it, so a galloping
 * search finds latest: HEAD 1, 3, 7, 15, … until one is missing, then bisect the gap. That is about
 * 2·log2(latest) HEADs (7 for 11 roots), and roots change only on key rotations, so chains stay short.
 * A HEAD is a cheap read, and nothing is written but the roots themselves.
 */
export async function latestRootVersion(bucket: R2Bucket): Promise<number> {
  const stored = async (version: number) => (await bucket.head(keys.root(version))) !== null
  /** Highest version known to be stored (0: none), lowest known not to be. */
  let below = 0
  let above = MAX_ROOT_VERSION + 1
  for (let step = 1; below + step < above; step *= 2) {
    const probe = below + step
    if (!(await stored(probe))) {
      above = probe
      break
    }
    below = probe
  }
  while (above - below > 1) {
    const middle = Math.floor((below + above) / 2)
    if (await stored(middle)) below = middle
    else above = middle
  }
  return below
}

/** The newest stored root, null when none is stored. */
export async function readLatestRoot(bucket: R2Bucket): Promise<StoredRoot | null> {
  const version = await latestRootVersion(bucket)
  return version === 0 ? null : readRoot(bucket, version)
}

/**
 * Stores `raw` as root `version` unless one is stored: create-only (`onlyIf: { etagDoesNotMatch: '*' }`,
 * evaluated by R2 when the write commits, as for blob slots), so of two publishes racing for a version
 * at most one is written. 'unchanged' when the stored root is byte for byte `raw` (a retry, or the
 * race lost to the same root); 409 when it is another root.
 */
export async function createRoot(
  bucket: R2Bucket,
  version: number,
  raw: string,
): Promise<'created' | 'unchanged'> {
  const written = await bucket.put(keys.root(version), raw, {
    httpMetadata: { contentType: 'application/json' },
    onlyIf: { etagDoesNotMatch: '*' },
  })
  if (written) return 'created'
  const stored = await readRoot(bucket, version)
  if (!stored) throw new Problem(409, 'conflict', `root ${version} changed during the request; retry it`)
  assertSameRoot(stored, raw)
  return 'unchanged'
}

/** 409 unless `stored` holds exactly `raw`: a stored root never changes. */
export function assertSameRoot(stored: StoredRoot, raw: string): void {
  if (stored.raw === raw) return
  const { version } = stored.envelope.signed
  throw new Problem(
    409,
    'conflict',
    `root ${version} is already published with other content, and a published root never changes: ` +
      'to change trust, publish the version after the latest root (GET /v1/roots/latest), signed by its root keys',
  )
}
