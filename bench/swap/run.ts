/**
 * Buffered swap vs plain stop-start restart, under the same bounded loopback load, in one run.
 * Run: node bench/swap/run.ts [--swaps N] [--rate R] [--connections C] [--write]
 * (--write refreshes RESULTS.md beside this file)
 *
 * Both contenders serve the sample service (client-agent/sample-service/) and see the same load
 * generator (client-agent/swap/test/load-child.ts: autocannon, alternating writes with per-client
 * sequence numbers and reads). "buffered swap" is `deltaport run`'s supervisor and proxy; "stop-start"
 * is the service on the public port itself, stopped (SIGTERM) and the next version started on the same
 * port. The service's durable log is then checked against what clients were told.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { cpus, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { buildSampleService } from '../../client-agent/sample-service/build.ts'
import { freePort, sleep } from '../../client-agent/swap/service-process.ts'
import { Supervisor } from '../../client-agent/swap/supervisor.ts'
import {
  checkWriteLog,
  count503,
  type LoadResult,
  splitLatency,
  startLoad,
  unexpected5xx,
  type Window,
} from '../../client-agent/swap/test/load.ts'
import { SwapSettings } from '../../schemas/swap.ts'

const { values } = parseArgs({
  options: {
    swaps: { type: 'string', default: '10' },
    rate: { type: 'string', default: '300' },
    connections: { type: 'string', default: '24' },
    write: { type: 'boolean', default: false },
  },
})
const swaps = Number(values.swaps)
const rate = Number(values.rate)
const connections = Number(values.connections)
const WARMUP_MS = 2000
const GAP_MS = 500

interface Outcome {
  name: string
  load: LoadResult
  windows: Window[]
  dataDir: string
  /** Latency samples before this are warm-up. */
  since: number
  /** How long the load ran, for the achieved request rate. */
  seconds: number
}

async function buildVersions(dir: string): Promise<string[]> {
  const files: string[] = []
  for (let i = 0; i <= swaps; i++) {
    files.push(await buildSampleService(join(dir, `v${i}.js`), { version: `1.0.${i}` }))
  }
  return files
}

async function bufferedSwap(dir: string, artifacts: string[]): Promise<Outcome> {
  const dataDir = join(dir, 'data-swap')
  const supervisor = await Supervisor.start({
    command: [process.execPath, '--no-warnings', '{artifact}'],
    runDir: join(dir, 'run'),
    dataDir,
    settings: SwapSettings.parse({}),
    initial: { version: '1.0.0', artifactPath: artifacts[0]! },
    host: '127.0.0.1',
    port: 0,
    stdio: 'ignore',
  })
  const load = await startLoad(`http://127.0.0.1:${supervisor.publicPort}`, rate, connections)
  const loadStart = Date.now()
  const windows: Window[] = []
  const since = Date.now() + WARMUP_MS / 2
  await sleep(WARMUP_MS)
  for (let i = 1; i <= swaps; i++) {
    const report = await supervisor.swapTo({ version: `1.0.${i}`, artifactPath: artifacts[i]! })
    if (report.outcome !== 'installed')
      throw new Error(`swap to 1.0.${i}: ${report.outcome} ${report.detail ?? ''}`)
    windows.push({ start: report.startedAt, end: report.endedAt })
    await sleep(GAP_MS)
  }
  const result = await load.stop()
  const seconds = (Date.now() - loadStart) / 1000
  await supervisor.stop()
  return { name: 'buffered swap (`deltaport run`)', load: result, windows, dataDir, since, seconds }
}

/** The service itself on the public port; a restart is SIGTERM, wait for exit, start the next version. */
async function stopStart(dir: string, artifacts: string[]): Promise<Outcome> {
  const dataDir = join(dir, 'data-restart')
  const port = await freePort()
  const launch = (artifact: string, version: string): ChildProcess =>
    spawn(process.execPath, ['--no-warnings', artifact], {
      stdio: 'ignore',
      env: { ...process.env, PORT: String(port), DELTAPORT_DATA_DIR: dataDir, DELTAPORT_VERSION: version },
    })
  const healthy = async () => {
    for (;;) {
      const ok = await fetch(`http://127.0.0.1:${port}/health`)
        .then((r) => r.ok)
        .catch(() => false)
      if (ok) return
      await sleep(20)
    }
  }
  await import('node:fs/promises').then((fs) => fs.mkdir(dataDir, { recursive: true }))
  let child = launch(artifacts[0]!, '1.0.0')
  await healthy()
  const load = await startLoad(`http://127.0.0.1:${port}`, rate, connections)
  const loadStart = Date.now()
  const windows: Window[] = []
  const since = Date.now() + WARMUP_MS / 2
  await sleep(WARMUP_MS)
  for (let i = 1; i <= swaps; i++) {
    const start = Date.now()
    const exited = new Promise((resolve) => child.once('exit', resolve))
    child.kill('SIGTERM')
    await exited
    child = launch(artifacts[i]!, `1.0.${i}`)
    await healthy()
    windows.push({ start, end: Date.now() })
    await sleep(GAP_MS)
  }
  const result = await load.stop()
  const seconds = (Date.now() - loadStart) / 1000
  const exited = new Promise((resolve) => child.once('exit', resolve))
  child.kill('SIGTERM')
  await exited
  return { name: 'plain stop-start restart', load: result, windows, dataDir, since, seconds }
}

