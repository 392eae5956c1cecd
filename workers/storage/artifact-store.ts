import { gt as semverGreater } from 'semver'
import { ArtifactIndex, type VersionEntry, versionEntry } from '../../schemas/artifact-index.ts'
import { type ArtifactManifest, MAX_SERIAL_STEP, SignedManifest } from '../../schemas/manifest.ts'
import { Problem } from '../http/problem.ts'
import { sha256OfBytes } from '../publish/verify-object.ts'
import { keys } from './keys.ts'
import { parseStored } from './stored-json.ts'

/** What the store knows about a version before reading its bytes. */
export interface StoredManifest {
  envelope: SignedManifest
  /** The envelope exactly as the maintainer signed and uploaded it. */
  raw: string
  etag: string
  /**
   * Written by a commit that had not (yet) added the version to the index when it wrote the key: see
   * COMMIT_MARKER. Such a manifest is published only if the index lists its version.
   */
  committing: boolean
}

/**
 * Custom metadata a commit writes the final manifest key with, and takes off again once the index lists
 * the version. Why: the manifest key is written before the index (so a version the index lists always
 * has its manifest), and a reader that served it between the two writes gave out (and let the edge and
 * clients cache for 60 s) the manifest of a version that a failed index update then left unpublished.
 * A marked manifest is served only once the index lists its version (readPublishedManifest); one
 * without the marker (every manifest written before the marker existed, and every commit that
 * completed) is served as before, with no index read.
 */
const COMMIT_MARKER = { state: 'committing' } as const

export function markedCommitting(metadata: Record<string, string> | undefined): boolean {
  return metadata?.state === COMMIT_MARKER.state
}

export async function readIndex(
  bucket: R2Bucket,
  name: string,
): Promise<{ index: ArtifactIndex; etag: string; uploaded: Date } | null> {
  const key = keys.index(name)
  const object = await bucket.get(key)
  if (!object) return null
  return {
    index: parseStored(ArtifactIndex, await object.text(), key, 'index'),
    etag: object.etag,
    uploaded: object.uploaded,
  }
}

async function readManifest(bucket: R2Bucket, key: string): Promise<StoredManifest | null> {
  const object = await bucket.get(key)
  if (!object) return null
  const raw = await object.text()
  const envelope = parseStored(SignedManifest, raw, key, 'manifest')
  return {
    envelope,
    raw,
    etag: `"${object.httpEtag.replace(/"/g, '')}"`,
    committing: markedCommitting(object.customMetadata),
  }
}

/**
 * The manifest of a published version, or null: not stored, or stored by a commit whose index update
 * has not happened (or failed). Every read that serves a manifest, or anything found through it, goes
 * through here; a manifest the commit left marked (its unmarking failed) costs an index read, nothing
 * more.
 */
export async function readPublishedManifest(
  bucket: R2Bucket,
  name: string,
  version: string,
): Promise<StoredManifest | null> {
  const found = await findPublished(bucket, name, version, false)
  return found === LISTED ? null : found
}

/** What findPublished answers for a version the index lists whose manifest is not servable. */
const LISTED = 'listed-unservable'

/**
 * readPublishedManifest, and with `whenUnservable`, LISTED instead of null when the index lists the
 * version all the same: its final key is empty, or holds a marked manifest of another attempt (ADR 0022,
 * amended 2026-11-26). A servable manifest costs no more reads either way: the index is read only for a
 * manifest that is marked (as before) or, when asked, missing.
 */
async function findPublished(
  bucket: R2Bucket,
  name: string,
  version: string,
  whenUnservable: boolean,
): Promise<StoredManifest | typeof LISTED | null> {
  const stored = await readManifest(bucket, keys.manifest(name, version))
  if (stored && !stored.committing) return stored
  if (!stored && !whenUnservable) return null
  const found = await readIndex(bucket, name)
  const entry = found ? versionEntry(found.index, version) : undefined
  if (!entry) return null
  if (stored && isManifestOf(entry, stored.envelope.signed)) return stored
  return whenUnservable ? LISTED : null
}

