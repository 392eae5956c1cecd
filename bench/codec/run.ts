/**
 * Codec benchmark: deltaport's delta methods against xdelta3, bsdiff and zstd --patch-from on real npm
 * artifact pairs, side by side in one run (sequentially, one process at a time).
 *
 *   node bench/codec/run.ts [--pairs a,b] [--methods xdelta3,bsdiff,zstd,vcdiff,...] [--big]
 *                           [--rounds 3] [--timeout-s 600] [--offline] [--write] [--report-only]
 *
 * --big adds the ≈120 MB Node binary pair; --rounds N runs every other pair N times and reports median
 * times (the committed results use 3); --write saves the report to bench/codec/RESULTS.md.
 * Raw results of the last run are kept in bench/.cache/codec/last.json; --report-only re-renders them.
 */
import { spawnSync } from 'node:child_process'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { availableParallelism, cpus } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { CACHE, loadCorpus, PAIRS } from './corpus.ts'
import { hasGnuTime } from './measure.ts'
import { baselineRss, runOurs } from './ours.ts'
import { PEERS, runPeer } from './peers.ts'
import {
  aggregates,
  aggregateTable,
  bigMemory,
  bytes,
  type Context,
  detailTable,
  summaryTable,
  verdicts,
  verdictTable,
} from './report.ts'
import { combineRounds, METHODS, type MethodResult, type OurMethod, type PairResult } from './result.ts'

const { values } = parseArgs({
  options: {
    pairs: { type: 'string' },
    methods: { type: 'string' },
    big: { type: 'boolean', default: false },
    write: { type: 'boolean', default: false },
    offline: { type: 'boolean', default: false },
    'timeout-s': { type: 'string', default: '600' },
    'report-only': { type: 'boolean', default: false },
    rounds: { type: 'string', default: '1' },
  },
})

const log = (s: string) => process.stderr.write(`${s}\n`)
const LAST = join(CACHE, 'codec', 'last.json')
const BIG = PAIRS.find((p) => p.big)?.name ?? ''

/** Everything a report is rendered from; saved to bench/.cache/codec/last.json after each run. */
interface RunRecord {
  started: string
  finished: string
  command: string
  machine: string
  results: PairResult[]
  baselineKiB: Record<string, number>
  /** Rounds per pair (the big pair: one); older records lack it (one). */
  rounds?: number
}

