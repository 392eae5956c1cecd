import { createHash } from 'node:crypto'
import type { ArtifactManifest, SignedManifest } from '../schemas/manifest.ts'
import { meetsThreshold, type TrustedKey } from '../schemas/signed-envelope.ts'
import { AgentError } from './errors.ts'

/** The keys and threshold manifests are checked against: the config's, or the newest root's (ADR 0035). */
export interface MaintainerTrust {
  trustedKeys: readonly TrustedKey[]
  maintainerThreshold?: number | undefined
}

/**
 * A digest of everything a signature check depends on (each key's id and public half, the threshold):
 * equal fingerprints accept exactly the same documents. Stored with a serial high-water mark, it says
 * which keys raised that mark, so a rotation can tell a floor the new keys never vouched for (ADR 0037).
 */
export function trustFingerprint(keys: readonly TrustedKey[], threshold: number): string {
  const named = [...new Set(keys.map((k) => `${k.keyid}:${k.publicKey}`))].sort()
  return createHash('sha256')
    .update(JSON.stringify({ keys: named, threshold }))
    .digest('hex')
}

export const maintainerFingerprint = (trust: MaintainerTrust): string =>
  trustFingerprint(trust.trustedKeys, trust.maintainerThreshold ?? 1)

export interface TrustPolicy {
  trustedKeys: ReadonlyArray<{ keyid: string; publicKey: string }>
  /** Distinct trusted keys whose signatures a manifest needs (config maintainerThreshold; default 1). */
  threshold?: number | undefined
  /** Highest serial this device has accepted for the artifact; 0 if none. */
  lastSerial: number
  now: Date
  /** The user pinned an older version on purpose: skip only the rollback check. */
  allowDowngrade?: boolean
  /**
   * Skip only the expiry check: for the intermediate versions of a delta chain, whose bytes only feed the
   * next delta and whose output is checked against the target's own unexpired manifest. An old release's
   * manifest expires (90 days by default); a freeze attack needs the target's, which is still checked.
   */
  ignoreExpiry?: boolean
}

/**
 * TUF's client checks for one manifest: signed by enough pinned keys (arbitrary software), not expired
 * (freeze), serial not below what we have seen (rollback), and describing what we asked for
 * (mix-and-match). Returns the manifest only when all hold.
 */
export async function verifyManifest(
  envelope: SignedManifest,
  expected: { name: string; version?: string },
  policy: TrustPolicy,
): Promise<ArtifactManifest> {
  const manifest = envelope.signed
  if (policy.trustedKeys.length === 0) {
    throw new AgentError('config', 'no trusted keys are configured; add the maintainer key to trustedKeys')
  }
  const threshold = policy.threshold ?? 1
  if (!(await meetsThreshold(envelope, policy.trustedKeys, threshold))) {
    // Name the signers the device does not know: a key missing from the config (or revoked by a root)
    // is the usual cause, and the keyid is what to compare with `deltaport keygen`'s output.
    const strangers = [...new Set(envelope.signatures.map((s) => s.keyid))].filter(
      (id) => !policy.trustedKeys.some((k) => k.keyid === id),
    )
    const by =
      strangers.length > 0
        ? `; it is signed by ${strangers.join(', ')}, which this device does not trust (not in its trustedKeys, or not a maintainer of its newest root)`
        : ''
    throw new AgentError(
      'untrusted-manifest',
      `${manifest.name}@${manifest.version}: ${signatureShortfall(threshold)}${by}`,
    )
  }
  if (manifest.name !== expected.name || (expected.version && manifest.version !== expected.version)) {
    throw new AgentError(
      'untrusted-manifest',
      `asked for ${expected.name}@${expected.version ?? '*'} but the manifest describes ${manifest.name}@${manifest.version}`,
    )
  }
  if (!policy.ignoreExpiry && Date.parse(manifest.expires) <= policy.now.getTime()) {
    throw new AgentError(
      'untrusted-manifest',
      `${manifest.name}@${manifest.version}: manifest expired at ${manifest.expires}`,
    )
  }
  if (manifest.serial < policy.lastSerial && !policy.allowDowngrade) {
    throw new AgentError(
      'untrusted-manifest',
      // `deltaport rollback` never gets here (it switches to a version kept on disk); the way to go
      // back to an older release on purpose is a pinned install, so the refusal names it.
      `${manifest.name}@${manifest.version}: serial ${manifest.serial} is below the last seen ${policy.lastSerial} (rollback refused); to install this older release on purpose: \`deltaport install ${manifest.name}@${manifest.version} --allow-downgrade\``,
    )
  }
  return manifest
}

