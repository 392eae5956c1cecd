import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import type { AccessEvent } from './access-model.ts'
import { emptySummary, recordAccesses } from './access-model.ts'
import type { PrefetchCandidate, ProbabilityInput } from './prefetch-scoring.ts'
import { buildPrefetchQueue, calculateArtifactProbabilities } from './prefetch-scoring.ts'

const MIN = 60_000
const HOUR = 60 * MIN
const NOW = Date.UTC(2026, 10, 23, 12)

/**
 * 100 clients over the last day: every session opens `app`, then 80 % open `plugin-a` 10 min later and
 * 20 % `plugin-b` 30 min later; 5 sessions read `docs`.
 */
function regionEvents(): AccessEvent[] {
  const events: AccessEvent[] = []
  for (let i = 0; i < 100; i++) {
    const start = NOW - 24 * HOUR + i * 13 * MIN
    events.push({ artifact: 'app', at: start, session: `s${i}` })
    if (i % 5 !== 0) events.push({ artifact: 'plugin-a', at: start + 10 * MIN, session: `s${i}` })
    else events.push({ artifact: 'plugin-b', at: start + 30 * MIN, session: `s${i}` })
    if (i % 20 === 0) events.push({ artifact: 'docs', at: start + 60 * MIN, session: `d${i}` })
  }
  return events
}

const summary = recordAccesses(emptySummary('eu', NOW - 24 * HOUR), regionEvents(), NOW)

const input: ProbabilityInput = {
  now: NOW,
  horizonMs: 6 * HOUR,
  summary,
  population: 100,
  client: {
    recent: [{ artifact: 'app', at: NOW - 5 * MIN }],
    installed: [
      { artifact: 'app', version: '1' },
      { artifact: 'libssl', version: '2' },
    ],
  },
  scheduled: [
    { artifact: 'runtime', version: '2', startsAt: NOW + HOUR, cohortProbability: 0.9 },
    { artifact: 'agent', version: '5', startsAt: NOW + 72 * HOUR, cohortProbability: 1 },
    { artifact: 'app', version: '1', startsAt: NOW - HOUR, cohortProbability: 1 },
  ],
  manifest: [
    { artifact: 'runtime', version: '2', dependsOn: [{ artifact: 'libssl', version: '3' }] },
    { artifact: 'runtime', version: '1', dependsOn: [{ artifact: 'legacy-lib' }] },
    { artifact: 'libssl', version: '3', dependsOn: [{ artifact: 'crypto-core', version: '1' }] },
    { artifact: 'app', dependsOn: [{ artifact: 'libssl', version: '2' }] },
  ],
}

