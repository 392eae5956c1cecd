/**
 * Edge read-path benchmark: the real edge under `wrangler dev` on loopback, loaded with autocannon, next
 * to a bare Hono worker that only range-reads the same R2 bytes.
 * Run: node bench/edge/run.ts [--duration 5] [--connections 16] [--rounds 3] [--write]
 * (--write refreshes RESULTS.md beside this file)
 */

import { createHash, randomBytes } from 'node:crypto'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { cpus, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import autocannon from 'autocannon'
import { unstable_startWorker } from 'wrangler'
import { type RunningEdge, startWranglerDev } from '../../client-agent/demo/local-wrangler.ts'
import { publishArtifact } from '../../client-agent/publish.ts'
import { buildDeltasFromPrevious } from '../../client-agent/publish-deltas.ts'
import { generateKeyPair } from '../../client-agent/signing.ts'

const KiB = 1024
const MiB = 1024 * KiB
const ARTIFACT_BYTES = 8 * MiB
const EDITED_BYTES = 2 * MiB
const RANGE_BYTES = MiB
const RANGE = `bytes=0-${RANGE_BYTES - 1}`
const NAME = 'benchapp'
const FROM = '1.0.0'
const TO = '1.1.0'
const BARE_KEY = 'bench/blob'

const { values } = parseArgs({
  options: {
    duration: { type: 'string', default: '5' },
    connections: { type: 'string', default: '16' },
    rounds: { type: 'string', default: '3' },
    write: { type: 'boolean', default: false },
  },
})
const duration = Number(values.duration)
const connections = Number(values.connections)
const rounds = Number(values.rounds)
if (!(duration > 0 && duration <= 30)) throw new Error('--duration must be in (0, 30] seconds')
if (!(Number.isInteger(connections) && connections > 0 && connections <= 256))
  throw new Error('--connections must be an integer in [1, 256]')
if (!(Number.isInteger(rounds) && rounds >= 1 && rounds <= 5)) throw new Error('--rounds must be 1..5')
/** Seconds of the single-connection (unloaded latency) pass per scenario and round. */
const SERIAL_SECONDS = 2
/** 6 scenarios × rounds × (1 s warm-up + duration + serial pass), plus ~30 s of start-up and publishing. */
if (6 * rounds * (duration + 1 + SERIAL_SECONDS) + 30 > 4 * 60)
  throw new Error('duration × rounds would take the run past 4 minutes; lower one of them')

/** Stop everything (and the process) if the run goes past this, whatever hangs. */
const HARD_LIMIT_MS = 4.5 * 60_000
const hardLimit = setTimeout(() => {
  console.error(`bench/edge: exceeded ${HARD_LIMIT_MS / 1000} s, aborting`)
  void cleanup().finally(() => process.exit(2))
}, HARD_LIMIT_MS)

const started = new Date()
const log: string[] = []
const work = await mkdtemp(join(tmpdir(), 'deltaport-bench-edge-'))
let edge: RunningEdge | undefined
let bareDispose: (() => Promise<void>) | undefined

async function cleanup(): Promise<void> {
  await Promise.allSettled([edge?.stop(), bareDispose?.()])
  await rm(work, { recursive: true, force: true })
}

function say(line: string): void {
  console.error(`[bench/edge +${((Date.now() - started.getTime()) / 1000).toFixed(1)} s] ${line}`)
}

function check(condition: boolean, what: string): asserts condition {
  if (!condition) throw new Error(`bench/edge: ${what}`)
}

interface Scenario {
  key: string
  label: string
  url: string
  headers?: Record<string, string>
  /** Rotate the request path per request (cache-miss scenario). */
  rotate?: (n: number) => string
}

/** Never reset, so every rotated request in every round and warm-up asks for a new cache key. */
let rotation = 0

interface Measured {
  scenario: Scenario
  rps: number
  p50: number
  p99: number
  mbps: number
  requests: number
}

async function measure(s: Scenario, seconds: number, conns = connections): Promise<Measured> {
  const rotate = s.rotate
  const result = await autocannon({
    url: s.url,
    connections: conns,
    duration: seconds,
    timeout: 20,
    headers: s.headers ?? {},
    ...(rotate
      ? {
          requests: [
            { setupRequest: (request: autocannon.Request) => ({ ...request, path: rotate(rotation++) }) },
          ],
        }
      : {}),
  })
  const bad = result.non2xx + result.errors + result.timeouts
  check(
    bad === 0,
    `${s.label}: ${result.non2xx} non-2xx, ${result.errors} errors, ${result.timeouts} timeouts (status ${JSON.stringify(result.statusCodeStats)})`,
  )
  return {
    scenario: s,
    rps: result.requests.average,
    p50: result.latency.p50,
    p99: result.latency.p99,
    mbps: result.throughput.average / 1e6,
    requests: result['2xx'],
  }
}

/** One GET outside the load, to check status, bytes and the cache header. */
async function probe(
  url: string,
  headers: Record<string, string>,
): Promise<{ status: number; cache: string | null; bytes: Buffer; headers: Headers }> {
  const response = await fetch(url, { headers, signal: AbortSignal.timeout(30_000) })
  const bytes = Buffer.from(await response.arrayBuffer())
  return {
    status: response.status,
    cache: response.headers.get('x-deltaport-cache'),
    bytes,
    headers: response.headers,
  }
}

/** Poll until the cache answers (the put runs in waitUntil after the first response). */
async function expectHit(url: string, headers: Record<string, string>, expected: Buffer): Promise<void> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const p = await probe(url, headers)
    check(p.status === 206 && p.bytes.equals(expected), `${url}: status ${p.status} or wrong bytes`)
    if (p.cache === 'hit') return
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  throw new Error(`bench/edge: ${url} never answered x-deltaport-cache: hit`)
}

