/**
 * Turns what we know about a region and a client into "how likely is this client to need artifact X in the
 * next horizon", then into a byte-budgeted prefetch queue. The formula is documented in
 * docs/decisions/0006-forecasting-and-placement.md; in short each source of evidence yields an independent
 * probability and they are combined with a noisy-OR.
 */
import type { AccessSummary } from './access-model.ts'
import { meanSeasonalFactor, nextUsesIndex } from './access-model.ts'
import { counterAt, rateFromDecayedCount } from './decay.ts'

/** An artifact, optionally pinned to a version. */
export interface ArtifactRef {
  artifact: string
  version?: string
}

/** A rollout that will (or did) start offering `version` at `startsAt` to a cohort. */
export interface ScheduledUpdate {
  artifact: string
  version: string
  startsAt: number
  /** Probability this client is in the cohort: 1 for everyone, 0.1 for a 10 % canary. */
  cohortProbability: number
}

/** Declared by a published manifest: installing `artifact` (at `version`, if given) needs `dependsOn`. */
export interface ManifestEntry {
  artifact: string
  version?: string
  dependsOn: ArtifactRef[]
}

export interface ClientContext {
  /** What the client used recently (epoch ms), any order. */
  recent: { artifact: string; at: number }[]
  /** What the client has installed, with versions. */
  installed: { artifact: string; version: string }[]
}

export interface ProbabilityOptions {
  /** Pseudo-requests per hour-of-week bucket that shrink seasonal factors towards 1. */
  seasonalPrior?: number
  /** Evidence count at which a component's confidence reaches 1/2. */
  confidenceHalfAt?: number
  /** Rounds of manifest dependency expansion (dependency chains longer than this are cut). */
  dependencyDepth?: number
  /** Drop results below this probability. */
  minProbability?: number
}

export interface ProbabilityInput {
  now: number
  /** How far ahead the prediction looks, e.g. the next prefetch window. */
  horizonMs: number
  summary: AccessSummary
  /** Number of clients the summary's counts come from, to turn regional counts into per-client rates. */
  population: number
  client: ClientContext
  scheduled?: ScheduledUpdate[]
  manifest?: ManifestEntry[]
  options?: ProbabilityOptions
}

/** Each source's probability before combination, kept for explanations and tuning. */
export interface ProbabilityComponents {
  historical: number
  scheduled: number
  markov: number
  dependency: number
  /** The seasonal multiplier applied to the historical rate (1 = an average hour). */
  seasonalFactor: number
}

export interface ArtifactProbability {
  artifact: string
  /** Target version when a schedule or manifest names one. */
  version?: string
  /** P(the client requests it within the horizon). */
  probability: number
  /** 0..1: probability-weighted evidence strength of the components that contributed. */
  confidence: number
  components: ProbabilityComponents
}

export interface Evidence {
  p: number
  confidence: number
}

/** Noisy-OR: the artifact is needed if any independent reason fires. */
const anyOf = (ps: readonly number[]) => 1 - ps.reduce((q, p) => q * (1 - p), 1)

/** Combined confidence: each component's confidence weighted by how much probability it contributes. */
function blendConfidence(parts: readonly Evidence[]): number {
  const mass = parts.reduce((s, e) => s + e.p, 0)
  return mass > 0 ? parts.reduce((s, e) => s + e.p * e.confidence, 0) / mass : 0
}

const clamp01 = (x: number) => Math.min(1, Math.max(0, Number.isFinite(x) ? x : 0))

/**
 * Does manifest `entry` describe the version of its artifact that would be fetched? A known target
 * version must match. Without one, a request for the artifact is an update, so the installed version's
 * entry is excluded (its dependencies are already satisfied) and any other version's entry applies.
 */
function entryApplies(
  entry: ManifestEntry,
  targetVersion: string | undefined,
  installed: ReadonlyMap<string, string>,
): boolean {
  if (entry.version === undefined) return true
  if (targetVersion !== undefined) return entry.version === targetVersion
  return installed.get(entry.artifact) !== entry.version
}

/** Dependency evidence per reached artifact, with the version the manifest asks for. */
export type DependencyEvidence = Map<string, Evidence & { version?: string }>

/** What `expandDependencies` needs: the roots (in the order their evidence is combined) and the graph. */
export interface DependencyExpansionInput {
  roots: readonly string[]
  rootEvidence: (name: string) => Evidence
  rootVersion: (name: string) => string | undefined
  installed: ReadonlyMap<string, string>
  manifest: readonly ManifestEntry[]
  maxDepth: number
}

