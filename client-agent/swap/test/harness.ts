import { type ChildProcessByStdio, spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { type IncomingMessage, request } from 'node:http'
import { connect, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import type { Readable } from 'node:stream'
import { pathToFileURL } from 'node:url'
import { RunChildren, SwapSettings, type SwapSettingsInput } from '../../../schemas/swap.ts'
import { buildSampleService, type SampleBuild } from '../../sample-service/build.ts'
import { parseJournal, SwapJournal } from '../journal.ts'
import { sleep } from '../service-process.ts'
import { Supervisor, type SupervisorEvent, type SupervisorOptions } from '../supervisor.ts'
import type { ReadyUpdate, SwapOutcome, UpdateSource } from '../update-source.ts'

/**
 * A supervisor over real sample-service processes, with an update source and an outcome reporter that
 * record what the supervisor asked and told (the rollout coordinator's view). Call `cleanup` in afterAll.
 */
const dirs: string[] = []
const supervisors: Supervisor[] = []

export async function cleanup(): Promise<void> {
  for (const s of supervisors.splice(0)) await s.stop().catch(() => undefined)
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true })
}

export async function tempDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix))
  dirs.push(dir)
  return dir
}

/** Live (non-zombie) processes whose command line names one of `artifacts` (version → path), by version. */
export async function runningArtifacts(artifacts: ReadonlyMap<string, string>): Promise<string[]> {
  const found: string[] = []
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const stat = await readFile(`/proc/${entry}/stat`, 'latin1')
      if (/\) Z /.test(stat)) continue
      const cmdline = await readFile(`/proc/${entry}/cmdline`, 'latin1')
      for (const [version, path] of artifacts) if (cmdline.includes(path)) found.push(version)
    } catch {
      // Gone while we looked.
    }
  }
  return found.sort()
}

export async function harness(builds: SampleBuild[], input: SwapSettingsInput = {}) {
  const dir = await tempDir('deltaport-swap-harness-')
  const artifacts = new Map<string, string>()
  for (const b of builds) artifacts.set(b.version, await buildSampleService(join(dir, `${b.version}.js`), b))
  const update = (version: string): ReadyUpdate => ({ version, artifactPath: artifacts.get(version)! })
  const events: SupervisorEvent[] = []
  const outcomes: SwapOutcome[] = []
  /** What the source was asked (`refused` sets) and told (restores). */
  const asked: Array<ReadonlySet<string>> = []
  const restored: Array<[string, string]> = []
  /** The version the source offers (null: nothing new). */
  let offer: string | null = builds[1]?.version ?? null
  const source: UpdateSource = {
    next: async (running, refused) => {
      asked.push(new Set(refused))
      return offer && offer !== running && !refused.has(offer) ? update(offer) : null
    },
    restore: async (failed, back) => void restored.push([failed, back]),
  }
  const supervisor = await Supervisor.start({
    command: [process.execPath, '--no-warnings', '{artifact}'],
    runDir: join(dir, 'run'),
    dataDir: join(dir, 'data'),
    settings: SwapSettings.parse(input),
    initial: update(builds[0]!.version),
    host: '127.0.0.1',
    port: 0,
    stdio: 'ignore',
    source,
    reporter: { report: async (o) => void outcomes.push(o) },
    onEvent: (e) => events.push(e),
  })
  supervisors.push(supervisor)
  const until = async (match: (e: SupervisorEvent) => boolean, timeoutMs = 30_000) => {
    await waitFor(
      () => events.some(match),
      timeoutMs,
      () => `no such event in ${JSON.stringify(events)}`,
    )
  }
  const log = async () =>
    (await readFile(join(dir, 'data', 'writes.log'), 'utf8').catch(() => ''))
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { client: string; seq: number; version: string; replay: boolean })
  const recordedPids = async () =>
    RunChildren.parse(JSON.parse(await readFile(join(dir, 'run', 'children.json'), 'utf8'))).pids
  /** Live (non-zombie) processes running one of this harness's artifacts, by version. */
  const running = () => runningArtifacts(artifacts)
  return {
    dir,
    supervisor,
    events,
    outcomes,
    asked,
    restored,
    artifacts,
    port: supervisor.publicPort,
    url: `http://127.0.0.1:${supervisor.publicPort}`,
    swapTo: (version: string) => supervisor.swapTo(update(version)),
    offer: (version: string | null) => {
      offer = version
    },
    until,
    log,
    recordedPids,
    running,
  }
}

