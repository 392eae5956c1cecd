import { readdir } from 'node:fs/promises'
import { rcompare, satisfies, validRange } from 'semver'
import type { ArtifactManifest, DependencyRef } from '../schemas/manifest.ts'
import type { AgentConfig } from './config.ts'
import type { SwitchPlan } from './dependency-switch.ts'
import { deviceEdgeOptions, EdgeClient } from './edge-client.ts'
import { AgentError } from './errors.ts'
import { artifactOfFolder } from './fs/artifact-folder.ts'
import { unlessMissing } from './fs/missing.ts'
import { ArtifactStore } from './store.ts'

/** An installed artifact whose current version needs `range` of another. */
export interface Dependent {
  name: string
  version: string
  range: string
}

/** What an install did for one dependency of the version it installed. */
export interface DependencyOutcome {
  name: string
  version: string
  /** The range the installed version asked for. */
  range: string
  /** false: the version already current satisfied every range and stayed (true: this update switches it). */
  changed: boolean
}

/** Dependency chains deeper than this are refused (a manifest cannot make the agent recurse forever). */
export const MAX_DEPENDENCY_DEPTH = 16

/**
 * The installed artifacts (other than `name` itself) whose current version depends on `name`, read
 * from the signed manifests they were installed with. One version of each artifact is current on a
 * device at a time, so a dependency must satisfy all of them. With `plan` (an update under way), an
 * artifact it staged counts in the version it will be switched to.
 */
export async function dependentsOf(
  installRoot: string,
  name: string,
  plan?: SwitchPlan,
): Promise<Dependent[]> {
  const entries = await unlessMissing(readdir(installRoot, { withFileTypes: true }), [])
  const dependents: Dependent[] = []
  for (const entry of entries) {
    const other = entry.isDirectory() ? artifactOfFolder(entry.name) : null
    if (other === null || other === name) continue
    const staged = plan?.staging(other)
    if (staged) {
      for (const dep of staged.dependencies) {
        if (dep.name === name) dependents.push({ name: other, version: staged.version, range: dep.range })
      }
      continue
    }
    const store = new ArtifactStore(installRoot, other)
    const { current } = await store.state()
    if (!current || !(await store.has(current))) continue
    // A damaged manifest cannot say what its artifact needs. Its own commands report it; it must not
    // stop every other artifact from being installed or removed.
    const needs = (await store.manifestOrNull(current))?.signed.dependencies ?? []
    for (const dep of needs) {
      if (dep.name === name) dependents.push({ name: other, version: current, range: dep.range })
    }
  }
  return dependents
}

/**
 * Refuses to make `version` of `name` current when an installed artifact needs a range it is outside
 * of: updating a shared library must not break the services that run on it.
 */
export async function checkDependents(installRoot: string, name: string, version: string): Promise<void> {
  const broken = await dependentsBrokenBy(installRoot, name, version)
  if (broken.length === 0) return
  throw new AgentError(
    'dependency-conflict',
    `${name}@${version} would break ${describeAll(broken, name)}: update ${broken.length === 1 ? 'it' : 'them'} first, or pass --ignore-dependents`,
    { name, version, dependents: broken },
  )
}

/**
 * Refuses to roll `name` back to `version` when an installed artifact needs a range it is outside of
 * (app 2.0.0 needs lib ^2.0.0, the rollback would put lib 1.0.0 under it), as install refuses an update
 * that leaves one: rollback switches one artifact, and must not break the services that run on it
 * without the owner saying so (`--ignore-dependents`).
 */
export async function checkDependentsOfRollback(
  installRoot: string,
  name: string,
  from: string | null,
  version: string,
): Promise<void> {
  const broken = await dependentsBrokenBy(installRoot, name, version)
  if (broken.length === 0) return
  throw new AgentError(
    'dependency-conflict',
    `rolling ${name} back from ${from ?? 'nothing'} to ${version} would break ${describeAll(broken, name)}; nothing was switched. Roll back or install a version of ${broken.length === 1 ? 'it' : 'them'} that accepts ${name}@${version} first, or pass --ignore-dependents to roll back anyway`,
    { name, from, version, dependents: broken },
  )
}

/** The installed artifacts whose current version needs a range of `name` that `version` is outside of. */
async function dependentsBrokenBy(installRoot: string, name: string, version: string): Promise<Dependent[]> {
  return (await dependentsOf(installRoot, name)).filter((d) => !satisfies(version, d.range))
}

function describeAll(dependents: readonly Dependent[], dependency: string): string {
  return dependents.map((d) => describe(d, dependency)).join(', ')
}

/**
 * What `version` of the artifact in `store` needs, and whether the device's current versions of those
 * dependencies satisfy it (`status`, and the warning after a rollback, which switches one artifact only).
 */
export async function dependencyStatus(installRoot: string, store: ArtifactStore, current: string) {
  if (!(await store.has(current))) return []
  const needs = (await store.manifestOf(current)).signed.dependencies
  return Promise.all(
    needs.map(async ({ name, range }) => {
      const depCurrent = (await new ArtifactStore(installRoot, name).state()).current
      return {
        name,
        range,
        current: depCurrent,
        satisfied: depCurrent !== null && satisfies(depCurrent, range),
      }
    }),
  )
}