/**
 * Whether `envelope` meets every one of `trusts` (keys and threshold); when not, the keyids of its
 * signatures none of them names (keys revoked by a root or dropped from the config since it was signed).
 */
export async function distrustedSigners(
  envelope: SignedManifest,
  trusts: readonly MaintainerTrust[],
): Promise<{ met: true } | { met: false; threshold: number; untrusted: string[] }> {
  for (const trust of trusts) {
    const threshold = trust.maintainerThreshold ?? 1
    if (await meetsThreshold(envelope, trust.trustedKeys, threshold)) continue
    const known = new Set(trust.trustedKeys.map((k) => k.keyid))
    const untrusted = [...new Set(envelope.signatures.map((s) => s.keyid))].filter((id) => !known.has(id))
    return { met: false, threshold, untrusted }
  }
  return { met: true }
}

/** What a document lacks when it falls short of `threshold` signatures (manifests, yank statements). */
export function signatureShortfall(threshold: number): string {
  return threshold === 1
    ? 'no valid signature by a trusted key'
    : `fewer than ${threshold} valid signatures by distinct trusted keys`
}

/**
 * What devices will ask of a document a maintainer signs now: `threshold` distinct signatures and, under
 * a root, by keys that root names as maintainers (`rootMaintainers`; null without a root, where a
 * maintainer's config need not list every key devices trust).
 */
export interface SignerPolicy {
  threshold: number
  rootMaintainers: readonly TrustedKey[] | null
  /** The root the maintainers come from, for the message. */
  rootVersion?: number
}

/** The policy of a config after following its root (root-trust.ts's refresh result). */
export function signerPolicyOf(refreshed: {
  config: MaintainerTrust
  root: { version: number } | null
}): SignerPolicy {
  const threshold = refreshed.config.maintainerThreshold ?? 1
  return refreshed.root
    ? { threshold, rootMaintainers: refreshed.config.trustedKeys, rootVersion: refreshed.root.version }
    : { threshold, rootMaintainers: null }
}

/**
 * Refuses, before anything is signed or sent, keys that cannot make a document devices accept:
 * publishing with them burns a version number (write-once) on a release no device installs, and
 * re-signing replaces good signatures with too few. `consequence` says which, for the message.
 */
export function assertSignersSuffice(
  keys: ReadonlyArray<{ keyid: string }>,
  policy: SignerPolicy,
  consequence: string,
): void {
  const given = [...new Set(keys.map((k) => k.keyid))]
  const named = policy.rootMaintainers
  const counted = named ? given.filter((id) => named.some((k) => k.keyid === id)) : given
  if (counted.length >= policy.threshold) return
  const strangers = given.filter((id) => !counted.includes(id))
  const which = named ? ` the root${policy.rootVersion ? ` (${policy.rootVersion})` : ''} names` : ''
  const gave =
    strangers.length === 0
      ? `${given.length} ${given.length === 1 ? 'key was' : 'keys were'} given`
      : `${counted.length} of the ${given.length} keys given ${counted.length === 1 ? 'is' : 'are'} one (not a maintainer there: ${strangers.map((id) => id.slice(0, 12)).join(', ')})`
  throw new AgentError(
    'config',
    `devices need ${policy.threshold} ${policy.threshold === 1 ? 'signature' : 'signatures'} by distinct maintainer keys${which} and ${gave}: ${consequence}; pass --key once per key`,
  )
}
