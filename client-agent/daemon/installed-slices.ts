import { MAX_INSTALLED_PARAM, MAX_INSTALLED_PARAM_CHARS } from '../../schemas/aggregation.ts'
import type { PrefetchItem, PrefetchQueue } from '../../schemas/prefetch.ts'

/**
 * Longest `installed=` value a poll sends, percent-encoded: half what the edge reads decoded
 * (MAX_INSTALLED_PARAM_CHARS), so the encoded URL also stays far inside what proxies and the edge's
 * front door take (scoped names encode `@` and `/` in three characters each).
 */
export const MAX_INSTALLED_SLICE_CHARS = MAX_INSTALLED_PARAM_CHARS / 2

/**
 * The `installed=` lists a poll sends: every installed artifact's current version (`name@version`),
 * sorted (the same slices every cycle, so repeated polls hit the edge's short queue cache), in slices of
 * at most MAX_INSTALLED_PARAM entries, the most the edge takes per request (schemas/aggregation.ts: what
 * one plan looks up), and MAX_INSTALLED_SLICE_CHARS encoded (128 long names do not fit the edge's
 * bound on the value). One empty slice when nothing is installed: a poll without `installed=`.
 */
export function installedSlices(current: ReadonlyArray<{ name: string; version: string }>): string[][] {
  const slices: string[][] = []
  let slice: string[] = []
  let chars = 0
  for (const ref of current.map((c) => `${c.name}@${c.version}`).sort()) {
    // Each entry after the first adds its comma (%2C).
    const cost = encodeURIComponent(ref).length + (slice.length > 0 ? 3 : 0)
    if (
      slice.length >= MAX_INSTALLED_PARAM ||
      (slice.length > 0 && chars + cost > MAX_INSTALLED_SLICE_CHARS)
    ) {
      slices.push(slice)
      slice = []
      chars = 0
    }
    chars += encodeURIComponent(ref).length + (slice.length > 0 ? 3 : 0)
    slice.push(ref)
  }
  if (slice.length > 0 || slices.length === 0) slices.push(slice)
  return slices
}

/**
 * One queue from the queues the edge planned for each slice (each already verified on its own). Every
 * installed artifact is planned by the slice that reported it: the others' plans never knew its version,
 * so they could only suggest it as new, the whole artifact, where its own slice plans the update from what
 * runs (a delta) and under its rollout. Anything else is kept once per `name@version` (the higher valued
 * plan), and the items are ordered by the edge's own key (expected value, then probability, then fewer
 * bytes). `validUntil` is the latest: the edge asked not to poll any slice again before its own.
 */
export function mergeSliceQueues(
  polled: ReadonlyArray<{ slice: readonly string[]; queue: PrefetchQueue }>,
): PrefetchQueue {
  const [first, ...rest] = polled
  if (first === undefined) throw new Error('mergeSliceQueues: no queue')
  if (rest.length === 0) return first.queue
  const reportedBy = new Map<string, number>()
  for (const [i, { slice }] of polled.entries())
    for (const ref of slice) reportedBy.set(ref.slice(0, ref.lastIndexOf('@')), i)
  const best = new Map<string, PrefetchItem>()
  for (const [i, { queue }] of polled.entries()) {
    for (const item of queue.items) {
      const owner = reportedBy.get(item.name)
      if (owner !== undefined && owner !== i) continue
      const k = `${item.name}@${item.version}`
      const previous = best.get(k)
      if (previous === undefined || byValue(item, previous) < 0) best.set(k, item)
    }
  }
  const validUntil = polled
    .map((p) => p.queue.validUntil)
    .reduce((a, b) => (Date.parse(b) > Date.parse(a) ? b : a))
  return { ...first.queue, validUntil, items: [...best.values()].sort(byValue) }
}

function byValue(a: PrefetchItem, b: PrefetchItem): number {
  return (
    b.expectedValue - a.expectedValue ||
    b.probability - a.probability ||
    a.plan.size - b.plan.size ||
    (a.name < b.name ? -1 : a.name > b.name ? 1 : a.version < b.version ? -1 : a.version > b.version ? 1 : 0)
  )
}