try {
  // --- Artifacts: 8 MiB random, then the same with 2 MiB rewritten in the middle.
  const v1 = randomBytes(ARTIFACT_BYTES)
  const v2 = Buffer.from(v1)
  randomBytes(EDITED_BYTES).copy(v2, 3 * MiB)
  const key = await generateKeyPair()
  const keyFile = join(work, 'maintainer.key.json')
  await writeFile(keyFile, JSON.stringify(key))
  const fileV1 = join(work, `${NAME}-${FROM}.bin`)
  const fileV2 = join(work, `${NAME}-${TO}.bin`)
  await writeFile(fileV1, v1)
  await writeFile(fileV2, v2)
  const token = randomBytes(16).toString('hex')

  say('starting wrangler dev')
  edge = await startWranglerDev({ persistTo: join(work, 'state'), token, log })
  const url = edge.url
  say(`edge at ${url}; publishing ${NAME}@${FROM} and ${NAME}@${TO} with a delta`)
  await publishArtifact({ edgeUrl: url, token, keyFile, file: fileV1, name: NAME, version: FROM })
  const deltas = await buildDeltasFromPrevious(url, NAME, fileV2, 1)
  check(deltas.length === 1 && deltas[0]?.from === FROM, 'expected one delta from 1.0.0')
  const deltaMethod = deltas[0].method
  const deltaPayload = deltas[0].size
  await publishArtifact({ edgeUrl: url, token, keyFile, file: fileV2, name: NAME, version: TO, deltas })

  const manifestUrl = `${url}/v1/artifacts/${NAME}/${TO}/manifest`
  const blobUrl = `${url}/v1/artifacts/${NAME}/${TO}/blob`
  const deltaUrl = `${url}/v1/deltas/${NAME}/${FROM}/${TO}`
  const blobEtag = `"${createHash('sha256').update(v2).digest('hex')}"`
  const rangeHeaders = { range: RANGE }
  const ifRangeHeaders = { range: RANGE, 'if-range': blobEtag }

  // --- Probes: right bytes, and the cache behaving as edge-cache.ts says.
  const manifest = await probe(manifestUrl, {})
  check(manifest.status === 200, `manifest: status ${manifest.status}`)
  const expectedBlob = v2.subarray(0, RANGE_BYTES)
  const firstBlob = await probe(blobUrl, rangeHeaders)
  check(firstBlob.status === 206 && firstBlob.bytes.equals(expectedBlob), 'blob range: wrong status or bytes')
  check(firstBlob.cache === 'miss', `blob range: first read was ${firstBlob.cache}, expected miss`)
  await expectHit(blobUrl, rangeHeaders, expectedBlob)
  const framedLength = Number(firstDelta(await probe(deltaUrl, { range: RANGE })))
  check(framedLength >= RANGE_BYTES, `framed delta stream is ${framedLength} bytes, < 1 MiB`)
  const wholeDelta = await probe(deltaUrl, {})
  check(wholeDelta.status === 200 && wholeDelta.bytes.length === framedLength, 'delta: full GET mismatch')
  const expectedDelta = wholeDelta.bytes.subarray(0, RANGE_BYTES)
  await expectHit(deltaUrl, { range: RANGE }, expectedDelta)
  // Since 2026-11-26 (31fc2dc) the cache answers Range + If-Range when the validator names the stored
  // bytes, as agents send on every range after their first; there is no cache bypass left to measure.
  const withIfRange = await probe(blobUrl, ifRangeHeaders)
  check(
    withIfRange.status === 206 && withIfRange.cache === 'hit' && withIfRange.bytes.equals(expectedBlob),
    `If-Range read: status ${withIfRange.status}, cache header ${withIfRange.cache}, expected a 206 hit`,
  )

  say('starting the bare worker (unstable_startWorker)')
  process.env.CLOUDFLARE_CF_FETCH_ENABLED = 'false'
  const bare = await unstable_startWorker({
    config: join(import.meta.dirname, 'wrangler.bare.toml'),
    dev: { server: { hostname: '127.0.0.1', port: 0 }, inspector: false, persist: false, logLevel: 'warn' },
  })
  bareDispose = () => bare.dispose()
  const bareUrl = `${(await bare.url).toString().replace(/\/$/, '')}/o/${BARE_KEY}`
  const seeded = await fetch(bareUrl, { method: 'PUT', body: v2, signal: AbortSignal.timeout(30_000) })
  check(seeded.status === 201, `seeding the bare worker: ${seeded.status}`)
  const bareProbe = await probe(bareUrl, rangeHeaders)
  check(bareProbe.status === 206 && bareProbe.bytes.equals(expectedBlob), 'bare: wrong status or bytes')

  // --- Load. Each scenario gets a 1 s warm-up (discarded), then the measured run.
  const scenarios: Scenario[] = [
    { key: 'manifest', label: 'manifest GET', url: manifestUrl },
    { key: 'cached', label: 'blob 1 MiB range, cached (hit)', url: blobUrl, headers: rangeHeaders },
    { key: 'delta', label: 'delta stream 1 MiB range, cached (hit)', url: deltaUrl, headers: rangeHeaders },
    {
      key: 'ifrange',
      label: 'blob 1 MiB range + If-Range, cached (hit; what agents send after their first range)',
      url: blobUrl,
      headers: ifRangeHeaders,
    },
    {
      key: 'miss',
      label: 'blob 1 MiB range, cold miss + cache fill (unique query)',
      url: blobUrl,
      headers: rangeHeaders,
      rotate: (n) => `/v1/artifacts/${NAME}/${TO}/blob?bench=${n}`,
    },
    {
      key: 'bare',
      label: 'bare Hono + R2 range (no validation, no cache)',
      url: bareUrl,
      headers: rangeHeaders,
    },
  ]
  // Rounds alternate the order (forward, reversed, ...) so slow drifts in machine load hit all scenarios.
  // Each scenario: 1 s warm-up, the loaded run, then one connection for the unloaded latency.
  const perRound: Measured[][] = []
  const perRoundSerial: Measured[][] = []
  for (let round = 0; round < rounds; round++) {
    const order = round % 2 === 0 ? scenarios : [...scenarios].reverse()
    const measured: Measured[] = []
    const serial: Measured[] = []
    for (const s of order) {
      say(`round ${round + 1}/${rounds}: ${s.label}`)
      await measure(s, 1)
      measured.push(await measure(s, duration))
      serial.push(await measure(s, SERIAL_SECONDS, 1))
    }
    perRound.push(measured)
    perRoundSerial.push(serial)
  }
  const results = scenarios.map((s) => aggregate(perRound.map((m) => pick(m, s.key))))
  const serialResults = scenarios.map((s) => aggregate(perRoundSerial.map((m) => pick(m, s.key))))
  // The cached scenarios really were hits: the same keys still answer from the cache afterwards.
  await expectHit(blobUrl, rangeHeaders, expectedBlob)
  await expectHit(blobUrl, ifRangeHeaders, expectedBlob)
  await expectHit(deltaUrl, rangeHeaders, expectedDelta)

  const finished = new Date()
  const report = render(results, perRound, serialResults, perRoundSerial, {
    started,
    finished,
    framedLength,
    deltaMethod,
    deltaPayload,
  })
  console.log(report)
  if (values.write) {
    await writeFile(join(import.meta.dirname, 'RESULTS.md'), report)
    say('wrote bench/edge/RESULTS.md')
  }
} catch (error) {
  console.error(log.slice(-30).join(''))
  throw error
} finally {
  await cleanup()
  clearTimeout(hardLimit)
}

