/**
 * Builds a client's PrefetchQueue: candidates from the region summary, the client's own recent uses and
 * installed set, channel heads newer than what it has (scheduled updates) and declared manifest
 * dependencies; scored with predict and filled into the client's byte budget.
 */
import { gt as semverGt } from 'semver'
import type { AccessSummary, ManifestEntry, PrefetchCandidate, ScheduledUpdate } from '../predict/index.ts'
import { buildPrefetchQueue, calculateArtifactProbabilities } from '../predict/index.ts'
import type { ArtifactManifest } from '../schemas/manifest.ts'
import type { PrefetchItem, PrefetchQueue } from '../schemas/prefetch.ts'
import type { RolloutPrefetchHint } from '../schemas/rollout.ts'
import type { Catalog } from './catalog-types.ts'
import { cheapestPlan } from './transfer-plan.ts'

/** How far ahead a queue looks: the agent stages during the next idle day. */
export const PREFETCH_HORIZON_MS = 24 * 3_600_000
/**
 * Artifacts looked up in R2 per queue (two reads each, cached per request); bounds the cost of one
 * request. Installed names come first, so a device with a few hundred packages gets every update checked.
 */
export const MAX_CANDIDATE_NAMES = 256
const MIN_PROBABILITY = 0.01
/**
 * Something the client does not have yet is staged only when it is likely: regional popularity alone
 * (the historical term) otherwise fills budgets with packages nobody on this device will ask for
 * (bench/prefetch measured most of the wasted bytes there). New dependencies of a scheduled update
 * inherit its high probability and still pass.
 */
const MIN_PROBABILITY_NOT_INSTALLED = 0.25
const MAX_ITEMS = 256

export interface PlannerInput {
  clientId: string
  now: number
  validForMs: number
  summary: AccessSummary
  population: number
  recent: { artifact: string; at: number }[]
  installed: { artifact: string; version: string }[]
  channel: string
  budgetBytes: number
  catalog: Catalog
  /**
   * The rollout of `name` on the channel, as it concerns this client (RolloutCoordinator.prefetchHint);
   * null when there is none. Asked only for installed artifacts with a newer channel head.
   */
  rollouts?: (name: string) => Promise<RolloutPrefetchHint | null>
}

/**
 * The rollout's word on `name`, or `unknown` when its coordinator cannot be asked (an overloaded or
 * restarting object). Unknown counts as hold for this artifact only: a rollout might be holding the
 * client back, and one failing coordinator must not fail the whole queue.
 */
async function askRollout(
  input: PlannerInput,
  name: string,
): Promise<RolloutPrefetchHint | null | 'unknown'> {
  try {
    return (await input.rollouts?.(name)) ?? null
  } catch (error) {
    console.log(
      JSON.stringify({ level: 'warn', msg: 'rollout hint unavailable', name, error: String(error) }),
    )
    return 'unknown'
  }
}

/** Names worth a lookup: what the client has (updates come from there), uses, then the region's hottest. */
function seedNames(input: PlannerInput): string[] {
  const names = new Set<string>()
  for (const i of input.installed) names.add(i.artifact)
  for (const r of [...input.recent].reverse()) names.add(r.artifact)
  for (const a of input.summary.artifacts) names.add(a.artifact)
  return [...names]
}

