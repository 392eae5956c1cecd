import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { z } from 'zod'
import { Sha256Hex } from '../schemas/common.ts'
import { MAX_ROOT_BYTES, type RootStatement, SignedRoot } from '../schemas/root.ts'
import {
  nextRootProblem,
  roleKeys,
  roleThreshold,
  rootDigest,
  selfSignedProblem,
} from '../schemas/root-chain.ts'
import type { AgentConfig } from './config.ts'
import { deviceFetch } from './devices/device-fetch.ts'
import { EdgeClient } from './edge-client.ts'
import { AgentError } from './errors.ts'
import { writeFileAtomic } from './fs/atomic.ts'
import { makeDirs } from './fs/make-dirs.ts'
import { readAtMost, readRootFile } from './root-metadata.ts'
import type { MaintainerTrust } from './trust.ts'

/**
 * A device whose config names a `root` (ADR 0035) takes its keys from root metadata instead of its
 * config: it starts from the newest root it has verified (or the one it shipped with), follows the
 * edge's chain one version at a time, keeping each root it verifies, and trusts what the newest says:
 * the maintainers' keys and threshold for manifests and yank statements, the index keys for index
 * statements and rollout answers. Keys rotate and are revoked by publishing a root; no config changes.
 */

/** Roots followed in one refresh: a device years behind catches up; an endless chain cannot hold it. */
export const MAX_ROOT_STEPS = 64

/** Where the newest verified root is kept, beside the store's other device state. */
export function trustedRootPath(installRoot: string): string {
  return join(installRoot, '.trust', 'root.json')
}

/**
 * The kept root and the digest (rootDigest) of the shipped root its chain was walked from. A config
 * that ships another root (a device moved to a new chain after its root keys were stolen, or to another
 * deployment) must not go on trusting a root kept from the old chain just because its version is higher.
 * Files written before 2026-11-26 hold the bare root: their origin is unknown (null), and such a root is
 * trusted only once the chain walked from the shipped root reaches its version with the same root
 * (refreshRootTrust); until then it is neither used nor replaced.
 */
const KeptRoot = z.strictObject({ shippedDigest: Sha256Hex, root: SignedRoot })
interface Kept {
  shippedDigest: string | null
  root: SignedRoot
}

export interface RootRefresh {
  /** The config with trustedKeys, maintainerThreshold and indexKeys taken from the newest root (and no `root`). */
  config: AgentConfig
  /** The newest verified root, or null when the config names none (keys come from the config). */
  root: RootStatement | null
  /** Versions followed in this refresh, oldest first. */
  followed: number[]
}

export interface RootRefreshOptions {
  fetchImpl?: typeof fetch
  now?: Date
}

/**
 * The config as the newest trusted root says it should be. Throws `untrusted-root` when the edge
 * serves a next root that does not follow (wrong version, signatures short of a threshold), or when
 * the newest root has expired: a device cut off from newer roots stops trusting old keys (freeze).
 */
export async function refreshRootTrust(
  config: AgentConfig,
  options: RootRefreshOptions = {},
): Promise<RootRefresh> {
  if (!config.root) return { config, root: null, followed: [] }
  const start = await startingRoot(config.root, config.installRoot)
  let current = start.root
  // A bare kept root (origin unknown) newer than the shipped root: the walk from the shipped root must
  // reach its version to tell whether it is this chain's (same digest) or another's.
  let unconfirmed = start.unconfirmed
  const followed: number[] = []
  const edge = new EdgeClient(config.edgeUrl, deviceFetch(config, options.fetchImpl))
  // Whether the edge was asked past the newest root it serves; false when the step limit ended the walk.
  let reachedEnd = false
  // Past the step limit only up to the unconfirmed root's version, one this device once walked to.
  for (
    let step = 0;
    step < MAX_ROOT_STEPS || (unconfirmed && current.version < unconfirmed.version);
    step++
  ) {
    const next = await edge.root(current.version + 1)
    if (!next) {
      reachedEnd = true
      break
    }
    const problem = await nextRootProblem(current, next)
    if (problem)
      throw new AgentError('untrusted-root', `the edge's ${problem}; keeping root ${current.version}`)
    // Equal or not, from here on the chain walked from the shipped root is what is trusted and kept.
    if (unconfirmed?.version === next.signed.version) unconfirmed = undefined
    // Kept before the next step: a refresh cut short resumes from here, never from an older root. Not
    // over an unconfirmed root, though: an edge that withholds the roots above this one would otherwise
    // have the device forget, from the next refresh on, the revocations that root holds.
    if (!unconfirmed) await keepRoot(config.installRoot, { shippedDigest: start.shippedDigest, root: next })
    current = next.signed
    followed.push(current.version)
  }
  if (unconfirmed) {
    const keptPath = trustedRootPath(config.installRoot)
    throw new AgentError(
      'untrusted-root',
      `${keptPath} holds root ${unconfirmed.version}, kept by an agent from before 2026-11-26 that did not record which shipped root its chain began from, and the edge serves the chain of the shipped root only up to root ${current.version}: this device cannot tell whether root ${unconfirmed.version} belongs to that chain, so it trusts neither. If this device was moved to a new root on purpose, delete ${keptPath}; otherwise the edge is withholding roots`,
      { keptRoot: unconfirmed.version, servedUpTo: current.version, path: keptPath },
    )
  }
  const now = options.now ?? new Date()
  if (Date.parse(current.expires) <= now.getTime()) {
    // Cut off by the step limit, the edge was not asked for root N+1, and may well serve it: the roots
    // followed are kept, so the next refresh goes on from here.
    const why = reachedEnd
      ? 'the edge serves no newer root'
      : `this refresh stopped there, having followed ${MAX_ROOT_STEPS} roots (the most one refresh follows); the next one continues from root ${current.version}`
    throw new AgentError(
      'untrusted-root',
      `root ${current.version} expired at ${current.expires} and ${why}: keys it names are no longer trusted until a newer root is followed`,
    )
  }
  return { config: configUnder(config, current), root: current, followed }
}

