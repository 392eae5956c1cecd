/**
 * Freeze defence (ADR 0032; rollout answers ADR 0034): an agent configured with `indexKeys` uses an
 * artifact index, a rollout answer or a prefetch queue (ADR 0034, amended) only when the
 * edge's signed statement covers it exactly and is still fresh. Without one, whatever stands between
 * the edge and the device (a cache, a mirror, a replay of yesterday's answer) could hold the device on
 * an old channel head for as long as that head's manifest is unexpired; with one, for at most the
 * statement's lifetime, and never below a serial the device has already installed or seen signed.
 */
import type { ArtifactIndex } from '../schemas/artifact-index.ts'
import { digestWithoutStatement, indexDigest, ServedIndex } from '../schemas/index-statement.ts'
import { type PrefetchQueue, ServedPrefetchQueue } from '../schemas/prefetch.ts'
import type { RolloutCheck } from '../schemas/rollout.ts'
import { ServedRolloutCheck } from '../schemas/rollout-statement.ts'
import { type Envelope, type TrustedKey, verifyEnvelope } from '../schemas/signed-envelope.ts'
import { AgentError } from './errors.ts'

export interface IndexTrust {
  /** The edge's index-signing keys (config `indexKeys`); none means indexes are taken unsigned. */
  keys: readonly TrustedKey[]
  now: () => Date
  /**
   * What this device already has of an artifact (its store; 0s when none): the highest serial it
   * installed, and the highest `latestSerial` of an index it verified.
   */
  serials: (name: string) => Promise<{ installed: number; seen: number }>
  /** Records a verified index's serial above `seen` (a no-op for an artifact with no store yet). */
  sawIndex: (name: string, serial: number) => Promise<void>
}

/**
 * How far a statement's issuedAt may lie ahead of this device's clock. Edge and device clocks disagree
 * a little; a statement from much further ahead says the device's clock is wrong (a board that booted
 * at 1970 would otherwise take any old statement as fresh), so it is refused and the error says so.
 */
export const MAX_CLOCK_AHEAD_MS = 60 * 60 * 1000

/**
 * How deeply an answer's JSON may nest. The statement's digest covers the answer as sent, fields no
 * schema reads included, and hashing walks it recursively: a replayed genuine statement beside a field
 * nested 100 000 deep (a few hundred kilobytes, under every size cap) would overflow the stack there,
 * an untyped crash instead of a refusal. Real answers nest about six levels.
 */
export const MAX_ANSWER_DEPTH = 32

/** Whether `value` holds objects or arrays more than `limit` levels deep; iterative, so any depth is safe. */
function nestedDeeperThan(value: unknown, limit: number): boolean {
  const pending: Array<{ item: unknown; depth: number }> = [{ item: value, depth: 0 }]
  for (let next = pending.pop(); next; next = pending.pop()) {
    if (next.item === null || typeof next.item !== 'object') continue
    if (next.depth >= limit) return true
    for (const child of Object.values(next.item)) pending.push({ item: child, depth: next.depth + 1 })
  }
  return false
}

/** The answer in `json` as a record to hash, refused (`refuse`) when it is none or nests too deeply. */
function answerRecord(json: unknown, refuse: (why: string) => AgentError): Record<string, unknown> {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw refuse('is malformed')
  if (nestedDeeperThan(json, MAX_ANSWER_DEPTH))
    throw refuse(`is malformed: nested deeper than ${MAX_ANSWER_DEPTH} levels`)
  return json as Record<string, unknown>
}

/**
 * The index in `json` (an answer to GET /v1/artifacts/:name), checked against `trust`: a statement for
 * `name`, signed by one of the keys, not expired, not issued in the future, whose digest is this
 * index's and whose serial is not below the highest this device installed or saw in a verified index
 * (TUF's rule: trusted metadata never goes back a version). Throws `untrusted-index` naming what
 * failed; returns the index without its statement, after recording its serial as seen.
 */
export async function verifyServedIndex(
  json: unknown,
  name: string,
  trust: IndexTrust,
): Promise<ArtifactIndex> {
  const refuse = (why: string) => new AgentError('untrusted-index', `the index of ${name} ${why}`)
  const answer = answerRecord(json, refuse)
  const parsed = ServedIndex.safeParse(answer)
  if (!parsed.success) throw refuse('is malformed')
  const { statement, ...index } = parsed.data
  const said = await signedByPinnedKey(statement, trust.keys, refuse)
  if (said.name !== name) throw refuse(`carries a statement about ${said.name}`)
  if (said.indexSha256 !== (await indexDigest(answer))) throw refuse('differs from what its statement covers')
  checkFresh(said, trust.now(), refuse)
  // The index's own serial: the digest binds it to the signature.
  const { installed, seen } = await trust.serials(name)
  if (index.latestSerial < installed)
    throw refuse(`is older than what this device installed (serial ${index.latestSerial} < ${installed})`)
  if (index.latestSerial < seen)
    throw refuse(
      `is older than an index this device already verified (serial ${index.latestSerial} < ${seen})`,
    )
  // Written only when a publish happened since the last verified read: most polls change nothing.
  if (index.latestSerial > seen) await trust.sawIndex(name, index.latestSerial)
  return index
}

