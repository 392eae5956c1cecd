/**
 * What the ShardPlanner knows of each forecast dependency (`name@version`): its blob's key, size and
 * sha256 and the names its manifest declares it needs, read from the signed manifest once and cached in
 * meta under `manifest:<id>`; and the co-location edges those declarations make.
 */
import type { CoEdge, PlanDependency } from '../predict/index.ts'
import { ArtifactName, Version } from '../schemas/common.ts'
import { ManifestFacts, type ShardPlan } from '../schemas/shards.ts'
import { readPublishedManifest } from '../workers/storage/artifact-store.ts'
import { keys } from '../workers/storage/keys.ts'
import { readMeta, writeMeta } from './meta-table.ts'
import { parseStoredJson } from './stored-json.ts'

/** A dependency to plan, with the names its manifest declares it needs. */
export type PlannedDependency = PlanDependency & { requires: string[] }

const MANIFEST_PREFIX = 'manifest:'

/** Splits `name@version` (names may be scoped, so the last `@`). */
function splitEntry(id: string): { name: string; version: string } | null {
  const at = id.lastIndexOf('@')
  if (at <= 0) return null
  const name = ArtifactName.safeParse(id.slice(0, at))
  const version = Version.safeParse(id.slice(at + 1))
  return name.success && version.success ? { name: name.data, version: version.data } : null
}

/** Size, sha256 and declared dependencies of each forecast dependency, from its signed manifest. */
export async function readDependencies(
  sql: SqlStorage,
  artifacts: R2Bucket,
  forecasts: Map<string, { demand: Record<string, number> }>,
): Promise<PlannedDependency[]> {
  const out: PlannedDependency[] = []
  for (const [id, f] of forecasts) {
    const ref = splitEntry(id)
    if (ref === null) continue
    const cached = readMeta(sql, `${MANIFEST_PREFIX}${id}`)
    let info: ManifestFacts | null = cached === null ? null : parseStoredJson(cached, ManifestFacts)
    if (info === null) {
      const stored = await readPublishedManifest(artifacts, ref.name, ref.version).catch(() => null)
      if (stored === null) continue
      const signed = stored.envelope.signed
      info = { size: signed.size, sha256: signed.sha256, requires: signed.dependencies.map((d) => d.name) }
      // A published version never changes, so its facts are cached for good.
      writeMeta(sql, `${MANIFEST_PREFIX}${id}`, JSON.stringify(info))
    }
    out.push({
      id,
      name: ref.name,
      version: ref.version,
      key: keys.blob(ref.name, ref.version),
      size: info.size,
      sha256: info.sha256,
      demand: f.demand,
      requires: info.requires,
    })
  }
  return out
}

/** Co-location edges: a dependency and what its manifest declares it needs (any planned version). */
export function dependencyEdges(deps: readonly PlannedDependency[]): CoEdge[] {
  const byName = new Map<string, string[]>()
  for (const d of deps) byName.set(d.name, [...(byName.get(d.name) ?? []), d.id])
  return deps.flatMap((d) =>
    d.requires.flatMap((name) => (byName.get(name) ?? []).map((b) => ({ a: d.id, b, weight: 1 }))),
  )
}

/**
 * Drops the cached manifest facts of dependencies neither in `plan` nor demanded any more; prune the
 * demand first.
 */
export function pruneManifestFacts(sql: SqlStorage, plan: ShardPlan | null): void {
  const planned = new Set((plan?.entries ?? []).map((e) => e.id))
  const facts = sql
    .exec<{ key: string }>(`SELECT key FROM meta WHERE key LIKE '${MANIFEST_PREFIX}%'`)
    .toArray()
    .map((r) => r.key)
  for (const key of facts) {
    const entry = key.slice(MANIFEST_PREFIX.length)
    if (planned.has(entry)) continue
    const demanded = sql
      .exec<{ n: number }>('SELECT COUNT(*) AS n FROM demand WHERE entry = ?', entry)
      .one().n
    if (demanded === 0) sql.exec('DELETE FROM meta WHERE key = ?', key)
  }
}
