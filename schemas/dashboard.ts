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