function firstDelta(p: { status: number; headers: Headers; bytes: Buffer }): string {
  check(p.status === 206, `delta range: status ${p.status}`)
  return p.headers.get('x-deltaport-framed-length') ?? '0'
}

function pick(results: Measured[], key: string): Measured {
  const found = results.find((r) => r.scenario.key === key)
  if (!found) throw new Error(`no result for ${key}`)
  return found
}

interface Aggregated extends Measured {
  /** req/s of each round, in round order. */
  roundRps: number[]
}

function median(xs: number[]): number {
  const sorted = [...xs].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1
    ? (sorted[mid] ?? Number.NaN)
    : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2
}

/** Median over the rounds of req/s, MB/s and the latency percentiles (each round's own p50/p99). */
function aggregate(rounds: Measured[]): Aggregated {
  const mean = (f: (m: Measured) => number) => median(rounds.map(f))
  const first = rounds[0]
  if (!first) throw new Error('no rounds')
  return {
    scenario: first.scenario,
    rps: mean((m) => m.rps),
    p50: mean((m) => m.p50),
    p99: mean((m) => m.p99),
    mbps: mean((m) => m.mbps),
    requests: rounds.reduce((sum, m) => sum + m.requests, 0),
    roundRps: rounds.map((m) => m.rps),
  }
}

