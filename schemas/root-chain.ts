import { base64Bytes } from './base64.ts'
import type { RootStatement, SignedRoot } from './root.ts'
import { canonicalJson, keyIdOf, meetsThreshold, sha256Hex, type TrustedKey } from './signed-envelope.ts'

/**
 * The rules of the root chain (ADR 0035, TUF's client workflow §5.3), shared by the edge (which
 * refuses to store a root that breaks them) and the agent (which refuses to follow one).
 */

export type RootRoleName = keyof RootStatement['roles']

/**
 * A root statement's digest: sha256 (hex) of its canonical JSON, signatures left out (co-signing does
 * not change it). The edge pins a first root by it (`MAINTAINER_KEYS=root:<digest>`, ADR 0035).
 */
export function rootDigest(root: RootStatement): Promise<string> {
  return sha256Hex(new TextEncoder().encode(canonicalJson(root)))
}

/** The keys of one role of a root, in the form envelope checks take. */
export function roleKeys(root: RootStatement, role: RootRoleName): TrustedKey[] {
  const keyids = root.roles[role]?.keyids ?? []
  return keyids.map((keyid) => ({ keyid, publicKey: root.keys[keyid]?.publicKey ?? '' }))
}

/** How many distinct keys of `role` must sign (the index role signs alone). */
export function roleThreshold(root: RootStatement, role: RootRoleName): number {
  const r = root.roles[role]
  return r && 'threshold' in r ? r.threshold : 1
}

/** Whether `envelope` carries valid signatures by `threshold` distinct keys of `signer`'s `role`. */
export function signedByRole(
  envelope: SignedRoot | { signed: unknown; signatures: SignedRoot['signatures'] },
  signer: RootStatement,
  role: RootRoleName,
): Promise<boolean> {
  return meetsThreshold(envelope, roleKeys(signer, role), roleThreshold(signer, role))
}

/**
 * Why `root` cannot stand on its own (a first root, or the one a device ships with), or null: every
 * keyid must be its key's sha256, and the root must carry its own root role's threshold of signatures.
 */
export async function selfSignedProblem(root: SignedRoot): Promise<string | null> {
  const keyProblem = await keyIdProblem(root.signed)
  if (keyProblem) return keyProblem
  if (!(await signedByRole(root, root.signed, 'root'))) {
    return `root ${root.signed.version} lacks ${roleThreshold(root.signed, 'root')} valid signature(s) by its own root keys`
  }
  return null
}

/**
 * Why `next` may not follow `current`, or null. A root is followed only by the root one version up,
 * signed by the threshold of the current root's root keys (so only their holders can change trust)
 * and by the threshold of its own (so a new key set is proven to be held before devices rely on it).
 */
export async function nextRootProblem(current: RootStatement, next: SignedRoot): Promise<string | null> {
  if (next.signed.version !== current.version + 1) {
    return `expected root ${current.version + 1}, got root ${next.signed.version}`
  }
  if (!(await signedByRole(next, current, 'root'))) {
    return `root ${next.signed.version} lacks ${roleThreshold(current, 'root')} valid signature(s) by the root keys of root ${current.version}`
  }
  return selfSignedProblem(next)
}

async function keyIdProblem(root: RootStatement): Promise<string | null> {
  for (const [keyid, { publicKey }] of Object.entries(root.keys)) {
    const raw = base64Bytes(publicKey)
    if (!raw || (await keyIdOf(raw)) !== keyid)
      return `root ${root.version} lists key ${keyid} under another key's id`
  }
  return null
}