/**
 * Whether `manifest` is the one the index entry was made from. A marked manifest at the final key may
 * be another attempt's: one that took the version over from a stalled commit (COMMIT_ABANDONED_AFTER_MS)
 * claims the key, and the stalled commit's index update may still land after that, listing its own
 * serial. The same bytes (sha256) with another serial, expiry and signature must then not be served
 * as what the index lists.
 */
export function isManifestOf(entry: VersionEntry, manifest: ArtifactManifest): boolean {
  return entry.serial === manifest.serial && entry.sha256 === manifest.sha256
}

export function emptyIndex(name: string): ArtifactIndex {
  return { name, latestSerial: 0, versions: [], channels: {} }
}

/** A channel the manifest names whose head stayed where it was, on a higher version. */
export interface ChannelNotMoved {
  channel: string
  head: string
}

/** What a commit did to the channels: which of the manifest's channels kept their (higher) head. */
export interface Committed {
  channelsNotMoved: ChannelNotMoved[]
}

/**
 * A manifest the index refuses for good (version taken, serial not above the latest): retrying the same
 * manifest can never succeed, so its staged publish may be dropped.
 */
export class NotPublishable extends Problem {
  constructor(slug: 'conflict' | typeof SERIAL_OVERTAKEN, detail: string) {
    super(409, slug, detail)
  }
}

/**
 * The problem type of a serial another publish has reached first (another version committed since the
 * manifest was signed). Distinct from the plain `conflict` of a version already published: the first is
 * cured by signing the same version again with a higher serial (the CLI does, reusing what it uploaded),
 * the second never.
 */
export const SERIAL_OVERTAKEN = 'serial-overtaken'

/**
 * Makes a verified version visible: the manifest moves from pending to its final key (claimed by this
 * commit alone, see claimManifestKey), then the index gains the version and its channels. The index update is a compare-and-swap on the R2 etag so two
 * concurrent publishes cannot lose each other's entries or both claim the same serial. `holdsStaged`:
 * the caller holds the version's staged manifest for this commit (holdForCommit, pending-manifest.ts).
 */
export async function commitVersion(
  bucket: R2Bucket,
  manifest: ArtifactManifest,
  raw: string,
  now: number = Date.now(),
  holdsStaged = false,
): Promise<Committed> {
  const claimed = await claimManifestKey(bucket, manifest, raw, now, holdsStaged)
  let committed: Committed
  try {
    await assertStillClaimed(bucket, manifest, claimed)
    committed = await addToIndex(bucket, manifest)
  } catch (error) {
    await withdrawManifest(bucket, manifest, claimed)
    throw error
  }
  await unmarkCommitted(bucket, manifest, raw, claimed)
  return committed
}

/**
 * The index update goes ahead only while the final key still holds this commit's claim: a commit that
 * stalled past COMMIT_ABANDONED_AFTER_MS may have been taken over (another attempt claimed the key),
 * and listing its serial now would pair the index with the other attempt's manifest. R2 cannot make
 * the check and the index write one step; a stall between the two is repaired after the index update
 * (unmarkCommitted), and readers never serve a marked manifest the index entry was not made from.
 */
async function assertStillClaimed(bucket: R2Bucket, manifest: ArtifactManifest, claimed: string) {
  const current = await bucket.head(keys.manifest(manifest.name, manifest.version))
  if (current?.etag !== claimed) {
    throw new Problem(
      409,
      'conflict',
      `this commit of ${manifest.name}@${manifest.version} stalled and another publish attempt took the version over; nothing of it was committed`,
    )
  }
}

