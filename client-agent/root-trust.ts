import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { z } from 'zod'
import { IsoDateTime, Sha256Hex } from '../schemas/common.ts'
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
  /** How long each request waits for the edge's answer (EdgeClient's `stallMs`; default 30 s). */
  stallMs?: number
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
  const { current, followed, reachedEnd } = await followRootChain(config, config.root, options)
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
 * Walks the edge's chain from the newest root this device trusts, keeping each root it verifies, and
 * records when the edge confirmed the newest (it served no next one). Throws `untrusted-root` when a next
 * root does not follow, or a kept root of unknown origin is not reached; errors reaching the edge pass.
 */
async function followRootChain(
  config: AgentConfig,
  shippedPath: string,
  options: RootRefreshOptions,
): Promise<{ current: RootStatement; followed: number[]; reachedEnd: boolean }> {
  const start = await startingRoot(shippedPath, config.installRoot)
  let current = start.root
  // A bare kept root (origin unknown) newer than the shipped root: the walk from the shipped root must
  // reach its version to tell whether it is this chain's (same digest) or another's.
  let unconfirmed = start.unconfirmed
  const followed: number[] = []
  const edge = new EdgeClient(
    config.edgeUrl,
    deviceFetch(config, options.fetchImpl),
    options.stallMs === undefined ? {} : { stallMs: options.stallMs },
  )
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
  if (reachedEnd) await noteChainChecked(config.installRoot, current.version, options.now ?? new Date())
  return { current, followed, reachedEnd }
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

/**
 * When the edge last confirmed, as far as this device recorded, that it serves no root newer than
 * `version`: what a rollback that cannot reach the edge says of how old its revocations are.
 */
const ChainChecked = z.strictObject({ version: z.number().int().positive(), at: IsoDateTime })

/** How stale the record may grow before a refresh rewrites it: polls do not write on every cycle. */
const CHECKED_RECORD_EVERY_MS = 60 * 60_000

function chainCheckedPath(installRoot: string): string {
  return join(installRoot, '.trust', 'checked.json')
}

async function readChainChecked(installRoot: string): Promise<z.infer<typeof ChainChecked> | null> {
  const path = chainCheckedPath(installRoot)
  if (!existsSync(path)) return null
  const text = await readAtMost(path, 4096).catch(() => null)
  if (!text) return null
  try {
    const parsed = ChainChecked.safeParse(JSON.parse(new TextDecoder().decode(text)))
    return parsed.success ? parsed.data : null
  } catch {
    return null
  }
}

/**
 * Records that the edge served no root past `version` at `at`, at most hourly for the same version (a
 * daemon polls far more often; flash wears). Best effort: a record that cannot be written only makes a
 * later offline rollback's warning name an older time.
 */
async function noteChainChecked(installRoot: string, version: number, at: Date): Promise<void> {
  const recorded = await readChainChecked(installRoot)
  if (recorded?.version === version && at.getTime() - Date.parse(recorded.at) < CHECKED_RECORD_EVERY_MS)
    return
  const path = chainCheckedPath(installRoot)
  await makeDirs(join(path, '..'))
    .then(() => writeFileAtomic(path, JSON.stringify({ version, at: at.toISOString() })))
    .catch(() => undefined)
}

/** The maintainer trusts to check a kept release against, and why they may be out of date. */
export interface MaintainerTrustsNow {
  trusts: MaintainerTrust[]
  /** Set when the edge could not be asked for newer roots: what the device knows, and since when. */
  unrefreshed?: string
}

/**
 * The maintainer keys this device trusts, after asking the edge for newer roots when it can
 * (`deltaport rollback`): the chain is walked from the shipped root exactly as an update walks it, and
 * what it keeps is what counts. When the edge cannot be reached, or serves a chain that does not verify
 * (to the device the same: no newer root it can trust), the roots it already verified count
 * (maintainerTrustsOnDisk) and `unrefreshed` says so, naming the root and when the edge last confirmed
 * it. An expired newest root still counts its revocations (expiry never makes a revoked key good again).
 * Without a `root` the config's keys are all there is; nothing is asked.
 */
export async function maintainerTrustsNow(
  config: AgentConfig,
  options: RootRefreshOptions = {},
): Promise<MaintainerTrustsNow> {
  if (!config.root) return { trusts: [config] }
  let why: string | null = null
  try {
    const walk = await followRootChain(config, config.root, options)
    if (!walk.reachedEnd)
      why = `this check stopped after following ${MAX_ROOT_STEPS} roots, the most one check follows`
  } catch (error) {
    // The shipped root itself is unusable: the config's fault, and no trust on disk could stand in.
    if (!(error instanceof AgentError) || error.code === 'config') throw error
    why = error.message
  }
  const trusts = await maintainerTrustsOnDisk(config)
  if (why === null) return { trusts }
  const start = await startingRoot(config.root, config.installRoot)
  const known = start.unconfirmed?.version ?? start.root.version
  const checked = await readChainChecked(config.installRoot)
  const now = options.now ?? new Date()
  const since =
    checked?.version === known
      ? `which the edge last confirmed as its newest at or after ${checked.at} (${ageOf(now.getTime() - Date.parse(checked.at))} ago)`
      : 'which this device has never seen the edge confirm as its newest'
  return {
    trusts,
    unrefreshed: `could not ask the edge for newer root metadata (${why}); checked against the revocations of root ${known}, ${since}: a key revoked after that is not known here`,
  }
}

/** A duration as people say it: "3 days", "5 hours", "12 minutes" (rounded down, at least a minute). */
function ageOf(ms: number): string {
  const minutes = Math.max(1, Math.floor(ms / 60_000))
  const [count, unit] =
    minutes >= 2 * 24 * 60
      ? [Math.floor(minutes / (24 * 60)), 'days']
      : minutes >= 120
        ? [Math.floor(minutes / 60), 'hours']
        : [minutes, minutes === 1 ? 'minute' : 'minutes']
  return `${count} ${unit}`
}