function indexManifest(manifest: readonly ManifestEntry[]): Map<string, ManifestEntry[]> {
  const entriesOf = new Map<string, ManifestEntry[]>()
  for (const entry of manifest) {
    const list = entriesOf.get(entry.artifact)
    if (list === undefined) entriesOf.set(entry.artifact, [entry])
    else list.push(entry)
  }
  return entriesOf
}

const needsDependency = (installed: ReadonlyMap<string, string>, dep: ArtifactRef) =>
  dep.version === undefined ? !installed.has(dep.artifact) : installed.get(dep.artifact) !== dep.version

function combineRoots(reached: Map<string, { roots: Evidence[]; version?: string }>): DependencyEvidence {
  return new Map(
    [...reached].map(([name, slot]) => [
      name,
      {
        p: anyOf(slot.roots.map((e) => e.p)),
        confidence: blendConfidence(slot.roots),
        ...(slot.version === undefined ? {} : { version: slot.version }),
      },
    ]),
  )
}

/**
 * The reference expansion: a breadth-first walk from every root, so roots x edges. Exported for the
 * equivalence test and bench/prefetch; `expandDependencies` uses it only for graphs the closure cannot
 * take (one artifact asked for at two different versions, see `expandDependenciesByClosure`).
 */
export function expandDependenciesPerRoot(input: DependencyExpansionInput): DependencyEvidence {
  const { installed, maxDepth } = input
  const entriesOf = indexManifest(input.manifest)
  const reached = new Map<string, { roots: Evidence[]; version?: string }>()
  for (const root of input.roots) {
    const evidence = input.rootEvidence(root)
    if (evidence.p <= 0 || !entriesOf.has(root)) continue
    const seen = new Set([root])
    let frontier: { name: string; version?: string }[] = [{ name: root, version: input.rootVersion(root) }]
    for (let depth = 0; depth < maxDepth && frontier.length > 0; depth++) {
      const next: typeof frontier = []
      for (const node of frontier) {
        for (const entry of entriesOf.get(node.name) ?? []) {
          if (!entryApplies(entry, node.version, installed)) continue
          for (const dep of entry.dependsOn) {
            if (seen.has(dep.artifact) || !needsDependency(installed, dep)) continue
            seen.add(dep.artifact)
            const slot = reached.get(dep.artifact) ?? { roots: [] }
            slot.roots.push(evidence)
            if (slot.version === undefined && dep.version !== undefined) slot.version = dep.version
            reached.set(dep.artifact, slot)
            next.push({ name: dep.artifact, version: dep.version })
          }
        }
      }
      frontier = next
    }
  }
  return combineRoots(reached)
}

/**
 * The same result as `expandDependenciesPerRoot` from one memoised closure: with every needed reference
 * to an artifact naming the same version (what the edge's planner sends: versionless references), where
 * a walk reaches an artifact does not change what it pulls in, so "within k steps of X" is computed once
 * per artifact and level as a bitset, ball_k(X) = {X} + the union of ball_(k-1) over X's dependencies,
 * and a root reaches the union of its dependencies' balls. Work is levels x edges x (artifacts / 32)
 * words instead of roots x edges map operations. Returns null when the graph does not qualify:
 * - a needed artifact referenced at two versions (a walk's first arrival would pick which entries apply);
 * - a root that is itself a dependency and, at the version references ask for, needs something its own
 *   version does not (a walk from that root never passes through itself; the closure would).
 */
