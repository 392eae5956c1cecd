import type { AgentConfig } from './config.ts'
import { StagingArea } from './daemon/staging.ts'
import { dependentsOf } from './dependencies.ts'
import { dropInterruptedSwitch } from './dependency-switch.ts'
import { AgentError } from './errors.ts'
import { type InstallRequest, lockWaitOf, runFilesOf } from './install.ts'
import { ArtifactStore } from './store.ts'
import { lockRun } from './swap/run-lock.ts'

export interface UninstallRequest extends Pick<InstallRequest, 'lockWaitMs' | 'onLockWait' | 'signal'> {
  name: string
  /** Remove it even though installed artifacts depend on it (`--ignore-dependents`). */
  ignoreDependents?: boolean
  /** Also remove its dependencies that nothing else installed needs any more, transitively. */
  withDependencies?: boolean
}

export interface UninstallResult {
  name: string
  /**
   * Every artifact removed, this one first, with the versions that were on disk and those the daemon
   * had prefetched (staged copies and partial downloads go too).
   */
  removed: Array<{
    name: string
    versions: string[]
    staged: string[]
    unfinished: number
    /** Versions recorded as failed on this device (`deltaport run`'s rollbacks), forgotten with it. */
    failed?: string[]
  }>
  /** Dependencies left installed with `withDependencies`, and why. */
  kept: Array<{ name: string; reason: string }>
}

/**
 * `deltaport uninstall`: removes an artifact's versions from the device. Refused while installed
 * artifacts depend on it (they would lose what they run on) and while a `deltaport run` serves it.
 * The store keeps the artifact's serial high-water mark, so reinstalling it later still refuses a
 * rolled-back manifest (ArtifactStore.uninstall).
 */
export async function uninstallArtifact(
  config: AgentConfig,
  request: UninstallRequest,
): Promise<UninstallResult> {
  const result: UninstallResult = { name: request.name, removed: [], kept: [] }
  await uninstallInto(config, request, result)
  return result
}

async function uninstallInto(config: AgentConfig, request: UninstallRequest, result: UninstallResult) {
  const store = new ArtifactStore(config.installRoot, request.name)
  const staging = new StagingArea(config.installRoot)
  // A download the daemon has under way counts: removing it (and its claim) under the lock is what
  // stops the daemon putting it in after the uninstall (daemon.ts, commitStaged).
  const isStaged = () => staging.holds(request.name)
  // Taking the lock makes the artifact's folder: not for one that has none (and nothing staged).
  const notInstalled = () => new AgentError('not-found', `${request.name} is not installed`)
  if (!(await store.exists()) && !(await isStaged())) throw notInstalled()
  const needs = await store.withLock(lockWaitOf(request), async () => {
    const state = await store.state()
    const installed = await store.installedVersions()
    // A first install killed mid-download installed nothing but left its download (up to the artifact's
    // size) in partial/: uninstall removes that too instead of answering "not installed".
    const unfinished = (await store.unfinishedWork()).length
    const staged = await isStaged()
    if (state.current === null && installed.length === 0 && unfinished === 0 && !staged) throw notInstalled()
    if (!request.ignoreDependents) {
      const dependents = await dependentsOf(config.installRoot, request.name)
      if (dependents.length > 0)
        throw new AgentError(
          'dependency-conflict',
          `${request.name} is needed by ${dependents.map((d) => `${d.name}@${d.version} (${d.range})`).join(', ')}; uninstall those first or pass --ignore-dependents`,
          { dependents },
        )
    }
    const runFiles = runFilesOf(store)
    const serving = await runFiles.livePids()
    if (serving.length > 0)
      throw new AgentError(
        'busy',
        `${request.name} is served by a running \`deltaport run\` (pids ${serving.join(', ')}); stop it first`,
        { pids: serving },
      )
    // A `run` that took its lock but has not started its service yet records no pid: its lock is what
    // says it is there. Held (not waited for) until the removal is done, so no run starts under it.
    const runLock = await lockRun(config.installRoot, request.name)
    try {
      const current = state.current !== null && installed.includes(state.current) ? state.current : null
      // A damaged manifest must not stop its own uninstall (it only costs --with-dependencies its list).
      const dependencies = current ? ((await store.manifestOrNull(current))?.signed.dependencies ?? []) : []
      // An update of it killed while switching is abandoned with it (the dependencies it switched stay).
      await dropInterruptedSwitch(store)
      const versions = await store.uninstall()
      // A reinstall starts afresh: what failed here before is the history of the removed artifact.
      const failed = [...(await runFiles.failedVersions())]
      await runFiles.clearFailures()
      result.removed.push({
        name: request.name,
        versions,
        staged: await staging.removeArtifact(request.name),
        unfinished,
        ...(failed.length > 0 ? { failed } : {}),
      })
      return dependencies
    } finally {
      await runLock.release()
    }
  })
  if (!request.withDependencies) return
  for (const dependency of needs) {
    if (result.removed.some((r) => r.name === dependency.name)) continue
    const still = await dependentsOf(config.installRoot, dependency.name)
    if (still.length > 0) {
      result.kept.push({ name: dependency.name, reason: `needed by ${still.map((d) => d.name).join(', ')}` })
      continue
    }
    try {
      await uninstallInto(config, { ...request, name: dependency.name, ignoreDependents: false }, result)
    } catch (error) {
      // Already gone, or serving: the artifact asked for is removed either way; say what stayed.
      if (!(error instanceof AgentError)) throw error
      if (error.code === 'not-found') continue
      result.kept.push({ name: dependency.name, reason: error.message })
    }
  }
}