/**
 * The keys `root` names, in config form. It names no root itself: refreshing it again is a no-op, so a
 * caller that already followed the chain (run's poll, an install's dependencies) is not walked twice.
 */
function configUnder(config: AgentConfig, root: RootStatement): AgentConfig {
  const { root: _followed, ...rest } = config
  return {
    ...rest,
    trustedKeys: roleKeys(root, 'maintainers'),
    maintainerThreshold: roleThreshold(root, 'maintainers'),
    indexKeys: roleKeys(root, 'index'),
  }
}

/**
 * The newer of the shipped root and the last one this device verified from it, with the digest of the
 * shipped root the chain starts from. A bare kept root (from before that digest was recorded) newer than
 * the shipped root is `unconfirmed`: the walk starts at the shipped root and must reach it.
 */
async function startingRoot(
  shippedPath: string,
  installRoot: string,
): Promise<{
  root: RootStatement
  shippedDigest: string
  unconfirmed?: RootStatement
  shipped: RootStatement
}> {
  const shipped = await readRootFile(shippedPath).catch((error: unknown) => {
    // The shipped root is configuration: a malformed one is the config's fault, not the edge's.
    if (error instanceof AgentError && error.code === 'untrusted-root')
      throw new AgentError('config', error.message)
    throw error
  })
  const problem = await selfSignedProblem(shipped)
  if (problem) throw new AgentError('config', `${shippedPath}: ${problem}`)
  const shippedDigest = await rootDigest(shipped.signed)
  // A kept root that cannot be read (a disk fault) is only a shortcut lost: the chain is walked again
  // from the shipped root, every step verified, and kept again.
  const keptPath = trustedRootPath(installRoot)
  const kept = existsSync(keptPath) ? await readKeptRoot(keptPath).catch(() => null) : null
  const base = { root: shipped.signed, shippedDigest, shipped: shipped.signed }
  if (!kept || kept.root.signed.version <= shipped.signed.version) return base
  if (kept.shippedDigest === null) return { ...base, unconfirmed: kept.root.signed }
  return kept.shippedDigest === shippedDigest ? { ...base, root: kept.root.signed } : base
}

/** The kept root file, in either form (KeptRoot, or the bare root written before 2026-11-26). */
async function readKeptRoot(path: string): Promise<Kept> {
  const json: unknown = JSON.parse(new TextDecoder().decode(await readAtMost(path, 2 * MAX_ROOT_BYTES)))
  const kept = KeptRoot.safeParse(json)
  if (kept.success) return kept.data
  return { shippedDigest: null, root: SignedRoot.parse(json) }
}

async function keepRoot(
  installRoot: string,
  kept: { shippedDigest: string; root: SignedRoot },
): Promise<void> {
  const path = trustedRootPath(installRoot)
  await makeDirs(join(path, '..'))
  await writeFileAtomic(path, JSON.stringify(kept))
}

/**
 * The maintainer keys this device trusts, as far as it knows without asking the edge (`deltaport
 * rollback`, which must work offline): the config's, or those of the newest root it has verified from
 * its shipped root, expired or not (expiry stops trusting keys for what comes next; it never makes a
 * revoked key good again). A bare kept root not yet confirmed (see refreshRootTrust) gives two, the
 * shipped root's and its own, and a release must meet both.
 */
export async function maintainerTrustsOnDisk(config: AgentConfig): Promise<MaintainerTrust[]> {
  if (!config.root) return [config]
  const start = await startingRoot(config.root, config.installRoot)
  const under = (root: RootStatement): MaintainerTrust => ({
    trustedKeys: roleKeys(root, 'maintainers'),
    maintainerThreshold: roleThreshold(root, 'maintainers'),
  })
  return start.unconfirmed ? [under(start.shipped), under(start.unconfirmed)] : [under(start.root)]
}