export function expandDependenciesByClosure(input: DependencyExpansionInput): DependencyEvidence | null {
  const { installed } = input
  const levels = input.maxDepth > 0 ? Math.ceil(input.maxDepth) : 0
  if (levels === 0) return new Map()
  const entriesOf = indexManifest(input.manifest)

  // One version per needed artifact, and an id per artifact a walk can reach.
  const versionOf = new Map<string, string | undefined>()
  for (const entry of input.manifest) {
    for (const dep of entry.dependsOn) {
      if (!needsDependency(installed, dep)) continue
      if (versionOf.has(dep.artifact) && versionOf.get(dep.artifact) !== dep.version) return null
      versionOf.set(dep.artifact, dep.version)
    }
  }
  const names = [...versionOf.keys()]
  const idOf = new Map(names.map((name, i) => [name, i]))
  const needed = (name: string, version: string | undefined): number[] => {
    const out = new Set<number>()
    for (const entry of entriesOf.get(name) ?? []) {
      if (!entryApplies(entry, version, installed)) continue
      for (const dep of entry.dependsOn) {
        const id = idOf.get(dep.artifact)
        if (id !== undefined && needsDependency(installed, dep)) out.add(id)
      }
    }
    return [...out]
  }
  const edges = names.map((name) => needed(name, versionOf.get(name)))

  const words = (names.length + 31) >>> 5
  let ball = new Uint32Array(names.length * words)
  for (let i = 0; i < names.length; i++) {
    const w = i * words + (i >>> 5)
    ball[w] = (ball[w] as number) | (1 << (i & 31))
  }
  // ball_k for k = 0 .. levels - 1; stops early once no ball grows (a cycle or a short graph).
  for (let k = 1; k < levels; k++) {
    const next = ball.slice()
    for (let i = 0; i < names.length; i++) {
      const at = i * words
      for (const j of edges[i] ?? []) {
        const from = j * words
        for (let w = 0; w < words; w++) next[at + w] = (next[at + w] as number) | (ball[from + w] as number)
      }
    }
    const grew = next.some((word, w) => word !== ball[w])
    ball = next
    if (!grew) break
  }

  const rootsOf: Evidence[][] = names.map(() => [])
  const order: number[] = []
  const union = new Uint32Array(words)
  for (const root of input.roots) {
    const evidence = input.rootEvidence(root)
    if (evidence.p <= 0 || !entriesOf.has(root)) continue
    const direct = needed(root, input.rootVersion(root))
    const self = idOf.get(root)
    if (self !== undefined) {
      const own = new Set(direct)
      if ((edges[self] ?? []).some((j) => !own.has(j))) return null
    }
    union.fill(0)
    for (const j of direct)
      for (let w = 0; w < words; w++) union[w] = (union[w] as number) | (ball[j * words + w] as number)
    if (self !== undefined) union[self >>> 5] = (union[self >>> 5] as number) & ~(1 << (self & 31))
    for (let w = 0; w < words; w++) {
      let bits = union[w] ?? 0
      while (bits !== 0) {
        const low = bits & -bits
        const i = w * 32 + (31 - Math.clz32(low))
        bits ^= low
        const slot = rootsOf[i] ?? []
        if (slot.length === 0) order.push(i)
        slot.push(evidence)
      }
    }
  }
  const reached = new Map<string, { roots: Evidence[]; version?: string }>()
  for (const i of order) {
    const name = names[i] ?? ''
    const version = versionOf.get(name)
    reached.set(name, { roots: rootsOf[i] ?? [], ...(version === undefined ? {} : { version }) })
  }
  return combineRoots(reached)
}

/**
 * Dependency evidence per reached artifact: the noisy-OR over the distinct roots that reach it within
 * `maxDepth` steps, stopping at what is installed. The closure when the graph allows (always for the
 * planner's versionless references), else the per-root walk; both give the same result.
 */
export function expandDependencies(input: DependencyExpansionInput): DependencyEvidence {
  return expandDependenciesByClosure(input) ?? expandDependenciesPerRoot(input)
}

/**
 * Per-artifact request probabilities for one client over [now, now + horizonMs), from:
 * (a) historical frequency: regional decayed count -> per-client Poisson rate -> P(at least one request);
 * (d) scaled by the hour-of-week seasonal factor of the window;
 * (b) scheduled updates starting before the window ends: the cohort probability, unless already installed;
 * (c) first-order Markov from recent uses, with an exponential lag model, and declared manifest
 *     dependencies of anything likely (not yet installed at the required version), expanded a few rounds.
 * Results are sorted by probability (then id) and JSON-friendly.
 */
