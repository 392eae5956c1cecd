import { z } from 'zod'
import { ArtifactName } from './common.ts'

/**
 * The operator dashboard's own wire and storage shapes (workers/dashboard/, docs/decisions/0014-dashboard.md).
 */

/** The body of `POST /dashboard/login` (application/x-www-form-urlencoded). */
export const DashboardLoginForm = z.object({ token: z.string().min(1).max(512) })
export type DashboardLoginForm = z.infer<typeof DashboardLoginForm>

/**
 * One artifact's prefetch counters in a region (RegionAggregator `prefetch_hits` table, RPC
 * `prefetchHits()`): version switches reported, and how many of them used a prefetched version.
 */
export const PrefetchTally = z.object({
  artifact: ArtifactName,
  /** `install` + `update` events. */
  deliveries: z.number().int().nonnegative(),
  /** `prefetch-hit` events. */
  hits: z.number().int().nonnegative(),
})
export type PrefetchTally = z.infer<typeof PrefetchTally>

/** Most used artifacts asked of one region at most (RPC `hotArtifacts(limit)`). */
export const MAX_HOT_ARTIFACTS = 50

/**
 * What the dashboard shows of a region's usage (RegionAggregator RPC `hotArtifacts(limit)`): its client
 * count and its most used artifacts by decayed count, most used first.
 */
export const RegionHotArtifacts = z.object({
  population: z.number().int().nonnegative(),
  hot: z.array(z.object({ artifact: ArtifactName, count: z.number().nonnegative() })).max(MAX_HOT_ARTIFACTS),
})
export type RegionHotArtifacts = z.infer<typeof RegionHotArtifacts>

/** Top artifacts listed at most in a region's prefetch totals (RPC `prefetchTotals(top)`). */
export const MAX_PREFETCH_TOP = 50

/**
 * A region's prefetch counters summed over every artifact, with the `top` most delivered artifacts
 * (RegionAggregator RPC `prefetchTotals(top)`).
 */
export const PrefetchTotals = z.object({
  deliveries: z.number().int().nonnegative(),
  hits: z.number().int().nonnegative(),
  top: z.array(PrefetchTally).max(MAX_PREFETCH_TOP),
})
export type PrefetchTotals = z.infer<typeof PrefetchTotals>
