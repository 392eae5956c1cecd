import { gt, lt } from 'semver'
import { type ArtifactIndex, versionEntry } from '../schemas/artifact-index.ts'
import { meetsThreshold } from '../schemas/signed-envelope.ts'
import type { SignedYankStatement, YankStatement } from '../schemas/yank-statement.ts'
import type { AgentConfig } from './config.ts'
import { fileHasBytes } from './download.ts'
import type { ArtifactStore, StoreState } from './store.ts'
import { signatureShortfall } from './trust.ts'

/** Why a device running a yanked version stays on it (the warning says so). */
export interface Stay {
  stayed: string
}

/**
 * Where a device running a version yanked by its maintainer's signed word moves to (ADR 0025):
 * `install` the channel head (it is at least as new as the version this device ran before), or
 * `rollback` to that version, still on disk. `yankSeen` goes into the same state change as the switch.
 */
export interface Retreat {
  kind: 'install' | 'rollback'
  from: string
  to: string
  reason: string
  /** When the maintainer signed the yank. */
  at: string
  yankSeen: YankSeen
  /**
   * `to` is a channel head newer than the version this device ran before, read from an index no key of
   * this device verified (no `indexKeys`): whatever answers for the edge could have named any release
   * signed for the channel between that version and `from` (ADR 0032, amended 2026-11-26).
   */
  unverifiedHead?: true
}

type YankSeen = NonNullable<StoreState['yankSeen']>

/**
 * The warning for an install that retreated to a channel head read from an index no key of this device
 * verified (Retreat.unverifiedHead), null for any other install. One text for every command that
 * installs: `update`/`install` print it, `deltaport run` logs it (swap/edge-source.ts).
 */
export function unverifiedHeadWarning(result: {
  version: string
  retreated?: { from: string; unverifiedHead?: true }
}): string | null {
  if (!result.retreated?.unverifiedHead) return null
  return `${result.version} is where the channel's head points, and the index naming it is not signed for this device (no indexKeys): a network answering for the edge could have named any release signed for the channel between the version this device ran before and ${result.retreated.from}. Pin the edge's index key (indexKeys, or an index role in the root) to have heads verified`
}

/**
 * Decides whether the device moves off its yanked current version, and where to. Call with the
 * artifact's lock held, only when the channel's head is older than the current version.
 *
 * Every condition guards against an edge that tries to roll devices back: the statement must verify
 * under the pinned keys, be about exactly the installed bytes, be unexpired, and be newer than any
 * statement this device already acted on or saw restored (so it moves a device at most once, and an
 * old yank replayed after a signed restore does nothing). The destination is never older than the
 * version this device itself ran before: the head when it is at least that new, else that version
 * (on disk with its signed bytes, vouched for by the keys trusted now, not yanked itself). A device
 * that ran nothing before stays. A signed restore is recorded (the yank it overrides cannot come back
 * later).
 */
export async function planYankRetreat(
  config: AgentConfig,
  store: ArtifactStore,
  state: StoreState,
  index: ArtifactIndex,
  head: string,
  now: Date,
): Promise<Retreat | Stay> {
  const accepted = await acceptedStatement(config, store, state, index, now)
  if ('stayed' in accepted) return accepted
  const { said, yankSeen, current } = accepted
  if (!said.yanked) {
    await store.noteYankSeen(yankSeen)
    return stay('the maintainer restored it')
  }
  const move = { from: current, reason: said.reason ?? 'yanked', at: said.at, yankSeen }
  const previous = state.previous
  if (!previous || !lt(previous, current)) return stay('this device ran no older version before it')
  const onDisk = await store.has(previous)
  // Switched to on disk only while it is still what was verified: a version that only a key revoked
  // since signed (a thief's release, installed before the rotation) is no safer place than any the
  // edge could name, and a copy whose bytes changed is not the signed release; a switch on disk asks
  // no manifest and hashes nothing (ADR 0025, amended 2026-11-26).
  const unusable = onDisk ? await whyNotRunAgain(config, store, previous) : 'is not installed'
  // The head when it is newer than what the device ran before, or is that version and the copy on disk
  // cannot be used (installing checks the edge's manifest under the keys trusted now, and the bytes).
  if (gt(head, previous))
    return {
      kind: 'install',
      to: head,
      ...move,
      ...(config.indexKeys.length === 0 ? { unverifiedHead: true } : {}),
    }
  if (head === previous && unusable) return { kind: 'install', to: head, ...move }
  if (unusable) return stay(`the version it ran before, ${previous}, ${unusable}`)
  if (versionEntry(index, previous)?.yanked) return stay(`the version before it, ${previous}, is yanked too`)
  return { kind: 'rollback', to: previous, ...move }
}