export async function planPrefetch(input: PlannerInput): Promise<PrefetchQueue> {
  const { catalog, channel, now } = input
  const installed = new Map(input.installed.map((i) => [i.artifact, i.version]))
  const scheduled: ScheduledUpdate[] = []
  const manifestEntries: ManifestEntry[] = []
  const heads = new Map<string, string>()
  /** Rollout targets staged before this client's stage begins: when they become installable. */
  const scheduledAt = new Map<string, number>()

  // Breadth-first over seeds and their declared dependencies, bounded by MAX_CANDIDATE_NAMES lookups.
  const queue = seedNames(input)
  const seen = new Set(queue)
  for (let i = 0; i < queue.length && i < MAX_CANDIDATE_NAMES; i++) {
    const name = queue[i] ?? ''
    const head = await catalog.head(name, channel)
    if (head === null) continue
    heads.set(name, head.version)
    const have = installed.get(name)
    // A device ahead of the channel (a beta, an `install --to`) has nothing to gain from its head, and its
    // own version's dependencies are the ones that matter.
    if (have !== undefined && semverGt(have, head.version)) heads.set(name, have)
    // A channel head newer than the installed version is an update the client will be offered, unless a
    // staged rollout decides: its target once this client's stage is in reach, nothing new before.
    if (have !== undefined && have !== head.version && semverGt(head.version, have)) {
      // A rollout holds a client on what it runs, but never on a yanked version: the channel decides for
      // it then (ADR 0024, as the agent's rollout gate does), so its newer head is worth staging.
      const held = await askRollout(input, name)
      const rollout =
        held !== null && held !== 'unknown' && held.action === 'hold' && (await catalog.yanked(name, have))
          ? null
          : held
      if (
        rollout === 'unknown' ||
        rollout?.action === 'hold' ||
        (rollout !== null && !semverGt(rollout.version, have))
      ) {
        heads.set(name, have)
        continue
      }
      const version = rollout?.version ?? head.version
      heads.set(name, version)
      if (rollout !== null && rollout.at > now) scheduledAt.set(name, rollout.at)
      scheduled.push({
        artifact: name,
        version,
        // predict counts a schedule only inside its horizon; a next stage further out still stages now.
        startsAt: rollout === null ? head.createdAt : Math.min(rollout.at, now + PREFETCH_HORIZON_MS),
        cohortProbability: 1,
      })
    }
    const manifest = await catalog.manifest(name, heads.get(name) ?? head.version)
    if (manifest === null || manifest.dependencies.length === 0) continue
    manifestEntries.push({
      artifact: name,
      version: heads.get(name) ?? head.version,
      // Ranges are resolved to channel heads below; predict only needs "which artifact".
      dependsOn: manifest.dependencies.map((d) => ({ artifact: d.name })),
    })
    for (const d of manifest.dependencies) {
      if (!seen.has(d.name)) {
        seen.add(d.name)
        queue.push(d.name)
      }
    }
  }

  const probabilities = calculateArtifactProbabilities({
    now,
    horizonMs: PREFETCH_HORIZON_MS,
    summary: input.summary,
    population: input.population,
    client: { recent: input.recent, installed: input.installed },
    scheduled,
    manifest: manifestEntries,
    options: { minProbability: MIN_PROBABILITY },
  })

  const candidates: (PrefetchCandidate & { manifest: ArtifactManifest; plan: PrefetchItem['plan'] })[] = []
  for (const p of probabilities) {
    const version = p.version ?? heads.get(p.artifact)
    // Unknown to R2 (or not on this channel), or not newer than what the client has: nothing to stage
    // (an older channel head is a downgrade the agent would refuse, a waste of its budget and link).
    const have = installed.get(p.artifact)
    if (version === undefined || (have !== undefined && !semverGt(version, have))) continue
    if (!installed.has(p.artifact) && p.probability < MIN_PROBABILITY_NOT_INSTALLED) continue
    const manifest = await catalog.manifest(p.artifact, version)
    if (manifest === null) continue
    const plan = cheapestPlan(manifest, installed.get(p.artifact))
    candidates.push({
      artifact: p.artifact,
      version,
      probability: p.probability,
      confidence: p.confidence,
      // The staging area keeps the whole artifact either way; the link carries the plan's bytes, and
      // those are what a later update would otherwise have waited for.
      bytes: manifest.size,
      bytesSaved: plan.size,
      networkCost: plan.size,
      manifest,
      plan,
    })
  }

  const built = buildPrefetchQueue(candidates, {
    now,
    budgetBytes: input.budgetBytes,
    minProbability: MIN_PROBABILITY,
  })
  const planOf = new Map(candidates.map((c) => [`${c.artifact}\u0000${c.version}`, c.plan]))
  const items: PrefetchItem[] = []
  for (const q of built.queue.slice(0, MAX_ITEMS)) {
    const plan = planOf.get(`${q.artifact}\u0000${q.version}`)
    if (plan === undefined || q.version === undefined) continue
    items.push({
      name: q.artifact,
      version: q.version,
      probability: q.probability,
      confidence: q.confidence ?? 0,
      // A zero-byte artifact scores +Infinity in predict; JSON needs a finite number.
      expectedValue: Number.isFinite(q.score) ? q.score : q.probability,
      plan,
      ...(scheduledAt.has(q.artifact) && heads.get(q.artifact) === q.version
        ? { scheduledAt: new Date(scheduledAt.get(q.artifact) ?? now).toISOString() }
        : {}),
    })
  }
  return {
    clientId: input.clientId,
    generatedAt: new Date(now).toISOString(),
    validUntil: new Date(now + input.validForMs).toISOString(),
    items,
  }
}
