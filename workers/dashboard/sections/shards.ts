import type { ShardMetrics, ShardPlan } from '../../../schemas/shards.ts'

/** Dependencies listed per zone at most. */
export const MAX_ENTRIES_PER_ZONE = 12

export interface ZoneShardView {
  zone: string
  capacityBytes: number
  plannedBytes: number
  /** Dependencies whose replica should be in this zone; `active` once copied, verified and flipped. */
  entries: Array<{ id: string; size: number; active: boolean; demand: number }>
  moreEntries: number
  hot: string[]
  metrics: { requests: number; hitRatio: number; crossZoneFetches: number; smape: number | null } | null
}

export interface ShardsView {
  plan: { version: number; createdAt: string; horizonHours: number; prefetchThreshold: number } | null
  zones: ZoneShardView[]
  underReplicated: string[]
  migrations: ShardMetrics['migrations']
}

export function shardPlanner(env: Env) {
  return env.SHARD_PLANNER.get(env.SHARD_PLANNER.idFromName('global'))
}

/** Pure: the plan and its metrics as one row per zone (exported for tests). */
export function shardsViewOf(plan: ShardPlan | null, metrics: ShardMetrics): ShardsView {
  const zoneIds = [...new Set([...(plan?.zones.map((z) => z.id) ?? []), ...metrics.zones.map((z) => z.zone)])]
  const zones = zoneIds.map((zone): ZoneShardView => {
    const usage = plan?.zones.find((z) => z.id === zone)
    const entries = (plan?.entries ?? [])
      .filter((e) => e.replicas.includes(zone) || e.active.includes(zone))
      .map((e) => ({ id: e.id, size: e.size, active: e.active.includes(zone), demand: e.demand[zone] ?? 0 }))
      .sort((a, b) => b.demand - a.demand || a.id.localeCompare(b.id))
    const m = metrics.zones.find((z) => z.zone === zone)
    return {
      zone,
      capacityBytes: usage?.capacityBytes ?? 0,
      plannedBytes: usage?.plannedBytes ?? 0,
      entries: entries.slice(0, MAX_ENTRIES_PER_ZONE),
      moreEntries: Math.max(0, entries.length - MAX_ENTRIES_PER_ZONE),
      hot: usage?.hot ?? [],
      metrics:
        m === undefined
          ? null
          : {
              requests: m.requests,
              hitRatio: m.hitRatio,
              crossZoneFetches: m.crossZoneFetches,
              smape: m.smape,
            },
    }
  })
  return {
    plan:
      plan === null
        ? null
        : {
            version: plan.version,
            createdAt: plan.createdAt,
            horizonHours: plan.horizonHours,
            prefetchThreshold: plan.prefetchThreshold,
          },
    zones,
    underReplicated: plan?.underReplicated ?? [],
    migrations: metrics.migrations,
  }
}

/** The shard map per zone (ShardPlanner's plan in force) with each zone's serving metrics. */
export async function loadShards(env: Env): Promise<ShardsView> {
  const planner = shardPlanner(env)
  const [plan, metrics] = await Promise.all([planner.plan(), planner.metrics(24)])
  return shardsViewOf(plan, metrics)
}
