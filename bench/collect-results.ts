/**
 * `node bench/collect-results.ts`: assembles bench/RESULTS.md from each benchmark's own RESULTS.md, so
 * every table stays next to the script that produced it and the overview is never edited by hand.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

const BENCH = import.meta.dirname
const SECTIONS = [
  ['codec', 'Codec: deltaport vs xdelta3, bsdiff, zstd --patch-from (issue 3)'],
  ['chunksync', 'Chunk-sync vs delta vs full (issue 4)'],
  ['edge', 'Edge: manifest and range throughput vs a bare Hono handler (issue 4)'],
  ['network', 'Adaptive range controller vs fixed range sizes (issue 5)'],
  ['prefetch', 'Predictive prefetch vs baselines and an oracle (issue 6)'],
  ['shards', 'Zone sharding: static hashing vs reactive LRU vs the forecast plan (issue 7)'],
  ['swap', 'Buffered swap vs plain stop-start restart under load (issue 8)'],
] as const

const parts = [
  '# Benchmark results',
  '',
  'Each section is the latest committed output of `node bench/<name>/run.ts --write`, copied here by',
  '`node bench/collect-results.ts`. The machine is a shared, noisy 2-core VM: compare the ratios measured',
  'side by side in one run, not the absolute times. Targets that are missed are said so in each section.',
]
for (const [name, title] of SECTIONS) {
  const file = join(BENCH, name, 'RESULTS.md')
  parts.push('', `## ${title}`, '')
  if (!existsSync(file)) {
    parts.push(`Not run yet: \`node bench/${name}/run.ts --write\`.`)
    continue
  }
  // Our section title replaces the file's own; its other headings move one level down.
  const lines = readFileSync(file, 'utf8').trim().split('\n')
  if (lines[0]?.startsWith('# ')) lines.shift()
  parts.push(lines.map((line) => (line.startsWith('#') ? `#${line}` : line)).join('\n'))
}
writeFileSync(join(BENCH, 'RESULTS.md'), `${parts.join('\n')}\n`)
console.log(`wrote bench/RESULTS.md (${SECTIONS.length} sections)`)
