/**
 * Dependency sharding across zones: replication factor from forecast demand, placement by weighted
 * rendezvous hashing with capacity bounds, co-location of dependencies used together, and the diff between
 * two plans. Pure; durable-objects/shard-planner.ts persists and executes it, bench/shards replays it.
 * See docs/decisions/0011-dependency-sharding.md.
 */
import { hash64, prepareZones, rendezvousScore } from './hashing.ts'

export interface PlanZone {
  id: string
  capacityBytes: number
  weight: number
  bucket?: string
}

/** A dependency (one artifact version's blob) with its forecast demand in requests/hour per zone. */
export interface PlanDependency {
  id: string
  name: string
  version: string
  key: string
  size: number
  sha256: string
  demand: Record<string, number>
}

/** "Used together" edge between two dependencies, weight in shared uses per hour (or 1 per declared dep). */
export interface CoEdge {
  a: string
  b: string
  weight: number
}

export interface PlannedEntry extends PlanDependency {
  group: string
  replicas: string[]
  active: string[]
}

export interface PlannedZone {
  id: string
  capacityBytes: number
  plannedBytes: number
  bucket?: string
  hot: string[]
}

/** Structurally identical to schemas/shards.ts ShardPlan (kept free of zod so predict/ stays standalone). */
export interface PlanShape {
  version: number
  createdAt: string
  horizonHours: number
  prefetchThreshold: number
  zones: PlannedZone[]
  entries: PlannedEntry[]
  underReplicated: string[]
}

export interface PlanOptions {
  /** Ascending demand thresholds: total req/h >= thresholds[i] earns i + 1 replicas. */
  replicationThresholds: readonly number[]
  prefetchThreshold: number
  minEdgeWeight: number
  horizonHours: number
  /** Largest co-location group; bigger connected components are split (hottest members first). */
  maxGroupSize?: number
  /** Weight multiplier for zones that already hold a replica: hysteresis against flapping. */
  stickiness?: number
  /** Demand exponent; > 1 makes hashing strongly prefer the zones that ask for a dependency. */
  sharpness?: number
  /** Demand (req/h) a zone counts as having when it asks for nothing; see `zoneWeightFor`. */
  demandFloor?: number
}

const DEFAULT_GROUP = 8
const DEFAULT_STICKINESS = 1.5
const DEFAULT_SHARPNESS = 3
/**
 * Lets zones with no demand still rank (they take replicas beyond the demanding zones). In req/h: a zone
 * asking for a dependency about once in ten hours or less weighs about as much as one asking nothing.
 * With the default sharpness its term is 0.1³ = 0.001, the old relative floor for a group whose busiest
 * zone asks 1 req/h (the first default replication threshold).
 */
const DEMAND_FLOOR = 0.1

/**
 * Requests/hour over all zones, summed in zone id order: floating-point addition is not associative, and
 * a total that sits on a replication threshold must not depend on the order the zones were listed in.
 */
export const totalDemand = (d: { demand: Record<string, number> }): number =>
  Object.keys(d.demand)
    .sort()
    .reduce((s, z) => s + (d.demand[z] ?? 0), 0)

/** Replicas for a dependency: how many thresholds its total forecast reaches, at most `zoneCount` (zones that can hold one). */
export function replicationFactor(demand: number, thresholds: readonly number[], zoneCount: number): number {
  let rf = 0
  for (const t of thresholds) if (demand >= t) rf++
  return Math.min(rf, zoneCount)
}

/**
 * Co-location groups: connected components over edges of at least `minEdgeWeight`, grown hottest member
 * first and capped at `maxGroupSize`. A group's id is its hottest member, so the group keeps its hashing
 * key while that member stays the hottest.
 */