/**
 * Takes the commit marker off once the index lists the version, so reads of it need no index read.
 * Conditional on the key still holding what this commit wrote (a re-signing since has no marker anyway)
 * and best effort: a manifest left marked is still served, after an index read.
 *
 * When the key holds another attempt's marked manifest instead, that attempt took this (stalled) commit
 * over after assertStillClaimed and before the index update landed: the index now lists this commit's
 * manifest, so it is put back over the other's (whose own index update is refused: the version is
 * listed), conditionally on what was read. Until then readers serve nothing (isManifestOf).
 */
async function unmarkCommitted(
  bucket: R2Bucket,
  manifest: ArtifactManifest,
  raw: string,
  claimed: string,
): Promise<void> {
  const key = keys.manifest(manifest.name, manifest.version)
  const put = (onlyIf: R2Conditional) =>
    bucket.put(key, raw, { httpMetadata: { contentType: 'application/json' }, onlyIf })
  try {
    if (await put({ etagMatches: claimed })) return
    for (let attempt = 0; attempt < 4; attempt++) {
      const current = await bucket.get(key)
      // Ours (unmarked by now), or not a commit's claim (a re-signing): nothing to repair. An empty key
      // is the other attempt's claim withdrawn after its own index update failed: put back too.
      if (current && ((await current.text()) === raw || !markedCommitting(current.customMetadata))) return
      if (await put(current ? { etagMatches: current.etag } : { etagDoesNotMatch: '*' })) return
    }
  } catch {
    // Best effort; see above.
  }
}

/**
 * A final manifest key written this long ago by a commit that never reached the index belongs to an
 * attempt that died between its two writes (a commit takes milliseconds), and may be replaced.
 */
export const COMMIT_ABANDONED_AFTER_MS = 2 * 60 * 1000

/**
 * Writes the version's final manifest key for this commit, create-only, marked as committing (see
 * COMMIT_MARKER; the etag of what is there now is returned). Why not a plain put: two
 * attempts with the same bytes but different manifests (a re-signed publish taking over an abandoned
 * one) can both pass the blob check, and the one that commits second would overwrite the published
 * manifest with its own, so devices would be served a manifest (serial, expiry) the index does not
 * list. The key already holding this exact envelope is a retry; another envelope means the version
 * is published (409 for good), another commit is between its two writes (409, retry), or such a commit
 * died long ago (replaced, conditionally on its etag). A caller holding the staged manifest knows the
 * last: a commit keeps its staged manifest held to its end, and there is one staged manifest per
 * version, so another envelope's commit is over, and what it left (a refused commit whose withdrawal
 * met a storage fault) is replaced at once instead of holding the version for 2 minutes.
 */
async function claimManifestKey(
  bucket: R2Bucket,
  manifest: ArtifactManifest,
  raw: string,
  now: number,
  holdsStaged: boolean,
): Promise<string> {
  const { name, version } = manifest
  const key = keys.manifest(name, version)
  for (let attempt = 0; attempt < 4; attempt++) {
    const existing = await bucket.get(key)
    if (existing) {
      const text = await existing.text()
      if (text === raw) return existing.etag
      const current = await readIndex(bucket, name)
      assertPublishable(current?.index ?? emptyIndex(name), manifest)
      if (!holdsStaged && now - existing.uploaded.getTime() < COMMIT_ABANDONED_AFTER_MS) {
        throw new Problem(
          409,
          'conflict',
          `another publish of ${name}@${version} is committing a different manifest; retry in a moment`,
        )
      }
      await keepDisplacedClaim(bucket, name, version, text)
    }
    const written = await bucket.put(key, raw, {
      httpMetadata: { contentType: 'application/json' },
      customMetadata: COMMIT_MARKER,
      onlyIf: existing ? { etagMatches: existing.etag } : { etagDoesNotMatch: '*' },
    })
    if (written) return written.etag
  }
  throw new Problem(409, 'conflict', `the manifest of ${name}@${version} kept changing; retry the publish`)
}

