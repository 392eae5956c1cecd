import { ManifestResigned } from '../schemas/resign.ts'
import { meetsThreshold } from '../schemas/signed-envelope.ts'
import { EdgeClient } from './edge-client.ts'
import { AgentError } from './errors.ts'
import { type KeyFiles, readKeyFiles } from './publish.ts'
import { signManifest } from './signing.ts'
import { errorFromResponse } from './transfer/error-response.ts'
import { JSON_LIMITS } from './transfer/read-json.ts'
import { assertSignersSuffice, type SignerPolicy, signatureShortfall } from './trust.ts'

/**
 * What a maintainer does when a version's signers are no longer trusted (a key rotated out, a root that
 * revoked it): vouch for those keys on purpose, never by default.
 */
const VOUCH_HINT =
  'if they are maintainer keys since revoked or dropped and these bytes are good, re-sign with a config that lists them in trustedKeys (and names no root)'

export interface ResignRequest {
  edgeUrl: string
  token: string
  keyFile: KeyFiles
  name: string
  /** One version; without it, every published version whose manifest expires within `withinDays`. */
  version?: string
  withinDays: number
  expiresInDays: number
  /** Keys (besides the signing key) whose signatures make a published manifest worth re-signing. */
  trustedKeys: ReadonlyArray<{ keyid: string; publicKey: string }>
  /**
   * What devices need (maintainerThreshold, or the root's keys and threshold; default one signature): a
   * published manifest is re-signed only if it meets the threshold, and only by keys that meet it.
   */
  signers?: SignerPolicy
  now?: Date
  fetchImpl?: typeof fetch
}

/**
 * Re-signs published manifests with a later expiry, so versions stay installable without a new release.
 * What the edge serves is verified first, as devices verify it (the signing keys or keys the config or its
 * root trusts, up to the maintainers' threshold): the edge is
 * not trusted with integrity, and re-signing whatever it sends would let a tampered manifest acquire a
 * fresh, valid signature. The edge in turn refuses a change to anything but `expires`.
 *
 * One version is re-signed as asked. The batch form (no version, run from cron) re-signs each version
 * expiring within `withinDays` whose expiry the new one extends (never shortening one that already
 * outlives it), and a version it may not vouch for does not stop the others: it is left as it is and
 * named in the untrusted-manifest error raised once the others are done, so the job still fails.
 */
export async function resignManifests(request: ResignRequest): Promise<ManifestResigned[]> {
  const edge = new EdgeClient(request.edgeUrl, request.fetchImpl)
  const keys = await readKeyFiles(request.keyFile)
  const now = request.now ?? new Date()
  // Under a root, only its maintainers vouch (a key of this maintainer's that it does not name neither).
  const trusted = request.signers?.rootMaintainers ?? [
    ...keys.map(({ keyid, publicKey }) => ({ keyid, publicKey })),
    ...request.trustedKeys,
  ]
  const threshold = request.signers?.threshold ?? 1
  // The new signatures replace the old ones (they sign another `expires`).
  if (request.signers)
    assertSignersSuffice(keys, request.signers, 'a manifest re-signed by fewer would no longer install')
  const versions = request.version
    ? [request.version]
    : (await edge.index(request.name)).versions.map((v) => v.version)
  const horizon = now.getTime() + request.withinDays * 86_400_000
  const expires = new Date(now.getTime() + request.expiresInDays * 86_400_000).toISOString()
  const done: ManifestResigned[] = []
  const refused: string[] = []
  for (const version of versions) {
    const published = await edge.manifest(request.name, version)
    // Bound to what was asked, before anything else is read of it: an edge answering with another
    // version's (or artifact's) genuine manifest would otherwise get that one re-signed with a fresh
    // expiry (an expired, superseded release made installable again), PUT or not.
    if (published.signed.name !== request.name || published.signed.version !== version)
      throw new AgentError(
        'untrusted-manifest',
        `asked the edge for the manifest of ${request.name}@${version} but it describes ${published.signed.name}@${published.signed.version}; refusing to re-sign it`,
      )
    const current = Date.parse(published.signed.expires)
    if (!request.version && (current > horizon || current >= Date.parse(expires))) continue
    if (!(await meetsThreshold(published, trusted, threshold))) {
      if (!request.version) {
        refused.push(version)
        continue
      }
      const signers = published.signatures.map((s) => s.keyid).join(', ')
      throw new AgentError(
        'untrusted-manifest',
        `${request.name}@${version} as the edge serves it has ${signatureShortfall(threshold)} (counting these keys); refusing to re-sign it. It names the signers ${signers}: ${VOUCH_HINT}`,
      )
    }
    const envelope = await signManifest({ ...published.signed, expires }, keys)
    const response = await edge.request(
      `/v1/publish/${encodeURIComponent(request.name)}/${version}/manifest`,
      {
        method: 'PUT',
        headers: { authorization: `Bearer ${request.token}`, 'content-type': 'application/json' },
        body: JSON.stringify(envelope),
      },
    )
    if (response.status !== 200)
      throw await errorFromResponse(response, `re-signing ${request.name}@${version}`)
    done.push(
      await edge.readParsed(
        response,
        ManifestResigned,
        JSON_LIMITS.maintainer,
        `the answer to re-signing ${request.name}@${version}`,
      ),
    )
  }
  if (refused.length > 0) {
    const names = refused.map((v) => `${request.name}@${v}`).join(', ')
    const others = done.map((r) => r.version).join(', ')
    throw new AgentError(
      'untrusted-manifest',
      `not re-signed, as the edge serves them with ${signatureShortfall(threshold)} (counting these keys): ${names} (re-signed ${done.length} other manifest(s)${others ? `: ${others}` : ''}); ${VOUCH_HINT}`,
      { refused, resigned: done },
    )
  }
  return done
}
