import type { ArtifactManifest, SignedManifest } from '../schemas/manifest.ts'
import { verifyEnvelope } from '../schemas/signed-envelope.ts'
import { AgentError } from './errors.ts'

export interface TrustPolicy {
  trustedKeys: ReadonlyArray<{ keyid: string; publicKey: string }>
  /** Highest serial this device has accepted for the artifact; 0 if none. */
  lastSerial: number
  now: Date
  /** The user pinned an older version on purpose: skip only the rollback check. */
  allowDowngrade?: boolean
}

/**
 * TUF's client checks for one manifest: signed by a pinned key (arbitrary software), not expired
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
  if (!(await verifyEnvelope(envelope, policy.trustedKeys))) {
    throw new AgentError(
      'untrusted-manifest',
      `${manifest.name}@${manifest.version}: no valid signature by a trusted key`,
    )
  }
  if (manifest.name !== expected.name || (expected.version && manifest.version !== expected.version)) {
    throw new AgentError(
      'untrusted-manifest',
      `asked for ${expected.name}@${expected.version ?? '*'} but the manifest describes ${manifest.name}@${manifest.version}`,
    )
  }
  if (Date.parse(manifest.expires) <= policy.now.getTime()) {
    throw new AgentError(
      'untrusted-manifest',
      `${manifest.name}@${manifest.version}: manifest expired at ${manifest.expires}`,
    )
  }
  if (manifest.serial < policy.lastSerial && !policy.allowDowngrade) {
    throw new AgentError(
      'untrusted-manifest',
      `${manifest.name}@${manifest.version}: serial ${manifest.serial} is below the last seen ${policy.lastSerial} (rollback refused)`,
    )
  }
  return manifest
}