/**
 * Keeps the claim this commit is about to replace (`keys.displacedClaim`, by the sha256 of the envelope)
 * before replacing it. The commit that wrote it may be stalled just past its claim check
 * (assertStillClaimed) and list its serial after all; should it die before putting its manifest back
 * (unmarkCommitted), the index would list a version whose envelope exists nowhere else (this commit also
 * replaced its staged manifest). The retention pass restores it from here (repairListedManifests). Not
 * kept, not replaced: a failure here fails this commit, which gives its hold back for a retry.
 */
async function keepDisplacedClaim(bucket: R2Bucket, name: string, version: string, raw: string) {
  const attempt = await sha256OfBytes(new TextEncoder().encode(raw))
  await bucket.put(keys.displacedClaim(name, version, attempt), raw, {
    httpMetadata: { contentType: 'application/json' },
  })
}

/**
 * The index update failed (storage fault, lost race, refused serial): the version's manifest must
 * not stay readable at its final key while the index does not list it, or a half-committed version
 * would be served. Withdrawn only after re-reading the index shows it really is absent (a put whose
 * response was lost may have landed); if even that read fails, the manifest stays and a retry of
 * the upload (the staged manifest is still there) completes the commit.
 */
async function withdrawManifest(
  bucket: R2Bucket,
  manifest: ArtifactManifest,
  claimed: string,
): Promise<void> {
  try {
    const current = await readIndex(bucket, manifest.name)
    if (current?.index.versions.some((v) => v.version === manifest.version)) return
    // Only this commit's claim: another attempt that took the version over is mid-commit with its own
    // manifest there, and deleting it would leave that commit's index entry without a manifest.
    const key = keys.manifest(manifest.name, manifest.version)
    if ((await bucket.head(key))?.etag !== claimed) return
    await bucket.delete(key)
  } catch {
    // Best effort; see above.
  }
}

async function addToIndex(bucket: R2Bucket, manifest: ArtifactManifest): Promise<Committed> {
  const { name, version } = manifest
  const committed = await changeIndex(bucket, name, (current) => {
    const index = current ?? emptyIndex(name)
    assertPublishable(index, manifest)
    const entry: VersionEntry = {
      version,
      serial: manifest.serial,
      size: manifest.size,
      sha256: manifest.sha256,
      createdAt: manifest.createdAt,
      channels: manifest.channels,
    }
    const { channels, channelsNotMoved } = mergeChannels(index.channels, manifest)
    const next: ArtifactIndex = {
      name,
      latestSerial: manifest.serial,
      versions: [...index.versions, entry],
      channels,
    }
    return { next, result: { channelsNotMoved } }
  })
  // Published from here on; a staged manifest left by a failed delete is invisible and harmless
  // (POST refuses a published version), so its cleanup must not turn success into an error.
  await bucket.delete(keys.pendingManifest(name, version)).catch(() => undefined)
  return committed
}

/**
 * Every change of an artifact's index: `change` builds the next index from the current one (null when
 * there is none yet; it may throw to refuse), written as a compare-and-swap on the R2 etag (create-only
 * without an index), and redone on the fresh index when another writer got there first. So concurrent
 * publishes and yanks never lose each other's entries or both claim the same serial.
 */
export async function changeIndex<T>(
  bucket: R2Bucket,
  name: string,
  change: (current: ArtifactIndex | null) => { next: ArtifactIndex; result: T },
): Promise<T> {
  for (let attempt = 0; attempt < 8; attempt++) {
    const current = await readIndex(bucket, name)
    const { next, result } = change(current?.index ?? null)
    const written = await bucket.put(keys.index(name), JSON.stringify(next), {
      httpMetadata: { contentType: 'application/json' },
      onlyIf: current ? { etagMatches: current.etag } : { etagDoesNotMatch: '*' },
    })
    if (written) return result
  }
  throw new Problem(409, 'conflict', `the index of ${name} kept changing; retry`)
}

