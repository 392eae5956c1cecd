import { Problem, rateLimited } from './problem.ts'
import { TRANSIENT_RETRY_AFTER_SECONDS } from './transient.ts'

/**
 * Bounds guesses of PUBLISH_TOKEN per client address without slowing real publishes.
 *
 * A maintainer's publish is many authenticated requests (one per multipart part, delta and rollout
 * call), so counting every presentation — as the operator login does — would throttle large uploads.
 * Only wrong tokens count (MAINTAINER_AUTH_FAILURE_LIMITER, per Cloudflare location). But a limiter
 * consulted only on failure would still answer every guess: a spent address would see 429 for a wrong
 * token and 200 for the right one. So when the count is spent the address is locked out in KV for a
 * minute, and the lockout is checked before any token is compared: right or wrong, the answer is 429.
 *
 * Cloudflare sets cf-connecting-ip on every request; without it (local runs only) nothing is counted.
 */

export const LOCKOUT_SECONDS = 60
const KEY_PREFIX = 'maintainer-auth/'

interface LockoutBindings {
  AUTH_LOCKOUTS: KVNamespace
  MAINTAINER_AUTH_FAILURE_LIMITER: RateLimit
}

function lockedOut(): Error {
  return rateLimited(
    `too many wrong maintainer tokens from this address; retry in ${LOCKOUT_SECONDS} seconds`,
    LOCKOUT_SECONDS,
  )
}

/**
 * Throws the 429 problem when the address is locked out; called before comparing any token. When the
 * lockout store cannot be read (a KV outage) nobody can tell whether the address is locked out: a 503
 * to retry, since comparing the token anyway would hand guessers a way around the lockout.
 */
export async function refuseLockedOut(env: LockoutBindings, address: string | undefined): Promise<void> {
  if (address === undefined) return
  let held: string | null
  try {
    held = await env.AUTH_LOCKOUTS.get(KEY_PREFIX + address)
  } catch (error) {
    console.log(JSON.stringify({ level: 'warn', msg: 'lockout store unreadable', error: String(error) }))
    throw new Problem(503, 'unavailable', 'a backing service is temporarily unavailable; retry shortly', {
      headers: { 'retry-after': String(TRANSIENT_RETRY_AFTER_SECONDS) },
    })
  }
  if (held !== null) throw lockedOut()
}

/**
 * Counts a wrong token. Once the address has spent its failures, it is locked out (KV's shortest
 * expiry is 60 s, which is the lockout) and this request already answers 429.
 */
export async function countWrongToken(env: LockoutBindings, address: string | undefined): Promise<void> {
  if (address === undefined) return
  const { success } = await env.MAINTAINER_AUTH_FAILURE_LIMITER.limit({ key: address })
  if (success) return
  // The limiter has spoken: this answer is a 429 even if the lockout cannot be stored this time.
  await env.AUTH_LOCKOUTS.put(KEY_PREFIX + address, String(Date.now()), {
    expirationTtl: LOCKOUT_SECONDS,
  }).catch((error: unknown) =>
    console.log(JSON.stringify({ level: 'warn', msg: 'lockout not stored', error: String(error) })),
  )
  throw lockedOut()
}