export function coLocationGroups(
  deps: readonly PlanDependency[],
  edges: readonly CoEdge[],
  minEdgeWeight: number,
  maxGroupSize = DEFAULT_GROUP,
): Map<string, string> {
  const known = new Set(deps.map((d) => d.id))
  const adjacent = new Map<string, string[]>()
  for (const e of edges) {
    if (e.weight < minEdgeWeight || e.a === e.b || !known.has(e.a) || !known.has(e.b)) continue
    adjacent.set(e.a, [...(adjacent.get(e.a) ?? []), e.b])
    adjacent.set(e.b, [...(adjacent.get(e.b) ?? []), e.a])
  }
  const hotness = new Map(deps.map((d) => [d.id, totalDemand(d)]))
  const byHeat = (a: string, b: string) => (hotness.get(b) ?? 0) - (hotness.get(a) ?? 0) || (a < b ? -1 : 1)
  const group = new Map<string, string>()
  for (const root of [...known].sort(byHeat)) {
    if (group.has(root)) continue
    group.set(root, root)
    let size = 1
    const frontier = [root]
    while (frontier.length > 0 && size < maxGroupSize) {
      const next = frontier.shift() as string
      for (const n of [...(adjacent.get(next) ?? [])].sort(byHeat)) {
        if (group.has(n) || size >= maxGroupSize) continue
        group.set(n, root)
        size++
        frontier.push(n)
      }
    }
  }
  return group
}

/**
 * One zone's hashing weight for a group: zone weight × (demand^sharpness + floor^sharpness), times
 * `stickiness` where the group's members already sit. It reads only this zone's own numbers. That is the
 * point: HRW compares two zones by their scores, and each score is a function of its zone's weight and
 * hash alone, so which of two zones ranks higher for a key depends on those two zones only, exactly (no
 * floating-point caveat: nothing about the other zones enters either number). The weight used to be
 * normalised by the group's busiest zone (share = demand / max); the additive floor made that
 * normalisation change ratios, so a demand change in the busiest zone reordered pairs of other zones.
 * Demand that is not a finite positive number counts as none.
 */
export function zoneWeightFor(
  zoneWeight: number,
  demand: number,
  held: boolean,
  options: Pick<PlanOptions, 'stickiness' | 'sharpness' | 'demandFloor'> = {},
): number {
  const sharp = options.sharpness ?? DEFAULT_SHARPNESS
  const floor = options.demandFloor ?? DEMAND_FLOOR
  const asked = Number.isFinite(demand) && demand > 0 ? demand : 0
  return (
    zoneWeight * (asked ** sharp + floor ** sharp) * (held ? (options.stickiness ?? DEFAULT_STICKINESS) : 1)
  )
}

/**
 * Zone ranking for one group: weighted HRW with `zoneWeightFor` per zone. Changing one zone's demand,
 * weight or stickiness only reorders comparisons with that zone, so small demand shifts move few
 * replicas and a shift in one zone never swaps two others.
 */
export function rankZonesFor(
  groupKey: string,
  zones: readonly PlanZone[],
  demand: Record<string, number>,
  held: ReadonlySet<string>,
  options: Pick<PlanOptions, 'stickiness' | 'sharpness' | 'demandFloor'> = {},
): string[] {
  const key = hash64(groupKey)
  return prepareZones(zones.map((z) => ({ id: z.id, weight: z.weight })))
    .filter((z) => z.weight > 0)
    .map((z) => {
      const weight = zoneWeightFor(z.weight, demand[z.id] ?? 0, held.has(z.id), options)
      return { id: z.id, score: rendezvousScore(key, z.hash, weight) }
    })
    .sort((a, b) => b.score - a.score || (a.id < b.id ? -1 : 1))
    .map((z) => z.id)
}

/**
 * The next plan. Groups are placed hottest first (they keep their preferred zones when capacity runs
 * out), each member walks its group's ranking and takes the first zones with room for its bytes.
 * `active` carries over from `previous` only where the replica is still wanted: a removed replica is
 * never advertised, an added one only after its migration verifies it.
 */