export function calculateArtifactProbabilities(input: ProbabilityInput): ArtifactProbability[] {
  const { now, horizonMs, summary, client } = input
  const options = input.options ?? {}
  const halfAt = options.confidenceHalfAt ?? 20
  const evidenceConfidence = (n: number) => n / (n + halfAt)
  const installed = new Map(client.installed.map((i) => [i.artifact, i.version]))

  const historical = new Map<string, Evidence>()
  const scheduled = new Map<string, Evidence & { version: string }>()
  const markov = new Map<string, Evidence>()
  const names = new Set<string>()

  // (a) + (d)
  const seasonal = meanSeasonalFactor(summary.profile, now, now + horizonMs, options.seasonalPrior ?? 5)
  const population = Math.max(1, input.population)
  for (const a of summary.artifacts) {
    const count = counterAt(a, now, summary.halfLifeMs)
    const perClientRate = rateFromDecayedCount(count, summary.halfLifeMs) / population
    const p = 1 - Math.exp(-perClientRate * horizonMs * seasonal)
    if (p > 0) {
      historical.set(a.artifact, { p: clamp01(p), confidence: evidenceConfidence(count) })
      names.add(a.artifact)
    }
  }

  // (b) Scheduled updates; the highest-probability schedule per artifact wins.
  for (const s of input.scheduled ?? []) {
    if (s.startsAt > now + horizonMs || installed.get(s.artifact) === s.version) continue
    const p = clamp01(s.cohortProbability)
    if (p > (scheduled.get(s.artifact)?.p ?? 0)) {
      scheduled.set(s.artifact, { p, confidence: 1, version: s.version })
      names.add(s.artifact)
    }
  }

  // (c) Markov. With lags ~ Exp(mean m), a follow-up not seen after `elapsed` still comes with probability
  // p S / (1 - p + p S), S = exp(-elapsed / m), and lands inside the horizon with 1 - exp(-horizon / m).
  const lastUse = new Map<string, number>()
  for (const r of client.recent) lastUse.set(r.artifact, Math.max(lastUse.get(r.artifact) ?? r.at, r.at))
  const markovParts = new Map<string, Evidence[]>()
  const nextUses = nextUsesIndex(summary, now)
  for (const [from, at] of lastUse) {
    const elapsed = Math.max(0, now - at)
    if (elapsed > summary.limits.maxLagMs) continue
    for (const next of nextUses(from)) {
      if ((lastUse.get(next.to) ?? Number.NEGATIVE_INFINITY) >= at) continue
      const mean = Math.max(1, next.meanLagMs)
      const survive = Math.exp(-elapsed / mean)
      const still = (next.probability * survive) / (1 - next.probability + next.probability * survive)
      const p = clamp01(still * (1 - Math.exp(-horizonMs / mean)))
      if (p <= 0) continue
      const parts = markovParts.get(next.to) ?? []
      parts.push({ p, confidence: evidenceConfidence(next.support) })
      markovParts.set(next.to, parts)
      names.add(next.to)
    }
  }
  for (const [to, parts] of markovParts) {
    markov.set(to, { p: anyOf(parts.map((e) => e.p)), confidence: blendConfidence(parts) })
  }

  const direct = (name: string): Evidence[] =>
    [historical.get(name), scheduled.get(name), markov.get(name)].filter((e) => e !== undefined)

  // (c) Manifest dependencies. Each artifact with direct evidence is a root; walking its declared
  // dependencies (up to `dependencyDepth` levels, stopping at what is installed) finds everything it
  // would pull in. A dependency's probability is the noisy-OR over the distinct roots that reach it, so
  // each root's evidence counts once: a cycle (A needs B, B needs A) cannot feed on itself, and diamonds
  // do not double count.
  const dependency = expandDependencies({
    roots: [...names].sort(),
    rootEvidence: (name) => {
      const parts = direct(name)
      return { p: anyOf(parts.map((e) => e.p)), confidence: blendConfidence(parts) }
    },
    rootVersion: (name) => scheduled.get(name)?.version,
    installed,
    manifest: input.manifest ?? [],
    maxDepth: options.dependencyDepth ?? 3,
  })
  for (const name of dependency.keys()) names.add(name)
  const versionOf = (name: string) => scheduled.get(name)?.version ?? dependency.get(name)?.version

  const results: ArtifactProbability[] = []
  for (const name of names) {
    const dep = dependency.get(name)
    const parts = [...direct(name), dep].filter((e) => e !== undefined)
    const probability = clamp01(anyOf(parts.map((e) => e.p)))
    if (probability <= (options.minProbability ?? 0)) continue
    const version = versionOf(name)
    results.push({
      artifact: name,
      ...(version === undefined ? {} : { version }),
      probability,
      confidence: clamp01(blendConfidence(parts)),
      components: {
        historical: historical.get(name)?.p ?? 0,
        scheduled: scheduled.get(name)?.p ?? 0,
        markov: markov.get(name)?.p ?? 0,
        dependency: dep?.p ?? 0,
        seasonalFactor: seasonal,
      },
    })
  }
  return results.sort((a, b) => b.probability - a.probability || (a.artifact < b.artifact ? -1 : 1))
}