/**
 * Whether the journal at `path` was compacted with nothing owed: no pending write, and at most the one
 * settled record a compaction keeps so that ids continue above it (docs/formats/swap-journal.md).
 */
export function journalSettled(path: string): boolean {
  const bytes = readFileSync(path)
  const journal = parseJournal(bytes)
  return journal.pending.length === 0 && journal.skipped === 0 && bytes.length < 64
}

/** Polls `condition` every 10 ms; throws `why()` after `timeoutMs`. */
export async function waitFor(
  condition: () => boolean,
  timeoutMs: number,
  why: () => string = () => 'condition not met',
): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(why())
    await sleep(10)
  }
}

export const post = (port: number, client: string, seq: number, headers: Record<string, string> = {}) =>
  fetch(`http://127.0.0.1:${port}/write`, {
    method: 'POST',
    headers: { 'x-client-id': client, ...headers },
    body: JSON.stringify({ seq }),
  })

/** Starts a write whose body arrives in two parts; `finish()` sends the rest. */
export function splitWrite(port: number, client: string, seq: number) {
  const body = JSON.stringify({ seq })
  const req = request({
    host: '127.0.0.1',
    port,
    method: 'POST',
    path: '/write',
    headers: { 'x-client-id': client, 'content-length': String(body.length) },
  })
  const answered = new Promise<{ status: number; body: string }>((resolve, reject) => {
    req.on('response', (res: IncomingMessage) => {
      let text = ''
      res.on('data', (c: Buffer) => {
        text += c.toString()
      })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }))
    })
    req.on('error', reject)
  })
  req.write(body.slice(0, 3))
  return { finish: () => req.end(body.slice(3)), answered }
}

/** A connection from `localAddress` that sends `raw` and reads nothing (its answer waits in the agent). */
export function silentClient(localAddress: string, port: number, raw: string): Socket {
  const socket = connect({ host: '127.0.0.1', port, localAddress })
  socket.pause()
  socket.on('error', () => undefined)
  socket.write(raw)
  return socket
}

/** A raw HTTP/1.1 connection: what the proxy sends is collected as text, byte for byte. */
export function rawConnection(port: number) {
  const socket = connect(port, '127.0.0.1')
  let text = ''
  let ended = false
  socket.on('data', (chunk: Buffer) => {
    text += chunk.toString('latin1')
  })
  socket.on('close', () => {
    ended = true
  })
  socket.on('error', () => {
    ended = true
  })
  return {
    socket,
    send: (data: string) => socket.write(data),
    get text() {
      return text
    },
    get ended() {
      return ended
    },
    /** Waits until the received text matches `pattern` (or the connection closed, with `orClose`). */
    async receive(pattern: RegExp, timeoutMs = 20_000, orClose = false): Promise<string> {
      await waitFor(
        () => pattern.test(text) || (orClose && ended),
        timeoutMs,
        () => `no ${pattern} in ${JSON.stringify(text)}`,
      )
      return text
    },
    close: () => socket.destroy(),
  }
}

export async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([
    promise,
    sleep(ms).then(() => {
      throw new Error(`${what}: no answer within ${ms} ms`)
    }),
  ])
}

/**
 * Starts, in a process of its own, what `deltaport run` does: a Supervisor over `artifact` (version
 * 1.0.0) with `settings`, then the module code `then`, which sees `supervisor`. For tests that measure
 * how that process exits. `events`: every SupervisorEvent is printed on stdout as a JSON line.
 */
