import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { emptySummary } from './access-model.ts'
import type { DependencyEvidence, DependencyExpansionInput, ManifestEntry } from './prefetch-scoring.ts'
import {
  calculateArtifactProbabilities,
  expandDependencies,
  expandDependenciesByClosure,
  expandDependenciesPerRoot,
} from './prefetch-scoring.ts'

const NOW = Date.UTC(2026, 10, 26, 12)
const NAMES = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h']
const VERSIONS = ['1', '2', '3']

const sorted = (m: DependencyEvidence) => [...m].sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0))

const version = fc.option(fc.constantFrom(...VERSIONS), { nil: undefined })
const ref = (versioned: boolean) =>
  fc.record({
    artifact: fc.constantFrom(...NAMES),
    version: versioned ? version : fc.constant(undefined),
  })

/**
 * Random graphs over eight names: self-loops, cycles, diamonds, several entries per artifact, roots with
 * and without evidence or versions, partly installed. Half the graphs reference dependencies without a
 * version (the planner's shape, which the closure must take); the rest mix versions (which it may refuse).
 */
const expansionInput: fc.Arbitrary<DependencyExpansionInput> = fc.boolean().chain((versioned) =>
  fc
    .record({
      manifest: fc.array(
        fc.record({
          artifact: fc.constantFrom(...NAMES),
          version,
          dependsOn: fc.array(ref(versioned), { maxLength: 5 }),
        }),
        { maxLength: 16 },
      ),
      installed: fc.dictionary(fc.constantFrom(...NAMES), fc.constantFrom(...VERSIONS)),
      evidence: fc.dictionary(
        fc.constantFrom(...NAMES),
        fc.record({
          p: fc.oneof(fc.constant(0), fc.double({ min: 0, max: 1, noNaN: true })),
          confidence: fc.double({ min: 0, max: 1, noNaN: true }),
        }),
      ),
      rootVersions: fc.dictionary(fc.constantFrom(...NAMES), fc.constantFrom(...VERSIONS)),
      maxDepth: fc.constantFrom(0, 1, 2, 2.5, 3, 5, Number.POSITIVE_INFINITY, Number.NaN),
    })
    .map(({ manifest, installed, evidence, rootVersions, maxDepth }) => ({
      roots: Object.keys(evidence).sort(),
      rootEvidence: (name: string) => evidence[name] ?? { p: 0, confidence: 0 },
      rootVersion: (name: string) => rootVersions[name],
      installed: new Map(Object.entries(installed)),
      manifest: manifest.map(
        (e): ManifestEntry => ({
          artifact: e.artifact,
          ...(e.version === undefined ? {} : { version: e.version }),
          dependsOn: e.dependsOn.map((d) => ({
            artifact: d.artifact,
            ...(d.version === undefined ? {} : { version: d.version }),
          })),
        }),
      ),
      maxDepth,
    })),
)

describe('manifest dependency expansion', () => {
  it('gives exactly the per-root walk result from the closure, on random graphs', () => {
    let closures = 0
    let versionless = 0
    fc.assert(
      fc.property(expansionInput, (input) => {
        const reference = expandDependenciesPerRoot(input)
        const closure = expandDependenciesByClosure(input)
        if (input.manifest.every((e) => e.dependsOn.every((d) => d.version === undefined))) {
          versionless++
          // Versionless references are what the planner sends: the closure must take them.
          if (closure === null && input.roots.every((r) => input.rootVersion(r) === undefined))
            throw new Error('the closure refused a versionless graph')
        }
        if (closure !== null) {
          closures++
          // Same artifacts, versions, and bit-identical probabilities and confidences (roots combine in
          // the same order).
          expect(sorted(closure)).toEqual(sorted(reference))
        }
        expect(sorted(expandDependencies(input))).toEqual(sorted(reference))
      }),
      { numRuns: 3000, seed: 20261126 },
    )
    // The property is about the closure: most runs must have gone through it.
    expect(versionless).toBeGreaterThan(1000)
    expect(closures).toBeGreaterThan(1500)
  })

  /**
   * 256 manifests, each needing 64 of the others, nothing installed, every artifact a scheduled update
   * (a root). The per-root walk read every dependency list once per root, 256 × 16 384 reads; the
   * closure reads each a bounded number of times.
   */
  it('reads each declared dependency a bounded number of times, not once per root', () => {
    const n = 256
    const degree = 64
    let reads = 0
    const counted = <T extends object>(xs: T[]): T[] =>
      new Proxy(xs, {
        get(target, prop, receiver) {
          if (typeof prop === 'string' && /^\d+$/.test(prop)) reads++
          return Reflect.get(target, prop, receiver)
        },
      })
    const name = (i: number) => `pkg-${i}`
    const manifest = Array.from({ length: n }, (_, i) => ({
      artifact: name(i),
      version: '2',
      dependsOn: counted(
        Array.from({ length: degree }, (_, k) => ({ artifact: name((i * 7 + k * 13 + 1) % n) })),
      ),
    }))
    const result = calculateArtifactProbabilities({
      now: NOW,
      horizonMs: 3_600_000,
      summary: emptySummary('eu', NOW),
      population: 1,
      client: { recent: [], installed: [] },
      scheduled: Array.from({ length: n }, (_, i) => ({
        artifact: name(i),
        version: '2',
        startsAt: NOW,
        cohortProbability: 0.01,
      })),
      manifest,
    })
    expect(result.length).toBe(n)
    expect(result.every((r) => r.components.dependency > 0)).toBe(true)
    expect(reads).toBeLessThanOrEqual(4 * n * degree)
  })
})