describe('calculateArtifactProbabilities', () => {
  const result = calculateArtifactProbabilities(input)
  const byName = new Map(result.map((r) => [r.artifact, r]))

  it('orders the obvious cases: scheduled + its dependency chain, then Markov successors, then history', () => {
    expect(new Set(result.slice(0, 3).map((r) => r.artifact))).toEqual(
      new Set(['runtime', 'libssl', 'crypto-core']),
    )
    expect(result.slice(3).map((r) => r.artifact)).toEqual(['plugin-a', 'plugin-b', 'app', 'docs'])
    for (const name of ['runtime', 'libssl', 'crypto-core'])
      expect(byName.get(name)!.probability).toBeCloseTo(0.9, 6)
    expect(byName.get('libssl')!.version).toBe('3')
    expect(byName.get('runtime')!.version).toBe('2')
    expect(byName.get('crypto-core')!.components.dependency).toBeCloseTo(0.9, 6)
  })

  it('leaves out what is installed, out of the horizon, or for another version', () => {
    expect(byName.has('agent')).toBe(false)
    expect(byName.has('legacy-lib')).toBe(false)
    expect(byName.get('app')!.components.scheduled).toBe(0)
  })

  it('models the Markov step with the lag: 80 % successor 5 min into a 10 min mean lag', () => {
    const a = byName.get('plugin-a')!
    // 0.8 e^-0.5 / (0.2 + 0.8 e^-0.5) ~ 0.708 still to come, almost surely within 6 h.
    expect(a.components.markov).toBeGreaterThan(0.68)
    expect(a.components.markov).toBeLessThan(0.72)
    expect(a.components.historical).toBeGreaterThan(0)
    expect(a.confidence).toBeGreaterThan(0.5)
    expect(a.confidence).toBeLessThan(1)
    // Once the successor was used, it is not predicted again from the same use.
    const used = calculateArtifactProbabilities({
      ...input,
      client: { ...input.client, recent: [...input.client.recent, { artifact: 'plugin-a', at: NOW - MIN }] },
    })
    expect(used.find((r) => r.artifact === 'plugin-a')!.components.markov).toBe(0)
  })

  it('scales history by the hour-of-week profile', () => {
    const busy: AccessEvent[] = []
    for (let d = 0; d < 14; d++)
      for (let i = 0; i < 20; i++)
        busy.push({ artifact: 'docs', at: NOW - d * 24 * HOUR, session: `${d}-${i}` })
    const seasonal = recordAccesses(emptySummary('eu', NOW - 14 * 24 * HOUR), busy, NOW)
    const at = (now: number) =>
      calculateArtifactProbabilities({
        ...input,
        now,
        horizonMs: HOUR,
        summary: seasonal,
        scheduled: [],
      }).find((r) => r.artifact === 'docs')!
    const peak = at(NOW)
    const quiet = at(NOW + 6 * HOUR)
    expect(peak.components.seasonalFactor).toBeGreaterThan(1)
    expect(quiet.components.seasonalFactor).toBeLessThan(1)
    expect(peak.probability).toBeGreaterThan(quiet.probability)
  })

  it('expands a versionless prediction to the dependencies of versions other than the installed one', () => {
    const runtimeUse: AccessEvent[] = Array.from({ length: 50 }, (_, i) => ({
      artifact: 'runtime',
      at: NOW - i * HOUR,
      session: `r${i}`,
    }))
    const deps = calculateArtifactProbabilities({
      ...input,
      summary: recordAccesses(emptySummary('eu', NOW - 50 * HOUR), runtimeUse, NOW),
      client: { recent: [], installed: [{ artifact: 'runtime', version: '1' }] },
      scheduled: [],
    })
    const names = deps.map((d) => d.artifact)
    expect(names).toContain('libssl')
    expect(names).not.toContain('legacy-lib')
    const runtime = deps.find((d) => d.artifact === 'runtime')!
    expect(deps.find((d) => d.artifact === 'libssl')!.probability).toBeCloseTo(runtime.probability, 9)
  })

  it('settles on dependency cycles', () => {
    const cyclic = calculateArtifactProbabilities({
      ...input,
      client: { recent: [], installed: [] },
      scheduled: [
        { artifact: 'a', version: '1', startsAt: NOW, cohortProbability: 0.5 },
        { artifact: 'b', version: '1', startsAt: NOW, cohortProbability: 0.2 },
      ],
      manifest: [
        { artifact: 'a', dependsOn: [{ artifact: 'b' }] },
        { artifact: 'b', dependsOn: [{ artifact: 'a' }] },
      ],
      options: { dependencyDepth: 10 },
    })
    // Either being needed needs both: 1 - 0.5 * 0.8 = 0.6 for each, never more.
    expect(cyclic.find((r) => r.artifact === 'a')!.probability).toBeCloseTo(0.6, 9)
    expect(cyclic.find((r) => r.artifact === 'b')!.probability).toBeCloseTo(0.6, 9)
  })

  it('counts a shared dependency once per root on a diamond', () => {
    const diamond = calculateArtifactProbabilities({
      ...input,
      client: { recent: [], installed: [] },
      scheduled: [{ artifact: 'top', version: '1', startsAt: NOW, cohortProbability: 0.5 }],
      manifest: [
        { artifact: 'top', dependsOn: [{ artifact: 'left' }, { artifact: 'right' }] },
        { artifact: 'left', dependsOn: [{ artifact: 'base' }] },
        { artifact: 'right', dependsOn: [{ artifact: 'base' }] },
      ],
    })
    expect(diamond.find((r) => r.artifact === 'base')!.probability).toBeCloseTo(0.5, 9)
  })

  it('is JSON-friendly and deterministic', () => {
    expect(JSON.parse(JSON.stringify(result))).toEqual(result)
    expect(calculateArtifactProbabilities(input)).toEqual(result)
  })
})

