import { describe, expect, it } from 'vitest'
import type { DeltaRef } from '../../schemas/manifest.ts'
import { edgeKey, type PlannerInput, planUpdate, type VersionNode } from './planner.ts'

const H = 'a'.repeat(64)
const ref = (from: string, size: number, method: DeltaRef['method'] = 'vcdiff'): DeltaRef => ({
  from,
  method,
  size,
  sha256: H,
})
const node = (version: string, size: number, deltas: DeltaRef[] = []): VersionNode => ({
  version,
  size,
  sha256: H,
  chunkIndex: null,
  deltas,
})

function input(versions: VersionNode[], over: Partial<PlannerInput> = {}): PlannerInput {
  return {
    installed: '1.0.0',
    target: '1.3.0',
    versions,
    methods: ['vcdiff', 'approx'],
    maxChainLength: 4,
    edgeCost: (r) => r.size,
    chunkSync: null,
    ...over,
  }
}

// 1.0.0 → 1.1.0 → 1.2.0 → 1.3.0 in small steps, plus a big direct 1.0.0 → 1.3.0.
const graph = [
  node('1.0.0', 1000),
  node('1.1.0', 1000, [ref('1.0.0', 50)]),
  node('1.2.0', 1000, [ref('1.1.0', 60)]),
  node('1.3.0', 1000, [ref('1.2.0', 70), ref('1.0.0', 400), ref('1.0.0', 150, 'approx')]),
]

describe('planUpdate', () => {
  it("takes the cheapest direct delta, honouring the client's methods", () => {
    const plan = planUpdate(input(graph, { installed: '1.2.0' }))
    expect(plan.strategy).toBe('delta')
    expect(plan.steps).toMatchObject([{ kind: 'delta', from: '1.2.0', to: '1.3.0', bytes: 70 }])
    // 150 (approx) beats 400 (vcdiff) and the 180-byte chain; without approx the chain wins.
    expect(planUpdate(input(graph)).steps).toMatchObject([{ kind: 'delta', ref: { method: 'approx' } }])
    const chain = planUpdate(input(graph, { methods: ['vcdiff'] }))
    expect(chain.strategy).toBe('chain')
    expect(chain.totalBytes).toBe(180)
    expect(chain.steps.map((s) => (s.kind === 'delta' ? s.from : ''))).toEqual(['1.0.0', '1.1.0', '1.2.0'])
    expect(chain.considered.map((c) => c.strategy)).toEqual(['chain', 'delta', 'full'])
  })

  it('caps the chain length and falls back to the next cheapest', () => {
    const capped = planUpdate(input(graph, { methods: ['vcdiff'], maxChainLength: 2 }))
    expect(capped.strategy).toBe('delta')
    expect(capped.totalBytes).toBe(400)
    const noDirect = graph.map((n) => (n.version === '1.3.0' ? { ...n, deltas: [ref('1.2.0', 70)] } : n))
    const full = planUpdate(input(noDirect, { maxChainLength: 2 }))
    expect(full.strategy).toBe('full')
    expect(full.steps).toEqual([{ kind: 'full', to: '1.3.0', bytes: 1000 }])
  })

  it('prefers full when deltas cost more, and plans full or chunk-sync for unknown or unreachable bases', () => {
    const heavy = [node('1.0.0', 100), node('1.3.0', 100, [ref('1.0.0', 120)])]
    expect(planUpdate(input(heavy)).strategy).toBe('full')
    expect(planUpdate(input(graph, { installed: null })).strategy).toBe('full')
    const isolated = [node('0.9.0', 1000), ...graph]
    expect(planUpdate(input(isolated, { installed: '0.9.0' })).strategy).toBe('full')
    const sync = planUpdate(input(graph, { installed: null, chunkSync: { bytes: 300, estimate: 'exact' } }))
    expect(sync.strategy).toBe('chunk-sync')
    expect(sync.steps).toEqual([
      { kind: 'chunk-sync', from: null, to: '1.3.0', bytes: 300, estimate: 'exact' },
    ])
  })

  it('offers neither full nor chunk-sync when the target blob was pruned', () => {
    const gone = { targetBlobStored: false, chunkSync: { bytes: 1, estimate: 'exact' as const } }
    expect(planUpdate(input(graph, { ...gone, installed: '1.2.0' })).strategy).toBe('delta')
    expect(planUpdate(input(graph, { ...gone, installed: null }))).toMatchObject({
      strategy: 'unavailable',
      steps: [],
    })
  })

  it('routes around excluded (pruned) edges and finds nothing to do when up to date', () => {
    const excluded = new Set([edgeKey('1.1.0', '1.2.0', 'vcdiff')])
    expect(planUpdate(input(graph, { methods: ['vcdiff'], excluded })).totalBytes).toBe(400)
    expect(planUpdate(input(graph, { installed: '1.3.0' })).strategy).toBe('none')
  })

  it('prices edges with the framing cost it is given (per-stream overhead penalises chains)', () => {
    const framed = planUpdate(input(graph, { methods: ['vcdiff'], edgeCost: (r) => r.size + 200 }))
    expect(framed.strategy).toBe('delta')
    expect(framed.totalBytes).toBe(600)
  })
})