async function measure(): Promise<RunRecord> {
  const timeoutMs = Number(values['timeout-s']) * 1000
  if (!(timeoutMs > 0)) throw new Error('--timeout-s must be a positive number')
  const roundCount = Number(values.rounds)
  if (!Number.isInteger(roundCount) || roundCount < 1 || roundCount > 9)
    throw new Error('--rounds must be a whole number from 1 to 9')
  const allMethods = [...PEERS.map((p) => p.name), ...METHODS]
  const wanted = values.methods?.split(',').map((s) => s.trim()) ?? allMethods
  const unknownMethods = wanted.filter((m) => !allMethods.includes(m))
  if (unknownMethods.length)
    throw new Error(`unknown method(s) ${unknownMethods}; known: ${allMethods.join(', ')}`)
  const peers = PEERS.filter((p) => wanted.includes(p.name))
  const ours = METHODS.filter((m) => wanted.includes(m))
  const pairs = loadCorpus(
    {
      ...(values.pairs ? { names: values.pairs.split(',').map((s) => s.trim()) } : {}),
      big: values.big,
      offline: values.offline,
    },
    log,
  )

  const WORK = join(CACHE, 'codec', 'work')
  const baselineKiB: Record<string, number> = {}
  for (const m of ours) {
    const b = await baselineRss(m, WORK)
    if (b !== undefined) baselineKiB[m] = b
  }
  if (!hasGnuTime) log('note: /usr/bin/time missing: peers’ peak memory will show as —')

  const started = new Date()
  const results: PairResult[] = []
  for (const pair of pairs) {
    log(`${pair.name}: ${bytes(pair.sourceBytes)} → ${bytes(pair.targetBytes)}`)
    const r: PairResult = {
      name: pair.name,
      kind: pair.kind,
      note: `${pair.pkg} ${pair.from} → ${pair.to}, ${pair.note}`,
      sourceBytes: pair.sourceBytes,
      targetBytes: pair.targetBytes,
      methods: [],
    }
    const workDir = join(WORK, pair.name)
    const report = (m: PairResult['methods'][number]) => {
      r.methods.push(m)
      log(
        `  ${m.method.padEnd(14)} ${m.status.padEnd(8)} delta ${String(m.deltaBytes ?? '—').padStart(10)}  make ${((m.makeMs ?? 0) / 1000).toFixed(2)} s  apply ${((m.applyMs ?? 0) / 1000).toFixed(2)} s  ${m.note ?? ''}`,
      )
    }
    // Rounds go through every contender in turn, so a burst of load lands on one round of several
    // contenders rather than on all rounds of one; the big pair runs once (its seconds-long runs are
    // steadier, and another round would add minutes).
    const rounds: MethodResult[][] = []
    for (let round = 0; round < (pair.big ? 1 : roundCount); round++) {
      const one: MethodResult[] = []
      for (const peer of peers) one.push(await runPeer(peer, pair, workDir, timeoutMs))
      for (const m of ours) one.push(await runOurs(m as OurMethod, pair, workDir, timeoutMs))
      rounds.push(one)
    }
    for (let k = 0; k < rounds[0]!.length; k++) report(combineRounds(rounds.map((one) => one[k]!)))
    results.push(r)
  }
  const finished = new Date()
  const free = spawnSync('free', ['-h'], { encoding: 'utf8' }).stdout?.trimEnd() ?? 'n/a'
  const machine = [
    `- machine: ${availableParallelism()} cores (nproc), ${cpus()[0]?.model ?? 'unknown CPU'}; shared with other engineers, noisy`,
    `- node ${process.version}; xdelta3, bsdiff/bspatch, zstd from /usr/bin (${toolVersions()})`,
    '',
    '```',
    free,
    '```',
  ].join('\n')
  const record: RunRecord = {
    started: started.toISOString(),
    finished: finished.toISOString(),
    command: `node bench/codec/run.ts ${process.argv.slice(2).join(' ')}`,
    machine,
    results,
    baselineKiB,
    rounds: roundCount,
  }
  mkdirSync(join(CACHE, 'codec'), { recursive: true })
  writeFileSync(LAST, JSON.stringify(record, null, 2))
  return record
}

const run: RunRecord = values['report-only']
  ? (JSON.parse(readFileSync(LAST, 'utf8')) as RunRecord)
  : await measure()
const results = run.results
const ctx: Context = { baselineKiB: new Map(Object.entries(run.baselineKiB)) }
const minutes = ((Date.parse(run.finished) - Date.parse(run.started)) / 60000).toFixed(1)
const machine = [
  `- date: ${run.started} → ${run.finished} (${minutes} min)`,
  `- command: \`${run.command}\``,
  run.machine,
].join('\n')

