/**
 * Manifest dependency expansion, before and after, on the same run: predict's per-root walk (the old
 * path, roots × edges; still the fallback for graphs that reference one artifact at two versions) against
 * the closure the planner now takes, on the planner's worst case: MAX_CANDIDATE_NAMES manifests, each
 * needing `degree` others by name, nothing installed, every artifact a scheduled update (a root).
 * Both are fed the same input and their results compared.
 */
import type { DependencyEvidence, DependencyExpansionInput } from '../../predict/index.ts'
import { expandDependenciesByClosure, expandDependenciesPerRoot, mulberry32 } from '../../predict/index.ts'

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0
const canonical = (m: DependencyEvidence | null) =>
  m === null ? 'null' : JSON.stringify([...m].sort(([a], [b]) => (a < b ? -1 : 1)))

function graph(n: number, degree: number, seed: number): DependencyExpansionInput {
  const rand = mulberry32(seed)
  const name = (i: number) => `pkg-${i.toString().padStart(3, '0')}`
  const manifest = Array.from({ length: n }, (_, i) => ({
    artifact: name(i),
    version: '2',
    dependsOn: Array.from({ length: degree }, () => ({ artifact: name(Math.floor(rand() * n)) })),
  }))
  const p = new Map(manifest.map((m) => [m.artifact, 0.05 + 0.9 * rand()]))
  return {
    roots: manifest.map((m) => m.artifact).sort(),
    rootEvidence: (a) => ({ p: p.get(a) ?? 0, confidence: 1 }),
    rootVersion: () => '2',
    installed: new Map(),
    manifest,
    maxDepth: 3,
  }
}

export function measureExpansion(manifests: number, reps = 11, warmup = 3): string {
  const lines = [
    `| manifests | dependencies each | edges | per-root walk ms (median of ${reps}, after ${warmup} warm-up) | closure ms | speed-up | same result |`,
    '|---:|---:|---:|---:|---:|---:|---|',
  ]
  for (const degree of [4, 16, 64, 200]) {
    const input = graph(manifests, degree, 42 + degree)
    const old: number[] = []
    const now: number[] = []
    let same = true
    for (let r = 0; r < warmup + reps; r++) {
      // Alternate which goes first so neither gets the other's warm caches on every rep.
      const order = r % 2 === 0 ? ['old', 'new'] : ['new', 'old']
      const results: Record<string, string> = {}
      for (const which of order) {
        const t0 = performance.now()
        const out = which === 'old' ? expandDependenciesPerRoot(input) : expandDependenciesByClosure(input)
        if (r >= warmup) (which === 'old' ? old : now).push(performance.now() - t0)
        results[which] = canonical(out)
      }
      same &&= results.old === results.new
    }
    const a = median(old)
    const b = median(now)
    lines.push(
      `| ${manifests} | ${degree} | ${manifests * degree} | ${a.toFixed(1)} | ${b.toFixed(1)} | ${(a / b).toFixed(1)}× | ${same ? 'yes' : 'NO'} |`,
    )
  }
  return lines.join('\n')
}