export async function spawnAgent(
  dir: string,
  artifact: string,
  settings: SwapSettingsInput,
  then: string,
  options: { events?: boolean } = {},
): Promise<ChildProcessByStdio<null, Readable, null>> {
  const module = (path: string) => JSON.stringify(pathToFileURL(join(import.meta.dirname, path)).href)
  const script = join(dir, 'agent.mjs')
  await writeFile(
    script,
    `import { Supervisor } from ${module('../supervisor.ts')}
import { SwapSettings } from ${module('../../../schemas/swap.ts')}
const supervisor = await Supervisor.start({
  command: [process.execPath, '--no-warnings', ${JSON.stringify(artifact)}],
  runDir: ${JSON.stringify(join(dir, 'run'))},
  dataDir: ${JSON.stringify(join(dir, 'data'))},
  settings: SwapSettings.parse(${JSON.stringify(settings)}),
  initial: { version: '1.0.0', artifactPath: ${JSON.stringify(artifact)} },
  host: '127.0.0.1',
  port: 0,
  stdio: 'ignore',${options.events ? '\n  onEvent: (event) => console.log(JSON.stringify(event)),' : ''}
})
${then}`,
  )
  return spawn(process.execPath, ['--no-warnings', script], { stdio: ['ignore', 'pipe', 'inherit'] })
}

/**
 * Leaves a journal in `dir`/run holding `writes` (POST, body `{}`), none settled: what an agent killed
 * while it held them leaves behind for the next start.
 */
export async function journalWith(
  dir: string,
  writes: ReadonlyArray<{ id: number; client: string; path: string }>,
): Promise<void> {
  const journal = new SwapJournal(join(dir, 'run', 'swap.journal'))
  await journal.open()
  for (const { id, client, path } of writes) {
    await journal.append({
      t: 'w',
      id,
      client,
      method: 'POST',
      path,
      headers: [['x-client-id', client]],
      body: Buffer.from('{}').toString('base64'),
      at: Date.now(),
    })
  }
  await journal.close()
}

/**
 * A Supervisor in this process over a service of the test's own (`artifact`, run as `node <artifact>`,
 * version 1.0.0), its run and data folders in `dir`; every event is pushed to `events`. Stop it yourself.
 */
export function supervise(
  dir: string,
  artifact: string,
  input: SwapSettingsInput,
  events: SupervisorEvent[],
  more: Partial<SupervisorOptions> = {},
): Promise<Supervisor> {
  return Supervisor.start({
    command: [process.execPath, '{artifact}'],
    runDir: join(dir, 'run'),
    dataDir: join(dir, 'data'),
    settings: SwapSettings.parse(input),
    initial: { version: '1.0.0', artifactPath: artifact },
    host: '127.0.0.1',
    port: 0,
    stdio: 'ignore',
    onEvent: (e) => events.push(e),
    ...more,
  })
}

/** The types of the events a `spawnAgent(…, { events: true })` process prints, collected as they come. */
export function eventTypes(agent: ChildProcessByStdio<null, Readable, null>): string[] {
  const seen: string[] = []
  createInterface({ input: agent.stdout }).on('line', (line) => {
    seen.push((JSON.parse(line) as { type: string }).type)
  })
  return seen
}

/**
 * A service for answers a client does not read: `/big` answers 32 MiB, `/closed` says how many
 * connections that served `/big` have closed since (the agent keeps them open otherwise), anything else
 * `ok <url>`.
 */
export function bigAnswerService(dir: string): Promise<string> {
  return serviceFile(join(dir, 'service.mjs'), {
    setup: `const big = Buffer.alloc(32 * 1024 * 1024, 120)
let closed = 0`,
    onEnd: `if (req.url === '/big') {
  req.socket.once('close', () => { closed += 1 })
  return res.end(big)
}
if (req.url === '/closed') return res.end(String(closed))
res.end('ok ' + req.url)`,
  })
}

/**
 * Writes a service of the test's own to `path`: a node:http server on `PORT` that reads each request
 * whole, then runs `onEnd` (JavaScript with `req`, `res` in scope; module-level `imports` and `setup`
 * before it), exits on SIGTERM, and listens after `startupDelayMs`.
 */
export async function serviceFile(
  path: string,
  code: { onEnd: string; imports?: string; setup?: string; startupDelayMs?: number },
): Promise<string> {
  await writeFile(
    path,
    `import { createServer } from 'node:http'
${code.imports ?? ''}
${code.setup ?? ''}
const server = createServer((req, res) => {
  req.resume()
  req.on('end', () => {
${code.onEnd}
  })
})
process.on('SIGTERM', () => process.exit(0))
setTimeout(() => server.listen(Number(process.env.PORT), '127.0.0.1'), ${code.startupDelayMs ?? 0})
`,
  )
  return path
}