const bigTable = bigMemory(results, ctx, BIG)
const baselines = [...ctx.baselineKiB].map(([m, k]) => `${m} ${(k / 1024).toFixed(0)} MiB`).join(', ')
const md = `# Codec benchmark

${machine}

Every number below comes from this one run, pairs and methods run one at a time. Ratios are the
meaningful part; absolute times move with the load other engineers put on the machine. ${roundsNote(run.rounds ?? 1)}

## Method

- Pairs are real npm artifacts (\`npm pack\`, cached in bench/.cache/packs): *shipped* = the .tgz as
  published, *raw-binary* = an executable pulled out of the tarball, *raw-tar* = the gunzipped tarball.
- Anchors run as a user runs them: ${PEERS.map((p) => `**${p.name}**: \`${p.describe}\``).join('; ')}.
- deltaport methods (\`dp:\`) run in a fresh Node child per make and per apply (bench/codec/child.ts).
  Apply uses the streaming form where the module has one (source read with positioned reads on a file
  descriptor, delta as a read stream, output written straight to a file); otherwise the in-memory form.
- Every round trip is compared byte for byte with the target; only exact round trips count as results.
- Time: anchors = wall time of the tool process; ours = time inside the child from reading the inputs to
  writing the output (Node start-up and module import excluded, ≈0.1 s here).
- Peak memory: anchors = GNU \`/usr/bin/time -f %M\` (ru_maxrss from wait4; includes the gzip child that
  xdelta3 may spawn); ours = \`process.resourceUsage().maxRSS\` of the child, shown as whole-process
  peak (+ above the peak of a child that only loaded the module: ${baselines || 'n/a'}). A Node process
  that strips types at start-up costs ≈80 MiB before the codec allocates anything. "Above" is the
  codec's cost *including garbage V8 has not collected yet*: RSS counts freed-but-uncollected arrays
  (V8 lets up to ~64 MiB of external ArrayBuffer memory pile up between collections), so allocation
  churn shows up as memory even when little is live; we do not force GCs or tune V8 flags.
- The streaming apply reads the source through the agent's file reader (client-agent/fs/file-io.ts),
  whose \`readInto\` (delta/io.ts) lands source reads in buffers the decoder reuses. On the big pair the
  apply is run a second time through a reader without \`readInto\`, for information. The memory
  verdict takes the worse "above" figure of the ★ method and of \`dp:best\` (\`applyDeltaStream\`, what
  the agent runs), both with the agent's reader.
- Best anchor (⚓) = smallest exact delta among the xdelta3 variants, bsdiff and zstd; best ours (★) =
  smallest exact deltaport delta (ties go to the single method). Time ratios use \`dp:best\`
  (createDelta, which tries every applicable method, i.e. what the CDN runs) when it round-tripped, else
  the ★ method; "apply ÷ xdelta3" uses the fastest exact xdelta3 variant on that pair.

Known tool behaviour worth keeping in mind when reading the tables:

- xdelta3 without \`-D\` notices gzip input, runs \`gzip -dc\` on source and target, diffs the contents
  and re-gzips on decode: tiny deltas on .tgz, but the output bytes differ from the published tarball
  (the tables check whether the gunzipped content still matches). Those rows count as *mismatch* and
  are not eligible as the best anchor; \`xdelta3-D\` is the byte-exact variant.
- xdelta3's default source window (-B) is 64 MiB, so on the ≈120 MB Node binary it only matches
  against part of the source; that is how users run it, so it is left at the default.
- bspatch holds the whole source and target in memory; zstd --long=31 --patch-from holds the source.

## Summary

${summaryTable(results)}

${aggregateTable(aggregates(results))}

## Targets

${verdictTable(verdicts(results, ctx, BIG))}
${bigTable ? `\n### Apply memory on the big pair (${BIG})\n\n${bigTable}\n` : ''}
## Every method on every pair

${detailTable(results, ctx)}
`

function roundsNote(rounds: number): string {
  return rounds > 1
    ? `Each pair but the big one ran ${rounds} rounds, every contender once per round in turn; times are the median of the rounds, peak memory the largest, and a failure in any round is shown as the result.`
    : 'Each pair ran once (one round per contender).'
}

function toolVersions(): string {
  const first = (cmd: string, args: string[]) => {
    const r = spawnSync(cmd, args, { encoding: 'utf8' })
    return `${r.stdout}${r.stderr}`.split('\n')[0]?.trim() ?? ''
  }
  const zstd = first('zstd', ['--version']).match(/v[\d.]+/)?.[0] ?? '?'
  const xd = first('xdelta3', ['-V']).match(/version [\d.]+/)?.[0] ?? '?'
  return `xdelta3 ${xd}, zstd ${zstd}, bsdiff 4.3-23 (Debian)`
}

console.log(md)
if (values.write) {
  const path = join(dirname(fileURLToPath(import.meta.url)), 'RESULTS.md')
  writeFileSync(path, md)
  log(`wrote ${path}`)
}
