import { base64Bytes } from '../../schemas/base64.ts'
import { unusablePublicKeyProblem } from '../../schemas/ed25519-public-key.ts'
import { roleKeys, roleThreshold, rootDigest } from '../../schemas/root-chain.ts'
import { type Envelope, keyIdOf, meetsThreshold, type TrustedKey } from '../../schemas/signed-envelope.ts'
import { Problem } from '../http/problem.ts'
import { readLatestRoot, readRoot } from '../storage/roots.ts'

/** More keys than any maintainer team pins; a longer value is a configuration mistake. */
const MAX_MAINTAINER_KEYS = 16

/** `root:<sha256 of root 1's statement>`: take the maintainers from the chain of roots that starts there. */
const ROOT_PIN = /^root:([0-9a-f]{64})$/

/**
 * What MAINTAINER_KEYS asks of the edge (ADR 0031, 0036): nothing (blank), a fixed list of keys of which
 * any one must sign, or a pinned first root whose chain (as stored by `PUT /v1/roots`) says which keys
 * and how many. A malformed value is the operator's mistake: 500, so no publish slips through unchecked
 * because of a typo.
 */
export type MaintainerSetting = null | { keys: TrustedKey[] } | { rootDigest: string }

export async function maintainerSetting(configured: string | undefined): Promise<MaintainerSetting> {
  const entries = (configured ?? '').split(/\s+/).filter((entry) => entry.length > 0)
  const [first] = entries
  if (first === undefined) return null
  const pin = ROOT_PIN.exec(first)
  if (pin?.[1] && entries.length === 1) return { rootDigest: pin[1] }
  return { keys: await maintainerKeys(entries) }
}

/**
 * The keys of a MAINTAINER_KEYS list: Ed25519 public keys, base64 of the raw 32 bytes (what `deltaport
 * keygen` prints as publicKey), separated by whitespace; keyids are derived as devices derive them.
 */
async function maintainerKeys(entries: readonly string[]): Promise<TrustedKey[]> {
  if (entries.length > MAX_MAINTAINER_KEYS)
    throw new Problem(500, 'internal', `MAINTAINER_KEYS holds more than ${MAX_MAINTAINER_KEYS} keys`)
  return Promise.all(
    entries.map(async (publicKey, i) => {
      const raw = base64Bytes(publicKey)
      const problem = raw ? unusablePublicKeyProblem(raw) : 'is not base64'
      if (!raw || problem)
        throw new Problem(
          500,
          'internal',
          `MAINTAINER_KEYS entry ${i + 1} ${problem} (expected public keys, or one root:<digest>)`,
        )
      return { keyid: await keyIdOf(raw), publicKey }
    }),
  )
}

/** Whose signatures a maintainer document needs: the keys, how many of them, and where they come from. */
interface MaintainerTrust {
  keys: TrustedKey[]
  threshold: number
  source: string
}

/**
 * The trust a pinned root gives: the maintainers role of the newest stored root, provided the stored
 * root 1 is the pinned one. Every later root was stored only after it verified against the one before
 * (publish/roots.ts), so the chain needs no second check here. No root yet, or a newest root past its
 * expiry (devices would refuse everything under it), refuses the publish with what to do.
 */
async function pinnedRootTrust(bucket: R2Bucket, digest: string, now: Date): Promise<MaintainerTrust> {
  const newest = await readLatestRoot(bucket)
  if (!newest)
    throw new Problem(
      409,
      'conflict',
      'MAINTAINER_KEYS pins a root, but no root is published on this edge: publish it first (deltaport root publish)',
    )
  const { signed } = newest.envelope
  const latest = signed.version
  // Stored roots are exactly 1..latest and never deleted, so root 1 is there.
  const first = latest === 1 ? newest : await readRoot(bucket, 1)
  if (!first || (await rootDigest(first.envelope.signed)) !== digest)
    throw new Problem(500, 'internal', 'the stored root 1 is not the root MAINTAINER_KEYS pins')
  if (Date.parse(signed.expires) <= now.getTime())
    throw new Problem(
      422,
      'untrusted-root',
      `root ${latest} expired at ${signed.expires} and devices refuse what it vouches for: publish root ${latest + 1} first`,
    )
  return {
    keys: roleKeys(signed, 'maintainers'),
    threshold: roleThreshold(signed, 'maintainers'),
    source: `the maintainers of root ${latest}`,
  }
}

/**
 * Refuses (422 `untrusted-signature`) a manifest or statement that the maintainers did not sign (one key
 * of a MAINTAINER_KEYS list, or the threshold of the newest root's maintainers when it pins a root).
 * Devices check signatures whatever the edge does; this check is what keeps a stolen PUBLISH_TOKEN
 * alone from committing a bogus manifest (a huge serial that blocks every later publish), shortening
 * expiries by re-signing, or storing forged yank statements. Under a pinned root, a key the maintainers
 * revoked by publishing a root is refused here from that moment, as on devices, with no secret to edit.
 */
export async function assertMaintainerSigned(
  env: Pick<Env, 'MAINTAINER_KEYS' | 'ARTIFACTS'>,
  envelope: Envelope<unknown>,
  what: string,
  now = new Date(),
): Promise<void> {
  const setting = await maintainerSetting(env.MAINTAINER_KEYS)
  if (setting === null) return
  const trust =
    'keys' in setting
      ? { keys: setting.keys, threshold: 1, source: "a key in this edge's MAINTAINER_KEYS" }
      : await pinnedRootTrust(env.ARTIFACTS, setting.rootDigest, now)
  if (await meetsThreshold(envelope, trust.keys, trust.threshold)) return
  const needed =
    trust.threshold === 1 ? 'no valid signature by' : `fewer than ${trust.threshold} valid signatures by`
  throw new Problem(422, 'untrusted-signature', `${what} carries ${needed} ${trust.source}`)
}
