import { base64Bytes } from '../../schemas/base64.ts'
import { unusablePublicKeyProblem } from '../../schemas/ed25519-public-key.ts'
import { type Envelope, keyIdOf, type TrustedKey, verifyEnvelope } from '../../schemas/signed-envelope.ts'
import { Problem } from '../http/problem.ts'

/** More keys than any maintainer team pins; a longer value is a configuration mistake. */
const MAX_MAINTAINER_KEYS = 16

/**
 * The keys of MAINTAINER_KEYS: Ed25519 public keys, base64 of the raw 32 bytes (what `deltaport
 * keygen` prints as publicKey), separated by whitespace; keyids are derived as devices derive them.
 * null when the value is blank: the edge then stores what maintainers sign without checking it, as
 * before ADR 0031. A malformed value is the operator's mistake: 500, so no publish slips through
 * unchecked because of a typo.
 */
export async function maintainerKeys(configured: string | undefined): Promise<TrustedKey[] | null> {
  const entries = (configured ?? '').split(/\s+/).filter((entry) => entry.length > 0)
  if (entries.length === 0) return null
  if (entries.length > MAX_MAINTAINER_KEYS)
    throw new Problem(500, 'internal', `MAINTAINER_KEYS holds more than ${MAX_MAINTAINER_KEYS} keys`)
  return Promise.all(
    entries.map(async (publicKey, i) => {
      const raw = base64Bytes(publicKey)
      const problem = raw ? unusablePublicKeyProblem(raw) : 'is not base64'
      if (!raw || problem) throw new Problem(500, 'internal', `MAINTAINER_KEYS entry ${i + 1} ${problem}`)
      return { keyid: await keyIdOf(raw), publicKey }
    }),
  )
}

/**
 * Refuses (422 `untrusted-signature`) a manifest or statement that no key of MAINTAINER_KEYS signed.
 * Devices check signatures whatever the edge does; this check is what keeps a stolen PUBLISH_TOKEN
 * alone from committing a bogus manifest (a huge serial that blocks every later publish), shortening
 * expiries by re-signing, or storing forged yank statements.
 */
export async function assertMaintainerSigned(
  env: Pick<Env, 'MAINTAINER_KEYS'>,
  envelope: Envelope<unknown>,
  what: string,
): Promise<void> {
  const trusted = await maintainerKeys(env.MAINTAINER_KEYS)
  if (trusted === null || (await verifyEnvelope(envelope, trusted))) return
  throw new Problem(
    422,
    'untrusted-signature',
    `${what} carries no valid signature by a key in this edge's MAINTAINER_KEYS`,
  )
}