/**
 * How ensureDependencies stages one dependency (installArtifact with the update's SwitchPlan, passed in
 * to avoid an import cycle): downloaded, verified and committed, switched only with the rest.
 */
export type InstallDependency = (dep: DependencyRef, version: string) => Promise<{ version: string }>

/**
 * Stages every dependency of `manifest` in `plan`, in a version its range allows, to be switched to
 * before the manifest's own version (switchTogether), so it never runs without them, and nothing is
 * switched unless all of them could be downloaded and verified. A dependency already current (or
 * already staged by this update) in such a version stays (no bytes, no change under other services);
 * otherwise the highest published version that is not yanked and satisfies this range and those of the
 * other installed dependents is staged, by the ordinary install path (its own dependencies first,
 * recursively). `resolving` holds the artifacts being installed above this one: a cycle ends there.
 */
export async function ensureDependencies(
  config: AgentConfig,
  manifest: ArtifactManifest,
  resolving: readonly string[],
  install: InstallDependency,
  plan: SwitchPlan,
  fetchImpl?: typeof fetch,
): Promise<DependencyOutcome[]> {
  if (manifest.dependencies.length === 0) return []
  if (resolving.length >= MAX_DEPENDENCY_DEPTH) {
    throw new AgentError(
      'dependency-conflict',
      `dependencies of ${manifest.name} nest deeper than ${MAX_DEPENDENCY_DEPTH}: ${[...resolving, manifest.name].join(' → ')}`,
    )
  }
  const deps = manifest.dependencies.filter((d) => d.name !== manifest.name && !resolving.includes(d.name))
  // First every dependency is resolved without staging any: one that nothing published satisfies
  // (exit 6) or that conflicts (exit 14) stops the update before anything is downloaded for it. (One
  // dependency alone is resolved by the loop below before anything is staged.)
  if (deps.length > 1) for (const dep of deps) await resolveDependency(config, manifest, dep, plan, fetchImpl)
  const outcomes: DependencyOutcome[] = []
  for (const dep of deps) {
    // Resolved again: staging an earlier dependency may have staged this one, or a dependent of it.
    const resolved = await resolveDependency(config, manifest, dep, plan, fetchImpl)
    if ('keep' in resolved) {
      // The version current fits everyone, one staged earlier included: that staged switch is not needed.
      if (!resolved.staged) plan.drop(dep.name)
      outcomes.push({ name: dep.name, version: resolved.keep, range: dep.range, changed: resolved.staged })
      continue
    }
    const installed = await install(dep, resolved.install)
    outcomes.push({ name: dep.name, version: installed.version, range: dep.range, changed: true })
  }
  return outcomes
}

/**
 * Whether `dep`'s current version stays (it fits this range and every other installed dependent's) or
 * which version to install for `manifest`; `plan`'s staged versions count as current (`staged`: the
 * kept version is one this update switches to). Reads the stores and the edge's index; changes nothing.
 */
async function resolveDependency(
  config: AgentConfig,
  manifest: ArtifactManifest,
  dep: DependencyRef,
  plan: SwitchPlan,
  fetchImpl?: typeof fetch,
): Promise<{ keep: string; staged: boolean } | { install: string }> {
  if (!validRange(dep.range)) {
    throw new AgentError(
      'install-failed',
      `${manifest.name}@${manifest.version} depends on ${dep.name} "${dep.range}", which is not a semver range`,
    )
  }
  const others = (await dependentsOf(config.installRoot, dep.name, plan)).filter(
    (d) => d.name !== manifest.name,
  )
  const needs: Dependent[] = [{ name: manifest.name, version: manifest.version, range: dep.range }, ...others]
  const staged = plan.staging(dep.name)?.version
  if (staged !== undefined && needs.every((n) => satisfies(staged, n.range)))
    return { keep: staged, staged: true }
  const store = new ArtifactStore(config.installRoot, dep.name)
  const { current } = await store.state()
  if (current && (await store.has(current)) && needs.every((n) => satisfies(current, n.range)))
    return { keep: current, staged: false }
  return { install: await highestSatisfying(config, dep, needs, fetchImpl) }
}

/** The highest published, non-yanked version of `dep` that every one of `needs` accepts. */
async function highestSatisfying(
  config: AgentConfig,
  dep: DependencyRef,
  needs: readonly Dependent[],
  fetchImpl?: typeof fetch,
): Promise<string> {
  const index = await new EdgeClient(config.edgeUrl, fetchImpl, deviceEdgeOptions(config)).index(dep.name)
  const published = index.versions.filter((v) => !v.yanked).map((v) => v.version)
  const fits = published.filter((v) => needs.every((n) => satisfies(v, n.range))).sort(rcompare)
  const best = fits[0]
  if (best) return best
  const [asker] = needs
  if (!published.some((v) => asker && satisfies(v, asker.range))) {
    throw new AgentError(
      'not-found',
      `no published version of ${dep.name} satisfies ${dep.range} (needed by ${asker ? `${asker.name}@${asker.version}` : dep.name})`,
    )
  }
  throw new AgentError(
    'dependency-conflict',
    `no published version of ${dep.name} satisfies all of ${needs.map((n) => describe(n, dep.name)).join(', ')}`,
    { name: dep.name, needs },
  )
}

function describe(d: Dependent, dependency: string): string {
  return `${d.name}@${d.version} (needs ${dependency} ${d.range})`
}