/** The body of an answer's statement, refused when there is none or no pinned key signed it. */
async function signedByPinnedKey<Body>(
  statement: Envelope<Body> | undefined,
  keys: readonly TrustedKey[],
  refuse: (why: string) => AgentError,
): Promise<Body> {
  if (!statement) throw refuse('carries no signed statement, and indexKeys requires one')
  if (!(await verifyEnvelope(statement, keys)))
    throw refuse('carries a statement with no valid signature by a key in indexKeys')
  return statement.signed
}

/** A statement's lifetime against this device's clock: refused when expired or issued far ahead of it. */
function checkFresh(
  said: { issuedAt: string; expires: string },
  at: Date,
  refuse: (why: string) => AgentError,
): void {
  const now = at.getTime()
  if (Date.parse(said.expires) <= now)
    throw refuse(
      `is stale: its statement expired at ${said.expires} (a cache or mirror may be serving an old copy)`,
    )
  if (Date.parse(said.issuedAt) > now + MAX_CLOCK_AHEAD_MS)
    throw refuse(`was signed at ${said.issuedAt}, ahead of this device's clock; check the clock`)
}

/**
 * The rollout answer in `json` (GET /v1/rollouts/:name/:channel?client=), checked like an index (ADR
 * 0034): a statement signed by one of `trust.keys`, for this artifact, channel and client, covering
 * exactly this answer, not expired and not issued in the future. Throws `untrusted-index` naming what
 * failed; returns the answer without its statement.
 */
export async function verifyServedRolloutCheck(
  json: unknown,
  asked: { name: string; channel: string; client: string },
  trust: Pick<IndexTrust, 'keys' | 'now'>,
): Promise<RolloutCheck> {
  const refuse = (why: string) =>
    new AgentError('untrusted-index', `the rollout answer for ${asked.name} on ${asked.channel} ${why}`)
  const answer = answerRecord(json, refuse)
  const parsed = ServedRolloutCheck.safeParse(answer)
  if (!parsed.success) throw refuse('is malformed')
  const { statement, ...check } = parsed.data
  await coveredByStatement(answer, statement, trust, refuse, {
    mismatch: (said) =>
      said.name !== asked.name || said.channel !== asked.channel
        ? `carries a statement about ${said.name} on ${said.channel}`
        : said.client !== asked.client
          ? 'carries a statement made for another client'
          : null,
    digest: (said) => said.checkSha256,
  })
  return check
}

/**
 * The checks every signed answer other than the index passes (rollout answers, prefetch queues): a
 * statement signed by a pinned key, about what was asked (`mismatch` says why not, or null), whose
 * digest is this answer's (`digest`: the statement's digestWithoutStatement field), fresh. Throws what
 * `refuse` makes of the first that fails.
 */
async function coveredByStatement<Body extends { issuedAt: string; expires: string }>(
  answer: Record<string, unknown>,
  statement: Envelope<Body> | undefined,
  trust: Pick<IndexTrust, 'keys' | 'now'>,
  refuse: (why: string) => AgentError,
  about: { mismatch: (said: Body) => string | null; digest: (said: Body) => string },
): Promise<Body> {
  const said = await signedByPinnedKey(statement, trust.keys, refuse)
  const mismatch = about.mismatch(said)
  if (mismatch !== null) throw refuse(mismatch)
  if (about.digest(said) !== (await digestWithoutStatement(answer)))
    throw refuse('differs from what its statement covers')
  checkFresh(said, trust.now(), refuse)
  return said
}

/**
 * The prefetch queue in `json` (GET /v1/prefetch), checked like a rollout answer (ADR 0034, amended
 * 2026-11-26): a statement signed by one of `trust.keys`, made for `client` (this device's id: its
 * enrolled device id, else its telemetry id), covering exactly this queue (each item and its plan), not
 * expired and not issued in the future. Throws `untrusted-index` naming what failed, before the daemon
 * fetches anything; returns the queue without its statement.
 */
export async function verifyServedPrefetchQueue(
  json: unknown,
  client: string,
  trust: Pick<IndexTrust, 'keys' | 'now'>,
): Promise<PrefetchQueue> {
  const refuse = (why: string) =>
    new AgentError('untrusted-index', `the prefetch plan ${why}; nothing of it was fetched`)
  const answer = answerRecord(json, refuse)
  const parsed = ServedPrefetchQueue.safeParse(answer)
  if (!parsed.success) throw refuse('is malformed')
  const { statement, ...queue } = parsed.data
  // An edge from before signed plans serves none: with indexKeys the device stops prefetching (its
  // updates are unaffected) rather than let anyone in the path strip the statement to choose its downloads.
  if (!statement)
    throw refuse(
      'carries no signed statement, and indexKeys requires one (an edge that does not sign prefetch plans yet: update the edge)',
    )
  await coveredByStatement(answer, statement, trust, refuse, {
    mismatch: (said) =>
      said.client !== client ? `was made for another device (${said.client}, not ${client})` : null,
    digest: (said) => said.queueSha256,
  })
  return queue
}