/** Something worth downloading ahead of time. */
export interface PrefetchCandidate extends ArtifactRef {
  probability: number
  confidence?: number
  /** Bytes the prefetch downloads (counts against the budget). */
  bytes: number
  /** Bytes not transferred at request time if the prefetch is used; defaults to `bytes`. */
  bytesSaved?: number
  /** Cost of fetching now, in any unit consistent across candidates; defaults to `bytes` (cost per byte 1). */
  networkCost?: number
  /** Cannot be fetched before this time (e.g. a rollout not yet published). */
  availableAt?: number
}

export interface QueueOptions {
  now: number
  budgetBytes: number
  minProbability?: number
  minConfidence?: number
}

export type SkipReason = 'budget' | 'low-probability' | 'low-confidence' | 'not-yet-available' | 'duplicate'

export interface QueuedPrefetch extends PrefetchCandidate {
  /** probability x bytesSaved / networkCost: expected saving per unit of cost spent now. */
  score: number
  /** Budget used up to and including this entry. */
  cumulativeBytes: number
}

export interface PrefetchQueue {
  queue: QueuedPrefetch[]
  skipped: (ArtifactRef & { reason: SkipReason })[]
  usedBytes: number
}

const refKey = (c: ArtifactRef) => `${c.artifact}\u0000${c.version ?? ''}`

type Scored = PrefetchCandidate & { score: number }

/**
 * Queue order, best first: score, then probability, fewer bytes, confidence, more bytes saved, lower
 * cost, id. Also picks between duplicates, so which copy is kept does not depend on the input order.
 */
function rank(a: Scored, b: Scored): number {
  return (
    // Equal infinite scores subtract to NaN, which is falsy and falls through to the next criterion.
    b.score - a.score ||
    b.probability - a.probability ||
    a.bytes - b.bytes ||
    (b.confidence ?? 1) - (a.confidence ?? 1) ||
    (b.bytesSaved ?? b.bytes) - (a.bytesSaved ?? a.bytes) ||
    (a.networkCost ?? a.bytes) - (b.networkCost ?? b.bytes) ||
    (refKey(a) < refKey(b) ? -1 : refKey(a) > refKey(b) ? 1 : 0)
  )
}

/**
 * Orders candidates by expected value per cost, score = probability x bytesSaved / networkCost, and fills
 * the byte budget greedily: a candidate that does not fit is skipped and smaller ones further down still
 * get a chance (greedy by value density is the standard knapsack approximation). Ties: higher probability,
 * then fewer bytes, then id, so the queue is deterministic.
 */
export function buildPrefetchQueue(
  candidates: readonly PrefetchCandidate[],
  options: QueueOptions,
): PrefetchQueue {
  const skipped: PrefetchQueue['skipped'] = []
  const skip = (c: ArtifactRef, reason: SkipReason) =>
    skipped.push({ artifact: c.artifact, ...(c.version === undefined ? {} : { version: c.version }), reason })

  const best = new Map<string, Scored>()
  for (const c of candidates) {
    if (c.probability <= (options.minProbability ?? 0)) skip(c, 'low-probability')
    else if ((c.confidence ?? 1) < (options.minConfidence ?? 0)) skip(c, 'low-confidence')
    else if (c.availableAt !== undefined && c.availableAt > options.now) skip(c, 'not-yet-available')
    else {
      const cost = c.networkCost ?? c.bytes
      const score = cost > 0 ? (c.probability * (c.bytesSaved ?? c.bytes)) / cost : Number.POSITIVE_INFINITY
      const key = refKey(c)
      const scored = { ...c, score }
      const previous = best.get(key)
      if (previous === undefined) best.set(key, scored)
      else if (rank(scored, previous) < 0) {
        skip(previous, 'duplicate')
        best.set(key, scored)
      } else skip(c, 'duplicate')
    }
  }

  const ordered = [...best.values()].sort(rank)
  const queue: QueuedPrefetch[] = []
  let used = 0
  for (const c of ordered) {
    if (used + c.bytes > options.budgetBytes) {
      skip(c, 'budget')
      continue
    }
    used += c.bytes
    queue.push({ ...c, cumulativeBytes: used })
  }
  return { queue, skipped, usedBytes: used }
}