describe('buildPrefetchQueue', () => {
  const sizes: Record<string, number> = {
    runtime: 5_000_000,
    libssl: 1_000_000,
    'crypto-core': 500_000,
    'plugin-a': 2_000_000,
    'plugin-b': 2_000_000,
    app: 10_000_000,
    docs: 100_000,
  }
  const candidates: PrefetchCandidate[] = calculateArtifactProbabilities(input).map((p) => ({
    artifact: p.artifact,
    ...(p.version === undefined ? {} : { version: p.version }),
    probability: p.probability,
    confidence: p.confidence,
    bytes: sizes[p.artifact]!,
  }))

  it('orders by expected value and fills the budget, skipping what does not fit', () => {
    const { queue, skipped, usedBytes } = buildPrefetchQueue(candidates, { now: NOW, budgetBytes: 8_600_000 })
    expect(queue.map((q) => q.artifact)).toEqual(['crypto-core', 'libssl', 'runtime', 'plugin-a', 'docs'])
    expect(usedBytes).toBe(8_600_000)
    expect(queue.at(-1)!.cumulativeBytes).toBe(usedBytes)
    expect(skipped).toEqual([
      { artifact: 'plugin-b', reason: 'budget' },
      { artifact: 'app', reason: 'budget' },
    ])
  })

  it('weighs bytes saved against network cost', () => {
    const { queue } = buildPrefetchQueue(
      [
        { artifact: 'cheap-delta', probability: 0.5, bytes: 100, bytesSaved: 10_000 },
        { artifact: 'sure-thing', probability: 1, bytes: 1000 },
        { artifact: 'metered', probability: 1, bytes: 1000, networkCost: 10_000 },
      ],
      { now: NOW, budgetBytes: 10_000 },
    )
    expect(queue.map((q) => [q.artifact, q.score])).toEqual([
      ['cheap-delta', 50],
      ['sure-thing', 1],
      ['metered', 0.1],
    ])
  })

  it('filters low probability/confidence, unavailable and duplicate candidates', () => {
    const { queue, skipped } = buildPrefetchQueue(
      [
        { artifact: 'x', version: '1', probability: 0.5, bytes: 10 },
        { artifact: 'x', version: '1', probability: 0.6, bytes: 10 },
        { artifact: 'y', probability: 0.01, bytes: 10 },
        { artifact: 'z', probability: 0.9, confidence: 0.1, bytes: 10 },
        { artifact: 'w', probability: 0.9, bytes: 10, availableAt: NOW + 1 },
      ],
      { now: NOW, budgetBytes: 100, minProbability: 0.05, minConfidence: 0.2 },
    )
    expect(queue.map((q) => [q.artifact, q.probability])).toEqual([['x', 0.6]])
    expect(skipped.map((s) => `${s.artifact}:${s.reason}`).sort()).toEqual([
      'w:not-yet-available',
      'x:duplicate',
      'y:low-probability',
      'z:low-confidence',
    ])
  })

  it('keeps the same copy of a duplicate whatever the order candidates come in', () => {
    // Two copies of a@1 with equal scores (0 bytes: both +Infinity) but different probabilities: the
    // queue's own tie-break (higher probability, fewer bytes) picks, not whichever came first.
    const candidate = fc.record({
      artifact: fc.constantFrom('a', 'b'),
      version: fc.constantFrom('1', '2'),
      probability: fc.constantFrom(0.25, 0.5, 1),
      confidence: fc.constantFrom(0.5, 1),
      bytes: fc.integer({ min: 0, max: 8 }),
      bytesSaved: fc.integer({ min: 0, max: 8 }),
      networkCost: fc.integer({ min: 0, max: 8 }),
    })
    fc.assert(
      fc.property(
        fc.array(candidate, { maxLength: 6 }),
        fc.integer({ min: 0, max: 20 }),
        (cs, budgetBytes) => {
          const forward = buildPrefetchQueue(cs, { now: NOW, budgetBytes })
          const backward = buildPrefetchQueue([...cs].reverse(), { now: NOW, budgetBytes })
          expect(backward.queue).toEqual(forward.queue)
          expect(forward.usedBytes).toBeLessThanOrEqual(budgetBytes)
        },
      ),
      { numRuns: 2000, seed: 11 },
    )
  })
})

describe('calculateArtifactProbabilities bounded work', () => {
  /**
   * A region at its configured maxima (5000 artifacts, 32 transitions each) and a client whose history
   * (256 entries) names 256 distinct recent artifacts. Reads of the summary's arrays are counted through a
   * Proxy around the real arrays: the work must stay linear in the summary, not summary × history.
   */
  it('reads each transition and artifact a bounded number of times, not once per recent artifact', () => {
    const artifactsMax = 5000
    const perArtifact = 32
    const base = emptySummary('eu', NOW, {
      limits: { maxArtifacts: artifactsMax, maxTransitionsPerArtifact: perArtifact },
    })
    const artifacts = Array.from({ length: artifactsMax }, (_, i) => ({
      artifact: `a${i}`,
      count: 1000,
      updatedAt: NOW,
    }))
    const transitions = artifacts.flatMap((_, i) =>
      Array.from({ length: perArtifact }, (__, j) => ({
        from: `a${i}`,
        to: `a${(i + j + 1) % artifactsMax}`,
        count: 10,
        updatedAt: NOW,
        meanLagMs: 10 * MIN,
      })),
    )
    let reads = 0
    const counted = <T extends object>(xs: T[]): T[] =>
      new Proxy(xs, {
        get(target, prop, receiver) {
          if (typeof prop === 'string' && /^\d+$/.test(prop)) reads++
          return Reflect.get(target, prop, receiver)
        },
      })
    const recent = Array.from({ length: 256 }, (_, i) => ({ artifact: `a${i * 17}`, at: NOW - i * 1000 }))
    const result = calculateArtifactProbabilities({
      now: NOW,
      horizonMs: 6 * HOUR,
      summary: { ...base, artifacts: counted(artifacts), transitions: counted(transitions) },
      population: 1000,
      client: { recent, installed: [] },
    })
    expect(result.length).toBe(artifactsMax)
    expect(result.some((r) => r.components.markov > 0)).toBe(true)
    // Was ~42 million reads (each recent artifact scanned all 160 000 transitions and 5000 artifacts).
    expect(reads).toBeLessThanOrEqual(4 * (artifacts.length + transitions.length))
  })
})
