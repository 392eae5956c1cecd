import type { ChunkIndexRef, DeltaMethod, DeltaRef } from '../../schemas/manifest.ts'
import type { PlanStrategy } from '../../schemas/plan.ts'

/** One published version as the planner sees it; `deltas` are its incoming edges (from its manifest). */
export interface VersionNode {
  version: string
  size: number
  sha256: string
  chunkIndex: ChunkIndexRef | null
  deltas: DeltaRef[]
}

export interface PlannerInput {
  installed: string | null
  target: string
  /** The versions reachable backwards from the target; others are simply absent. */
  versions: readonly VersionNode[]
  methods: readonly DeltaMethod[]
  maxChainLength: number
  /** Wire bytes of a delta edge (the framed stream length); the route knows the framing. */
  edgeCost: (ref: DeltaRef, to: string) => number
  /** Chunk-sync's wire bytes, or null when it is not possible (no chunk index, client cannot). */
  chunkSync: { bytes: number; estimate: 'exact' | 'factor' } | null
  /** False when retention pruned the target's full blob: neither full nor chunk-sync can be served. */
  targetBlobStored?: boolean
  /** Edges known to be unusable (object pruned), as `edgeKey(from, to, method)`. */
  excluded?: ReadonlySet<string>
}

export type PlannedStep =
  | { kind: 'delta'; from: string; to: string; ref: DeltaRef; bytes: number }
  | { kind: 'chunk-sync'; from: string | null; to: string; bytes: number; estimate: 'exact' | 'factor' }
  | { kind: 'full'; to: string; bytes: number }

export interface Plan {
  strategy: PlanStrategy
  totalBytes: number
  steps: PlannedStep[]
  /** Every strategy that was possible, cheapest first. */
  considered: Array<{ strategy: PlanStrategy; bytes: number }>
}

export function edgeKey(from: string, to: string, method: string): string {
  return `${from}\u0000${to}\u0000${method}`
}

interface Edge {
  from: string
  to: string
  ref: DeltaRef
  bytes: number
}

/**
 * The cheapest way, in bytes on the wire, from what the device has to the target: one delta, a chain
 * of deltas (Dijkstra over (version, hops) so the length cap is exact), chunk-sync, or the full
 * artifact. Ties go to the strategy listed first in ORDER (fewer requests, less work on the device).
 */
export function planUpdate(input: PlannerInput): Plan {
  const target = input.versions.find((v) => v.version === input.target)
  if (!target) throw new Error(`the target ${input.target} is not among the versions`)
  if (input.installed === input.target) {
    return { strategy: 'none', totalBytes: 0, steps: [], considered: [{ strategy: 'none', bytes: 0 }] }
  }
  const candidates: Array<{ strategy: PlanStrategy; bytes: number; steps: PlannedStep[] }> = []
  const hasBlob = input.targetBlobStored !== false
  if (hasBlob) {
    candidates.push({
      strategy: 'full',
      bytes: target.size,
      steps: [{ kind: 'full', to: target.version, bytes: target.size }],
    })
  }
  if (input.chunkSync && hasBlob) {
    const { bytes, estimate } = input.chunkSync
    candidates.push({
      strategy: 'chunk-sync',
      bytes,
      steps: [{ kind: 'chunk-sync', from: input.installed, to: target.version, bytes, estimate }],
    })
  }
  if (input.installed !== null) {
    const edges = edgesOf(input)
    const direct = edges
      .filter((e) => e.from === input.installed && e.to === input.target)
      .sort((a, b) => a.bytes - b.bytes)[0]
    if (direct) candidates.push({ strategy: 'delta', bytes: direct.bytes, steps: [deltaStep(direct)] })
    const path = shortestPath(edges, input.installed, input.target, input.maxChainLength)
    if (path && path.length > 1) {
      const bytes = path.reduce((n, e) => n + e.bytes, 0)
      candidates.push({ strategy: 'chain', bytes, steps: path.map(deltaStep) })
    }
  }
  candidates.sort((a, b) => a.bytes - b.bytes || ORDER.indexOf(a.strategy) - ORDER.indexOf(b.strategy))
  const best = candidates[0]
  if (!best) return { strategy: 'unavailable', totalBytes: 0, steps: [], considered: [] }
  return {
    strategy: best.strategy,
    totalBytes: best.bytes,
    steps: best.steps,
    considered: candidates.map(({ strategy, bytes }) => ({ strategy, bytes })),
  }
}

const ORDER: PlanStrategy[] = ['none', 'delta', 'full', 'chunk-sync', 'chain']

function deltaStep(e: Edge): PlannedStep {
  return { kind: 'delta', from: e.from, to: e.to, ref: e.ref, bytes: e.bytes }
}

function edgesOf(input: PlannerInput): Edge[] {
  const methods = new Set(input.methods)
  const edges: Edge[] = []
  for (const node of input.versions) {
    for (const ref of node.deltas) {
      if (!methods.has(ref.method) || input.excluded?.has(edgeKey(ref.from, node.version, ref.method)))
        continue
      edges.push({ from: ref.from, to: node.version, ref, bytes: input.edgeCost(ref, node.version) })
    }
  }
  return edges
}

/**
 * Dijkstra over states (version, hops used). Graphs are small (tens of versions, ≤ 64 deltas each),
 * so a linear scan for the minimum is simpler than a heap and fast enough.
 */
export function shortestPath(
  edges: readonly Edge[],
  from: string,
  to: string,
  maxHops: number,
): Edge[] | null {
  const outgoing = new Map<string, Edge[]>()
  for (const e of edges) outgoing.set(e.from, [...(outgoing.get(e.from) ?? []), e])
  interface State {
    version: string
    hops: number
    cost: number
    via: State | null
    edge: Edge | null
  }
  const key = (version: string, hops: number) => `${version}\u0000${hops}`
  const open = new Map<string, State>([
    [key(from, 0), { version: from, hops: 0, cost: 0, via: null, edge: null }],
  ])
  const done = new Set<string>()
  while (open.size > 0) {
    let current: State | null = null
    for (const s of open.values()) {
      if (!current || s.cost < current.cost || (s.cost === current.cost && s.hops < current.hops)) current = s
    }
    if (!current) break
    open.delete(key(current.version, current.hops))
    done.add(key(current.version, current.hops))
    if (current.version === to) {
      const path: Edge[] = []
      for (let s: State | null = current; s?.edge; s = s.via) path.unshift(s.edge)
      return path
    }
    if (current.hops >= maxHops) continue
    for (const e of outgoing.get(current.version) ?? []) {
      const k = key(e.to, current.hops + 1)
      if (done.has(k)) continue
      const cost = current.cost + e.bytes
      const existing = open.get(k)
      if (!existing || cost < existing.cost) {
        open.set(k, { version: e.to, hops: current.hops + 1, cost, via: current, edge: e })
      }
    }
  }
  return null
}
