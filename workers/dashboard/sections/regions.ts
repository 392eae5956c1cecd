import { RegionName } from '../../../schemas/client.ts'
import { runtimeConfigStatus } from '../../config/runtime-config.ts'

/** Regions shown at most, and hot artifacts per region. */
export const MAX_REGIONS = 24
export const HOT_PER_REGION = 8
/** Most delivered artifacts kept per region in the prefetch view. */
export const PREFETCH_TOP_PER_REGION = 5

/**
 * The regions worth asking: those the operator mapped in `regions.map`, the fallback (where unmapped
 * traffic, and all of `wrangler dev`, lands), and those that rolled up to the GlobalAggregator. Without
 * a map clients may name any region, so invented names can outnumber what the page shows: the
 * operator's own regions always make the cut, then the rolled-up ones with the most clients (an
 * invented region has one). Shown in name order.
 */
export async function knownRegions(env: Env): Promise<string[]> {
  const global = env.GLOBAL_AGGREGATOR.get(env.GLOBAL_AGGREGATOR.idFromName('global'))
  const [rolledUp, status] = await Promise.all([global.regions(), runtimeConfigStatus(env)])
  const { map, fallback } = status.inForce.regions
  const byPopulation = [...rolledUp].sort(
    (a, b) => b.population - a.population || a.region.localeCompare(b.region),
  )
  const candidates = [...Object.values(map), fallback, 'global', ...byPopulation.map((r) => r.region)]
  const valid = candidates.flatMap((r) => {
    const parsed = RegionName.safeParse(r.toLowerCase())
    return parsed.success ? [parsed.data] : []
  })
  return [...new Set(valid)].slice(0, MAX_REGIONS).sort()
}

export interface HotArtifact {
  artifact: string
  /** Decayed use count (recent uses weigh most). */
  count: number
}

export interface RegionHotView {
  region: string
  population: number
  hot: HotArtifact[]
}

export interface HotArtifactsView {
  regions: RegionHotView[]
}

/**
 * Each region's most used artifacts, from its RegionAggregator's decayed counts: only the top
 * HOT_PER_REGION leave the object (not its whole summary, which clients can fill to megabytes).
 */
export async function loadHotArtifacts(env: Env, regions: readonly string[]): Promise<HotArtifactsView> {
  const views = await Promise.all(
    regions.map(async (region) => {
      const stub = env.REGION_AGGREGATOR.get(env.REGION_AGGREGATOR.idFromName(region))
      // Already the top HOT_PER_REGION, most used first (ties by name): the object orders them.
      const { population, hot } = await stub.hotArtifacts(HOT_PER_REGION)
      return { region, population, hot }
    }),
  )
  // A region object with no clients and no counts was only created by asking; it says nothing.
  return { regions: views.filter((v) => v.population > 0 || v.hot.length > 0) }
}

export interface PrefetchRegionView {
  region: string
  deliveries: number
  hits: number
  /** hits ÷ deliveries, or null before any delivery. */
  ratio: number | null
  topArtifacts: Array<{ artifact: string; deliveries: number; hits: number }>
}

export interface PrefetchView {
  regions: PrefetchRegionView[]
  total: { deliveries: number; hits: number; ratio: number | null }
}

const ratioOf = (hits: number, deliveries: number) => (deliveries > 0 ? Math.min(1, hits / deliveries) : null)

/** Prefetch hit ratio per region and overall: installs/updates served from a prefetched version. */
export async function loadPrefetch(env: Env, regions: readonly string[]): Promise<PrefetchView> {
  const views = await Promise.all(
    regions.map(async (region): Promise<PrefetchRegionView> => {
      const stub = env.REGION_AGGREGATOR.get(env.REGION_AGGREGATOR.idFromName(region))
      const { deliveries, hits, top } = await stub.prefetchTotals(PREFETCH_TOP_PER_REGION)
      return { region, deliveries, hits, ratio: ratioOf(hits, deliveries), topArtifacts: top }
    }),
  )
  const active = views.filter((v) => v.deliveries > 0 || v.hits > 0)
  const deliveries = active.reduce((s, v) => s + v.deliveries, 0)
  const hits = active.reduce((s, v) => s + v.hits, 0)
  return { regions: active, total: { deliveries, hits, ratio: ratioOf(hits, deliveries) } }
}