export function buildShardPlan(
  deps: readonly PlanDependency[],
  zones: readonly PlanZone[],
  edges: readonly CoEdge[],
  options: PlanOptions,
  previous: PlanShape | null,
  createdAt: string,
): PlanShape {
  const groups = coLocationGroups(deps, edges, options.minEdgeWeight, options.maxGroupSize)
  const prevEntries = new Map((previous?.entries ?? []).map((e) => [e.id, e]))
  const groupDemand = new Map<string, Record<string, number>>()
  const groupHeld = new Map<string, Set<string>>()
  // In id order, so a group's summed demand (and with it the plan) does not depend on the input order.
  for (const d of [...deps].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))) {
    const g = groups.get(d.id) ?? d.id
    const acc = groupDemand.get(g) ?? {}
    for (const [z, v] of Object.entries(d.demand)) acc[z] = (acc[z] ?? 0) + v
    groupDemand.set(g, acc)
    const held = groupHeld.get(g) ?? new Set<string>()
    for (const z of prevEntries.get(d.id)?.replicas ?? []) held.add(z)
    groupHeld.set(g, held)
  }
  const groupHeat = (g: string) => totalDemand({ demand: groupDemand.get(g) ?? {} })
  const ordered = [...deps].sort((a, b) => {
    const ga = groups.get(a.id) ?? a.id
    const gb = groups.get(b.id) ?? b.id
    return (
      groupHeat(gb) - groupHeat(ga) ||
      (ga < gb ? -1 : ga > gb ? 1 : 0) ||
      totalDemand(b) - totalDemand(a) ||
      (a.id < b.id ? -1 : 1)
    )
  })
  const used = new Map(zones.map((z) => [z.id, 0]))
  const capacity = new Map(zones.map((z) => [z.id, z.capacityBytes]))
  const rankings = new Map<string, string[]>()
  const entries: PlannedEntry[] = []
  const underReplicated: string[] = []
  // Only zones that can take a replica count: a zone without a bucket (capacity 0) or removed (weight 0)
  // would otherwise list every hot dependency as under-replicated for good, which is not a shortage.
  const holders = zones.filter((z) => z.weight > 0 && z.capacityBytes > 0).length
  for (const d of ordered) {
    const g = groups.get(d.id) ?? d.id
    const rf = replicationFactor(totalDemand(d), options.replicationThresholds, holders)
    let ranking = rankings.get(g)
    if (ranking === undefined) {
      ranking = rankZonesFor(g, zones, groupDemand.get(g) ?? {}, groupHeld.get(g) ?? new Set(), options)
      rankings.set(g, ranking)
    }
    const replicas: string[] = []
    for (const z of ranking) {
      if (replicas.length >= rf) break
      const after = (used.get(z) ?? 0) + d.size
      if (after > (capacity.get(z) ?? 0)) continue
      used.set(z, after)
      replicas.push(z)
    }
    if (replicas.length < rf) underReplicated.push(d.id)
    const wasActive = prevEntries.get(d.id)?.active ?? []
    // An unchanged blob only: a different sha256 under the same id would mean the old copy is stale.
    const sameBytes = prevEntries.get(d.id)?.sha256 === d.sha256
    entries.push({
      ...d,
      group: g,
      replicas,
      active: sameBytes ? wasActive.filter((z) => replicas.includes(z)) : [],
    })
  }
  entries.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
  const plannedZones: PlannedZone[] = zones.map((z) => ({
    id: z.id,
    capacityBytes: z.capacityBytes,
    plannedBytes: used.get(z.id) ?? 0,
    ...(z.bucket === undefined ? {} : { bucket: z.bucket }),
    hot: hotSet(deps, z.id, options.prefetchThreshold),
  }))
  const draft: PlanShape = {
    version: previous?.version ?? 0,
    createdAt,
    horizonHours: options.horizonHours,
    prefetchThreshold: options.prefetchThreshold,
    zones: plannedZones,
    entries,
    underReplicated: underReplicated.sort(),
  }
  const changed = previous === null || placementSignature(previous) !== placementSignature(draft)
  return changed
    ? { ...draft, version: (previous?.version ?? 0) + 1 }
    : { ...draft, version: previous.version }
}