/**
 * The channel heads after publishing `manifest`: a head only moves to a higher semver version. The
 * serial orders publishes, not releases, so letting the newest publish win would make publishing an
 * old version (a backport such as 4.17.15 after 4.17.21) move `stable` backwards, and devices would
 * follow it down on their next `update` with a perfectly valid, higher serial. An older version is
 * still published and installable by version; the channels it did not move are reported back.
 */
export function mergeChannels(
  heads: ArtifactIndex['channels'],
  manifest: ArtifactManifest,
): { channels: ArtifactIndex['channels']; channelsNotMoved: ChannelNotMoved[] } {
  const channels = { ...heads }
  const channelsNotMoved: ChannelNotMoved[] = []
  for (const channel of manifest.channels) {
    const head = Object.hasOwn(heads, channel) ? heads[channel] : undefined
    if (head === undefined || semverGreater(manifest.version, head)) channels[channel] = manifest.version
    else channelsNotMoved.push({ channel, head })
  }
  return { channels, channelsNotMoved }
}

/** Rules a new manifest must satisfy against what is already published. */
export function assertPublishable(index: ArtifactIndex, manifest: ArtifactManifest): void {
  if (index.versions.some((v) => v.version === manifest.version)) {
    throw new NotPublishable(
      'conflict',
      `${manifest.name}@${manifest.version} is already published; versions are immutable`,
    )
  }
  if (manifest.serial <= index.latestSerial) {
    throw new NotPublishable(
      SERIAL_OVERTAKEN,
      `serial ${manifest.serial} is not above the latest published serial ${index.latestSerial}: ` +
        `sign the manifest again with serial ${index.latestSerial + 1} or higher`,
    )
  }
  if (manifest.serial > index.latestSerial + MAX_SERIAL_STEP) {
    throw new Problem(
      422,
      'unprocessable',
      `serial ${manifest.serial} is more than 2^32 above the latest published serial ${index.latestSerial}; ` +
        'a jump that large would let the serial run out (publish with the next serial, as the CLI does)',
    )
  }
}

/**
 * How long a client is asked to wait for a listed version whose manifest is not servable. The edge cannot
 * tell cheaply whether the commit is alive: one still alive puts its manifest back within milliseconds
 * (unmarkCommitted), which the agent's in-place retries of a 503 cover; one that died is restored in the
 * background by the first 503 once the commit is COMMIT_ABANDONED_AFTER_MS dead (repair-on-read.ts), or
 * by the retention pass, which the agent's daemon reaches by polling again at its own interval.
 */
const MANIFEST_REPAIR_RETRY_AFTER_SECONDS = 2

/**
 * The 503 of a listed version whose manifest is not servable. Its own class so that the app's error
 * handler, which answers it, also starts the repair of that one version in the background
 * (workers/storage/repair-on-read.ts), rather than leaving it to the next retention pass.
 */
export class ManifestBeingRepaired extends Problem {
  readonly artifact: string
  readonly version: string

  constructor(name: string, version: string) {
    super(
      503,
      'manifest-being-repaired',
      `${name}@${version} is listed but its manifest is not servable yet (a publish of it was cut off mid-commit and is being restored); retry later`,
      { headers: { 'retry-after': String(MANIFEST_REPAIR_RETRY_AFTER_SECONDS) } },
    )
    this.artifact = name
    this.version = version
  }
}

/**
 * The committed manifest of a version, or a problem: 404 when the index does not list it (nothing of an
 * unpublished version is served), 503 `manifest-being-repaired` + Retry-After when it does but the
 * manifest is not servable (a commit that died in the two-fault case of ADR 0022, restored in the
 * background by the request that answers it, or by retention): a client that read the index and then
 * met a 404 would take it for a permanent error.
 */
export async function requirePublished(bucket: R2Bucket, name: string, version: string) {
  const found = await findPublished(bucket, name, version, true)
  if (found === LISTED) throw new ManifestBeingRepaired(name, version)
  if (!found) throw new Problem(404, 'not-found', `${name}@${version} is not published`)
  return found
}
