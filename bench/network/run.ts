/**
 * Range-strategy benchmark on the simulated links: the adaptive controller against fixed range sizes.
 * Run: node bench/network/run.ts [--seeds N] [--first-seed S] [--mib 4,64,...] [--write]
 * (--write refreshes RESULTS.md beside this file)
 */

import { writeFileSync } from 'node:fs'
import { cpus } from 'node:os'
import { parseArgs } from 'node:util'
import { RangeController } from '../../client-agent/transfer/controller.ts'
import type { LinkProfile, RangeStrategy } from '../../client-agent/transfer/link-model.ts'
import { fixedStrategy, PROFILES, simulateDownload } from '../../client-agent/transfer/link-model.ts'

const KiB = 1024
const MiB = 1024 * KiB
const BLOCK = 4 * KiB

const { values } = parseArgs({
  options: {
    seeds: { type: 'string', default: '8' },
    'first-seed': { type: 'string', default: '1' },
    mib: { type: 'string', default: '64' },
    write: { type: 'boolean', default: false },
  },
})
const seeds = Number(values.seeds)
const firstSeed = Number(values['first-seed'])
const sizesMiB = values.mib.split(',').map(Number)

interface Contender {
  name: string
  fixed: boolean
  make: (profile: LinkProfile, seed: number) => RangeStrategy
}

/** A controller seeded from the snapshot of an earlier 16 MiB download on the same link (other seed). */
function warmController(profile: LinkProfile, seed: number): RangeController {
  const earlier = new RangeController({ blockSize: BLOCK })
  simulateDownload(16 * MiB, earlier, profile, seed + 1_000_000)
  return new RangeController({ blockSize: BLOCK, prior: earlier.snapshot() })
}

const contenders: Contender[] = [
  { name: 'controller', fixed: false, make: () => new RangeController({ blockSize: BLOCK }) },
  { name: 'controller, warm start', fixed: false, make: warmController },
]
for (const parallel of [1, 4]) {
  for (const size of [64 * KiB, MiB, 8 * MiB]) {
    const label = size >= MiB ? `${size / MiB} MiB` : `${size / KiB} KiB`
    contenders.push({ name: `${label} x${parallel}`, fixed: true, make: () => fixedStrategy(size, parallel) })
  }
}
const profiles = Object.values(PROFILES)

/** Mean completion time in seconds over the seeds; every contender sees the same seeds. */
function meanSeconds(c: Contender, profile: LinkProfile, totalBytes: number): number {
  let sum = 0
  for (let seed = firstSeed; seed < firstSeed + seeds; seed++) {
    sum += simulateDownload(totalBytes, c.make(profile, seed), profile, seed).completionMs
  }
  return sum / seeds / 1000
}

const markdownTable = (rows: string[][]) => rows.map((r) => `| ${r.join(' | ')} |`).join('\n')

/** Completion times per strategy and profile, then the controller's ratios to the best and worst fixed plan. */
function sizeTable(mib: number): string {
  const header = ['strategy', ...profiles.map((p) => p.name)]
  const rows: string[][] = [header, header.map(() => '---')]
  const times = contenders.map((c) => profiles.map((p) => meanSeconds(c, p, mib * MiB)))
  contenders.forEach((c, i) => {
    rows.push([c.name, ...times[i]!.map((s) => `${s.toFixed(2)} s`)])
  })
  const fixed = times.filter((_, i) => contenders[i]!.fixed)
  const ratio = (ctl: number[], pick: (xs: number[]) => number) =>
    ctl.map((t, p) => `${(t / pick(fixed.map((f) => f[p]!))).toFixed(2)}×`)
  rows.push(['**controller ÷ best fixed**', ...ratio(times[0]!, (xs) => Math.min(...xs))])
  rows.push(['controller ÷ worst fixed', ...ratio(times[0]!, (xs) => Math.max(...xs))])
  rows.push(['warm start ÷ best fixed', ...ratio(times[1]!, (xs) => Math.min(...xs))])
  return `### ${mib} MiB download\n\n${markdownTable(rows)}`
}

const seedNote = `mean simulated completion time over seeds ${firstSeed}..${firstSeed + seeds - 1}`
const sections = sizesMiB.map(sizeTable)
console.log(`${seedNote}\n\n${sections.join('\n\n')}`)

if (values.write) {
  const machine = `${cpus()[0]?.model ?? 'unknown CPU'} x${cpus().length}, Node ${process.version}`
  const doc = `# Network range-strategy benchmark

${new Date().toISOString()}, ${machine}.
\`node bench/network/run.ts --mib ${values.mib} --seeds ${seeds} --write\`

Adaptive \`RangeController\` (default options, 4 KiB blocks), cold and warm-started from the snapshot of
an earlier 16 MiB download on the same link, against fixed range sizes and parallelism on the simulated
links of \`client-agent/transfer/link-model.ts\`.
Each cell is the ${seedNote}. The numbers are simulated, so the machine only changes how long the
benchmark takes. Model assumptions and controller design:
\`docs/decisions/0007-adaptive-range-controller.md\`.

${sections.join('\n\n')}
`
  writeFileSync(new URL('RESULTS.md', import.meta.url), doc)
}