function render(
  results: Aggregated[],
  perRound: Measured[][],
  serialResults: Aggregated[],
  perRoundSerial: Measured[][],
  run: { started: Date; finished: Date; framedLength: number; deltaMethod: string; deltaPayload: number },
): string {
  const bare = pick(results, 'bare')
  const rangeScenarios = new Set(['cached', 'delta', 'ifrange', 'miss'])
  const x = (v: number) => `${v.toFixed(2)}×`
  const ms = (v: number) => `${v.toFixed(v < 10 ? 1 : 0)} ms`
  const vsBare = (r: Aggregated, f: (m: Measured) => number) =>
    rangeScenarios.has(r.scenario.key) || r.scenario.key === 'bare' ? x(f(r) / f(bare)) : '—'
  const rows = [
    ['scenario', 'req/s', 'p50', 'p99', 'MB/s', 'req/s ÷ bare', 'p50 ÷ bare', 'req/s by round', 'requests'],
    ['---', '---:', '---:', '---:', '---:', '---:', '---:', '---:', '---:'],
    ...results.map((r) => [
      r.scenario.label,
      r.rps.toFixed(0),
      ms(r.p50),
      ms(r.p99),
      r.mbps.toFixed(r.mbps < 10 ? 2 : 0),
      vsBare(r, (m) => m.rps),
      vsBare(r, (m) => m.p50),
      r.roundRps.map((v) => v.toFixed(0)).join(' / '),
      String(r.requests),
    ]),
  ]
  const table = rows.map((r) => `| ${r.join(' | ')} |`).join('\n')
  /** The aggregate ratio, then the same ratio within each round (the pairs measured minutes apart at most). */
  const ratioOf = (each: Measured[][]) => (a: string, b: string, f: (m: Measured) => number) => {
    const paired = each.map((m) => f(pick(m, a)) / f(pick(m, b)))
    return `**${x(median(paired))}** (rounds: ${paired.map(x).join(', ')})`
  }
  const ratio = ratioOf(perRound)
  const serialRatio = ratioOf(perRoundSerial)
  const serialBare = pick(serialResults, 'bare')
  const serialRows = [
    ['scenario', 'p50', 'p99', 'req/s', 'p50 ÷ bare', 'requests'],
    ['---', '---:', '---:', '---:', '---:', '---:'],
    ...serialResults.map((r) => [
      r.scenario.label,
      ms(r.p50),
      ms(r.p99),
      r.rps.toFixed(0),
      rangeScenarios.has(r.scenario.key) || r.scenario.key === 'bare' ? x(r.p50 / serialBare.p50) : '—',
      String(r.requests),
    ]),
  ]
  const serialTable = serialRows.map((r) => `| ${r.join(' | ')} |`).join('\n')
  const rps = (m: Measured) => m.rps
  const p50 = (m: Measured) => m.p50
  const ratios = [
    `- cached ÷ cold miss + fill, blob range: req/s ${ratio('cached', 'miss', rps)}; p50 ${ratio('cached', 'miss', p50)}`,
    `- cached with If-Range ÷ cached, blob range: req/s ${ratio('ifrange', 'cached', rps)}; p50 ${ratio('ifrange', 'cached', p50)}`,
    `- ours ÷ bare, req/s: blob cached ${ratio('cached', 'bare', rps)}; blob cached + If-Range ${ratio('ifrange', 'bare', rps)}; cold miss ${ratio('miss', 'bare', rps)}; delta cached ${ratio('delta', 'bare', rps)}`,
    `- ours ÷ bare, p50: blob cached ${ratio('cached', 'bare', p50)}; blob cached + If-Range ${ratio('ifrange', 'bare', p50)}; cold miss ${ratio('miss', 'bare', p50)}`,
  ].join('\n')
  const serialRatios = [
    `- cached ÷ cold miss + fill, blob range p50: ${serialRatio('cached', 'miss', p50)}`,
    `- cached with If-Range ÷ cached, blob range p50: ${serialRatio('ifrange', 'cached', p50)}`,
    `- ours ÷ bare, p50: blob cached ${serialRatio('cached', 'bare', p50)}; blob cached + If-Range ${serialRatio('ifrange', 'bare', p50)}; cold miss ${serialRatio('miss', 'bare', p50)}; delta cached ${serialRatio('delta', 'bare', p50)}`,
  ].join('\n')
  const seconds = ((run.finished.getTime() - run.started.getTime()) / 1000).toFixed(0)
  const cpu = cpus()[0]?.model.trim() ?? 'unknown'
  return `# Edge read-path benchmark

- date: ${run.started.toISOString()} → ${run.finished.toISOString()} (${seconds} s, whole run)
- command: \`node bench/edge/run.ts --duration ${duration} --connections ${connections} --rounds ${rounds}${values.write ? ' --write' : ''}\`
- machine: ${cpus().length} cores (nproc), ${cpu}; shared with other engineers, noisy
- node ${process.version}; wrangler dev (miniflare/workerd) on 127.0.0.1; autocannon, ${connections} connections, ${rounds} round(s) × ${duration} s per scenario, each after a 1 s warm-up

All numbers come from this one run, scenarios one after another against the same two local workers, in
${rounds} round(s) that alternate the order (forward, then reversed); the table shows the median over rounds and
each round's req/s, so the spread between rounds shows how noisy the machine was. Read the ratios; absolute
numbers move with whatever else the two shared cores are doing.

| scenario | what is requested |
| --- | --- |
| manifest GET | \`GET /v1/artifacts/${NAME}/${TO}/manifest\` (signed JSON from R2, not cached) |
| blob, cached | \`GET …/blob\`, \`Range: ${RANGE}\`; warmed first, every read is \`x-deltaport-cache: hit\` (checked before and after the load) |
| delta, cached | \`GET /v1/deltas/${NAME}/${FROM}/${TO}\`, same range of the framed stream (${run.framedLength} bytes framed; ${run.deltaMethod} payload ${run.deltaPayload} bytes), hit |
| blob, cached + If-Range | same range plus \`If-Range: "<sha256>"\` (the blob's strong validator), as agents send on every range after their first: \`serveImmutable\` answers it from the cache when the validator names the stored bytes (checked: \`hit\`). Before 2026-11-26 this request skipped the cache and was measured as the "bypassed" R2 path; that path no longer exists |
| blob, cold miss | same range with a unique \`?bench=N\` per request: a new cache key each time, so lookup misses, R2 is read and the response is tee'd into \`cache.put\` |
| bare | minimal Hono worker (bench/edge/bare-worker.ts, \`unstable_startWorker\`, same R2 binding) doing only \`bucket.get(key, { range })\` on the same bytes |

## Results

${table}

MB/s = 10⁶ bytes/s of response bodies as autocannon counted them. p50/p99 are latency to the last byte.
With ${connections} connections the range scenarios run at the local stack's byte ceiling, so their p50 is mostly
queueing (≈ connections ÷ req/s); the one-connection table below is the per-request cost.

Ratios are the median of per-round ratios: each pairs two scenarios measured in the same round, at most a
minute or so apart; the per-round values show the spread.

${ratios}

### One connection (unloaded latency)

Right after each loaded run, the same scenario with a single connection for ${SERIAL_SECONDS} s: no queueing, so
p50 is the cost of one request through the whole local stack.

${serialTable}

${serialRatios}

## Method

- Artifact: 8 MiB of random bytes (${FROM}), then a copy with 2 MiB rewritten at 3 MiB (${TO}); published
  with the agent library (\`publishArtifact\`, Ed25519 key from \`generateKeyPair\`), ${TO} with the delta from
  \`buildDeltasFromPrevious\`, to \`wrangler dev --ip 127.0.0.1\` started by \`startWranglerDev\`
  (client-agent/demo/local-wrangler.ts) with state persisted in a temp folder (deleted afterwards).
- Before loading, every scenario's response was checked byte for byte against the published bytes, and the
  cache header read: first blob read \`miss\`, then \`hit\`; delta \`hit\`; the matching If-Range read \`hit\`.
- Uncached reads: the cache key is URL + Range (workers/http/edge-cache.ts); there is no \`cache-control:
  no-cache\` handling, and a matching If-Range is answered from the cache, so the only uncached range read
  is a unique query string (a real miss: lookup, R2 read, and a 1 MiB \`cache.put\`).
- Load generator and both workers share the same two cores, so the load generator's own CPU is in every number.

## Caveats

- \`wrangler dev\` is miniflare driving a local workerd: R2 is a local SQLite + file store, the Cache API is
  miniflare's local cache, and requests go through wrangler's dev proxy worker. None of it is production
  workerd on Cloudflare's network, where R2 reads are remote (tens of ms) and the cache is a colo-wide tier,
  so the cached ÷ cold-miss gap in production is likely much wider than here, and absolute req/s do not transfer.
- Loopback only: no TLS, no real network latency or bandwidth limits.
- Locally a cache hit and an R2 read are both reads from local disk through a miniflare service, so a hit is
  not expected to be much cheaper than R2 here. What the cache saves in production (the trip to the R2
  region, R2 read operations) cannot show on loopback; read cached ÷ cold miss as the local cost of the
  cache path itself, not as the production speed-up. The cold-miss scenario also writes 1 MiB per request
  into the local cache store, on the same disk and cores as everything else.
- Two shared, noisy cores with other engineers' work running; the load generator competes with the workers.
  One run, ${rounds} × ${duration} s per scenario: treat differences smaller than the spread between rounds as noise.
- The bare baseline has the same dev proxy and local R2 in front of it, so "ours ÷ bare" isolates the edge's
  own work (routing, validation, manifest read from R2, Cache API) under the same local conditions.
  Differences: the bare worker runs in this process's \`unstable_startWorker\` with in-memory state
  (\`persist: false\`), the edge in a separate \`wrangler dev\` with state persisted to a temp folder.
`
}