/**
 * Entries of a zone's hot set a plan keeps (the hottest). The plan is stored as one Durable Object row,
 * which production refuses over 2 MB: 32 zones each naming all 256 planned dependencies (≈200 bytes an
 * id) came to ≈1.6 MB on top of the entries' ≈0.9 MB. An edge warms at most `maxWarmPerZone` of them per
 * plan version, so nothing changes up to the default 32 and up to 64; `maxWarmPerZone` above 64 (it goes
 * to 1000) now warms 64 (README, ADR 0011 amended 2026-11-26).
 */
export const MAX_HOT_PER_ZONE = 64

/** Dependencies whose forecast in `zone` reaches the prefetch threshold, hottest first, at most MAX_HOT_PER_ZONE. */
export function hotSet(deps: readonly PlanDependency[], zone: string, threshold: number): string[] {
  return deps
    .filter((d) => (d.demand[zone] ?? 0) > 0 && (d.demand[zone] ?? 0) >= threshold)
    .sort((a, b) => (b.demand[zone] ?? 0) - (a.demand[zone] ?? 0) || (a.id < b.id ? -1 : 1))
    .slice(0, MAX_HOT_PER_ZONE)
    .map((d) => d.id)
}

/** What decides whether a plan is a new version: placement, activation and hot sets, not demand noise. */
export function placementSignature(plan: PlanShape): string {
  return JSON.stringify([
    plan.prefetchThreshold,
    plan.entries.map((e) => [e.id, e.sha256, e.replicas, e.active]),
    plan.zones.map((z) => [z.id, z.hot]),
  ])
}

export interface ReplicaChange {
  entry: string
  key: string
  zone: string
  bytes: number
  sha256: string
}

export interface PlanDiff {
  add: ReplicaChange[]
  remove: ReplicaChange[]
}

/**
 * Replica changes from `prev` to `next`: a replica to add for every (entry, zone) planned now and not
 * before, one to remove for every (entry, zone) planned before and not now. A changed sha256 under the
 * same id replaces the replica (remove + add).
 */
export function diffPlans(prev: PlanShape | null, next: PlanShape): PlanDiff {
  const before = new Map((prev?.entries ?? []).map((e) => [e.id, e]))
  const after = new Map(next.entries.map((e) => [e.id, e]))
  const add: ReplicaChange[] = []
  const remove: ReplicaChange[] = []
  const change = (e: PlannedEntry, zone: string): ReplicaChange => ({
    entry: e.id,
    key: e.key,
    zone,
    bytes: e.size,
    sha256: e.sha256,
  })
  for (const e of next.entries) {
    const old = before.get(e.id)
    const had = old !== undefined && old.sha256 === e.sha256 ? old.replicas : []
    for (const z of e.replicas) if (!had.includes(z)) add.push(change(e, z))
  }
  for (const e of prev?.entries ?? []) {
    const now = after.get(e.id)
    const keeps = now !== undefined && now.sha256 === e.sha256 ? now.replicas : []
    for (const z of e.replicas) if (!keeps.includes(z)) remove.push(change(e, z))
  }
  return { add, remove }
}

/** Bytes a diff copies into zones (what a re-plan costs). */
export const bytesToMove = (diff: PlanDiff): number => diff.add.reduce((s, c) => s + c.bytes, 0)

/** The zone a replica is served from for a request in `zone`: only an active (verified) one. */
export function servingZone(entry: Pick<PlannedEntry, 'active'> | undefined, zone: string): string | null {
  return entry?.active.includes(zone) ? zone : null
}