/**
 * Records a signed restore of the current version (the device may never have seen the yank it
 * overrides), so that yank cannot be replayed at it later. Call with the artifact's lock held.
 */
export async function noteSignedRestore(
  config: AgentConfig,
  store: ArtifactStore,
  state: StoreState,
  index: ArtifactIndex,
  now: Date,
): Promise<void> {
  const current = state.current
  if (!current || versionEntry(index, current)?.yankStatement?.signed.yanked !== false) return
  const accepted = await acceptedStatement(config, store, state, index, now)
  if (!('stayed' in accepted)) await store.noteYankSeen(accepted.yankSeen)
}

/** The current version's statement in `index` when this device may act on it, and the memory after. */
async function acceptedStatement(
  config: AgentConfig,
  store: ArtifactStore,
  state: StoreState,
  index: ArtifactIndex,
  now: Date,
): Promise<{ said: YankStatement; current: string; yankSeen: YankSeen } | Stay> {
  const current = state.current
  const statement = current ? versionEntry(index, current)?.yankStatement : undefined
  if (!current || !statement) return stay('the yank is not signed by the maintainer')
  const problem = await statementProblem(statement, config, current, await store.manifestOf(current), now)
  if (problem) return stay(problem)
  const said = statement.signed
  const seen = state.yankSeen?.[current]
  if (seen !== undefined && Date.parse(said.at) <= Date.parse(seen)) {
    return stay(`already acted on: the maintainer's statement of ${seen} is the newest this device saw`)
  }
  return { said, current, yankSeen: { ...state.yankSeen, [current]: said.at } }
}

/**
 * Why the installed copy of `version` may not be switched back to, or null: its manifest must be
 * readable and meet the maintainer keys and threshold trusted now, and its blob must still have the
 * signed bytes. A damaged copy is a reason to download it again, never to stop the update.
 */
async function whyNotRunAgain(
  config: AgentConfig,
  store: ArtifactStore,
  version: string,
): Promise<string | null> {
  const envelope = await store.manifestOrNull(version)
  if (!envelope) return 'has no readable manifest on disk'
  if (!(await meetsThreshold(envelope, config.trustedKeys, config.maintainerThreshold ?? 1)))
    return 'is signed by no key this device trusts now'
  if (!(await fileHasBytes(store.blobPath(version), envelope.signed)))
    return 'no longer has its signed bytes on disk'
  return null
}

function stay(why: string): Stay {
  return { stayed: why }
}

/** What makes a statement unusable for this device, or null when it may be acted on. */
async function statementProblem(
  statement: SignedYankStatement,
  config: AgentConfig,
  current: string,
  installed: { signed: { name: string; sha256: string } },
  now: Date,
): Promise<string | null> {
  const said = statement.signed
  const threshold = config.maintainerThreshold ?? 1
  if (!(await meetsThreshold(statement, config.trustedKeys, threshold))) {
    return `the yank statement has ${signatureShortfall(threshold)}`
  }
  if (said.name !== installed.signed.name || said.version !== current) {
    return `the yank statement is about ${said.name}@${said.version}`
  }
  if (said.sha256 !== installed.signed.sha256) return 'the yank statement is about other bytes'
  if (Date.parse(said.expires) <= now.getTime()) return `the yank statement expired at ${said.expires}`
  return null
}
