import { existsSync } from 'node:fs'
import { join } from 'node:path'
import type { RootStatement, SignedRoot } from '../schemas/root.ts'
import { nextRootProblem, roleKeys, roleThreshold, selfSignedProblem } from '../schemas/root-chain.ts'
import type { AgentConfig } from './config.ts'
import { deviceFetch } from './devices/device-fetch.ts'
import { EdgeClient } from './edge-client.ts'
import { AgentError } from './errors.ts'
import { writeFileAtomic } from './fs/atomic.ts'
import { makeDirs } from './fs/make-dirs.ts'
import { readRootFile } from './root-metadata.ts'

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
  let current = await startingRoot(config.root, config.installRoot)
  const followed: number[] = []
  const edge = new EdgeClient(config.edgeUrl, deviceFetch(config, options.fetchImpl))
  for (let step = 0; step < MAX_ROOT_STEPS; step++) {
    const next = await edge.root(current.version + 1)
    if (!next) break
    const problem = await nextRootProblem(current, next)
    if (problem)
      throw new AgentError('untrusted-root', `the edge's ${problem}; keeping root ${current.version}`)
    // Kept before the next step: a refresh cut short resumes from here, never from an older root.
    await keepRoot(config.installRoot, next)
    current = next.signed
    followed.push(current.version)
  }
  const now = options.now ?? new Date()
  if (Date.parse(current.expires) <= now.getTime()) {
    throw new AgentError(
      'untrusted-root',
      `root ${current.version} expired at ${current.expires} and the edge serves no newer root: keys it names are no longer trusted`,
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

/** The newer of the shipped root and the last one this device verified. */
async function startingRoot(shippedPath: string, installRoot: string): Promise<RootStatement> {
  const shipped = await readRootFile(shippedPath).catch((error: unknown) => {
    // The shipped root is configuration: a malformed one is the config's fault, not the edge's.
    if (error instanceof AgentError && error.code === 'untrusted-root')
      throw new AgentError('config', error.message)
    throw error
  })
  const problem = await selfSignedProblem(shipped)
  if (problem) throw new AgentError('config', `${shippedPath}: ${problem}`)
  // A kept root that cannot be read (a disk fault) is only a shortcut lost: the chain is walked again
  // from the shipped root, every step verified, and kept again.
  const keptPath = trustedRootPath(installRoot)
  const kept = existsSync(keptPath) ? await readRootFile(keptPath).catch(() => null) : null
  return kept && kept.signed.version > shipped.signed.version ? kept.signed : shipped.signed
}

async function keepRoot(installRoot: string, root: SignedRoot): Promise<void> {
  const path = trustedRootPath(installRoot)
  await makeDirs(join(path, '..'))
  await writeFileAtomic(path, JSON.stringify(root))
}