async function row(o: Outcome): Promise<string[]> {
  const check = await checkWriteLog(o.dataDir, o.load.acks)
  const latency = splitLatency(o.load.samples, o.windows, o.since)
  const ms = (v: number) => `${v.toFixed(0)} ms`
  const dropped = o.load.errors + o.load.timeouts + o.load.reqErrors
  const meanWindow = o.windows.reduce((s, w) => s + (w.end - w.start), 0) / Math.max(1, o.windows.length)
  return [
    o.name,
    String(o.windows.length),
    ms(meanWindow),
    `${o.load.requests} (${(o.load.requests / o.seconds).toFixed(0)}/s)`,
    String(dropped),
    String(unexpected5xx(o.load.samples)),
    String(count503(o.load.samples)),
    String(o.load.protocolErrorCount),
    `${check.lost} / ${check.reordered + check.duplicated}`,
    `${check.acknowledged}`,
    `${ms(latency.baseline.p50)} / ${ms(latency.baseline.p99)}`,
    `${ms(latency.during.p50)} / ${ms(latency.during.p99)}`,
    ms(latency.during.p99 - latency.baseline.p99),
  ]
}

const dir = await mkdtemp(join(tmpdir(), 'deltaport-bench-swap-'))
try {
  const artifacts = await buildVersions(dir)
  console.error(
    `${swaps} buffered swaps, then ${swaps} stop-start restarts, at ${rate} req/s over ${connections} connections`,
  )
  const swapped = await bufferedSwap(dir, artifacts)
  const restarted = await stopStart(dir, artifacts)
  const header = [
    'strategy',
    'version changes',
    'mean window',
    'requests (achieved rate)',
    'errors (dropped)',
    '5xx (not 503)',
    '503',
    'write refused/failed',
    'lost / reordered writes',
    'acked writes',
    'p50 / p99 baseline',
    'p50 / p99 during change',
    'added p99',
  ]
  const rows = [header, header.map(() => '---'), await row(swapped), await row(restarted)]
  const table = rows.map((r) => `| ${r.join(' | ')} |`).join('\n')
  console.log(table)
  if (values.write) {
    const machine = `${cpus()[0]?.model ?? 'unknown CPU'} x${cpus().length}, Node ${process.version}`
    const doc = `# Buffered swap vs stop-start restart

${new Date().toISOString()}, ${machine}.
\`node bench/swap/run.ts --swaps ${swaps} --rate ${rate} --connections ${connections} --write\`

Same run, same load: autocannon on loopback at ${rate} req/s over ${connections} connections (one client
per connection, alternating \`POST /write\` with a per-client sequence number and \`GET /state\`), against
the sample service (client-agent/sample-service/). A write refused with 503 is retried with the same
number after its Retry-After; a write that got no answer is resent with the same number (the service
acknowledges a repeat as a duplicate, so retries cannot double-apply).

- *version changes*: ${swaps} buffered swaps by \`deltaport run\`'s supervisor, then ${swaps} plain restarts
  (SIGTERM, wait for exit, start the next version on the same port, wait for its health check).
- *mean window*: from the start of a change to the end (swap: prepare → last held write answered;
  restart: SIGTERM → new process healthy).
- *requests (achieved rate)*: answered requests; the rate falls below the target when clients stall
  (a restart leaves them reconnecting; a swap holds one write per client).
- *errors (dropped)*: connection errors, resets and timeouts seen by the clients. autocannon counts
  every failed reconnect attempt while nothing listens, so for stop-start this is "connections refused
  or cut", not "requests lost".
- *write refused/failed*: write answers other than 200 and 503 (a 409 would mean a lost or reordered
  write reached the service).
- *lost / reordered writes*: acknowledged writes missing from the service's durable log / log entries
  out of per-client order or repeated.
- *during change*: responses whose request overlapped a change window; *baseline*: all others after
  the first ${WARMUP_MS / 2} ms of warm-up (the load runs ${WARMUP_MS} ms before the first change and
  ${GAP_MS} ms between changes).

${table}

Stop-start loses no acknowledged write here only because this load generator resends an unanswered
write with the same sequence number and the service de-duplicates it; a client without such retries
sees every dropped connection as a failed request.

The machine is a shared, noisy 2-core VM running other work, so absolute latencies move between runs;
the columns that matter are the error and write columns, and the p99 added during a change. Design and
limits: docs/decisions/0009-buffered-swap.md.
`
    await writeFile(new URL('RESULTS.md', import.meta.url), doc)
    console.error('wrote bench/swap/RESULTS.md')
  }
} finally {
  await rm(dir, { recursive: true, force: true })
}
