/**
 * The sample service `deltaport run` supervises in tests, the bench and the demo: a tiny node:http app
 * with a durable write log. It imports only node: modules so `build.ts` can turn it into one plain .js
 * artifact. Endpoints:
 *   POST /write   x-client-id header, body {"seq": n, "data"?: string}: applied only as the client's next
 *                 sequence number (a repeat is acknowledged as a duplicate, a gap is refused with 409),
 *                 appended to <data dir>/writes.log and fsynced before the answer
 *   GET  /state?client=id   the client's last applied sequence number
 *   GET  /health  POST /prepare  POST /flush (fsync the log)
 * Env: PORT or DELTAPORT_SERVICE_PORT, DELTAPORT_DATA_DIR (shared by versions), DELTAPORT_VERSION.
 */
import { closeSync, fsyncSync, openSync, readFileSync, writeSync } from 'node:fs'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { join } from 'node:path'

interface Build {
  version: string
  /** `health`: never healthy; `writes`: healthy, but every write fails with 500 (replay rollback tests). */
  fail: 'none' | 'health' | 'writes'
  /** Delay before listening (a slow start keeps a swap buffering for a while). */
  startupDelayMs: number
  /** Exits (code 1) this long after it started listening; 0: never (a build that crashes soon after its switch). */
  crashAfterMs?: number
  /** Each write waits this long before it is applied; 0: none (a slow replay). */
  writeDelayMs?: number
}

// build.ts replaces the next line in built artifacts.
const BUILD: Build = { version: '', fail: 'none', startupDelayMs: 0 } // @build

const MAX_BODY = 64 * 1024
const version = BUILD.version || process.env.DELTAPORT_VERSION || 'dev'
const port = Number(process.env.DELTAPORT_SERVICE_PORT ?? process.env.PORT ?? 0)
const dataDir = process.env.DELTAPORT_DATA_DIR ?? process.env.SAMPLE_DATA_DIR ?? '.'
const logPath = join(dataDir, 'writes.log')

interface LogLine {
  client: string
  seq: number
  version: string
  replay: boolean
}

/** Last applied sequence number per client, rebuilt from the log (a torn last line is ignored). */
const lastSeq = new Map<string, number>()
function loadLog(): void {
  let text = ''
  try {
    text = readFileSync(logPath, 'utf8')
  } catch {
    return
  }
  for (const line of text.split('\n')) {
    if (!line) continue
    try {
      const entry = JSON.parse(line) as Partial<LogLine>
      if (typeof entry.client === 'string' && typeof entry.seq === 'number')
        lastSeq.set(entry.client, entry.seq)
    } catch {
      // A torn tail from a crash mid-append: everything before it is whole.
    }
  }
}

/** Group commit: lines queued while an fsync runs go out together in the next one. */
let fd = -1
let pending: Array<{ line: string; done: () => void }> = []
let flushing = false
function append(line: string): Promise<void> {
  return new Promise((resolve) => {
    pending.push({ line, done: resolve })
    if (!flushing) setImmediate(flushLog)
  })
}
function flushLog(): void {
  if (flushing || pending.length === 0) return
  flushing = true
  const batch = pending
  pending = []
  writeSync(fd, batch.map((b) => b.line).join(''))
  fsyncSync(fd)
  flushing = false
  for (const b of batch) b.done()
  if (pending.length > 0) setImmediate(flushLog)
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body)
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) })
  res.end(text)
}

function readBody(req: IncomingMessage): Promise<string | null> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = []
    let size = 0
    req.on('data', (c: Buffer) => {
      size += c.length
      if (size <= MAX_BODY) chunks.push(c)
    })
    req.on('end', () => resolve(size > MAX_BODY ? null : Buffer.concat(chunks).toString('utf8')))
    req.on('error', () => resolve(null))
  })
}

async function write(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const client = req.headers['x-client-id']
  const text = await readBody(req)
  if (BUILD.writeDelayMs) await new Promise((resolve) => setTimeout(resolve, BUILD.writeDelayMs))
  if (BUILD.fail === 'writes') return send(res, 500, { error: 'this build fails every write' })
  if (typeof client !== 'string' || client.length === 0 || client.length > 128 || text === null) {
    return send(res, 400, { error: 'x-client-id and a body under 64 KiB are required' })
  }
  let seq: unknown
  try {
    seq = (JSON.parse(text) as { seq?: unknown }).seq
  } catch {
    return send(res, 400, { error: 'body must be JSON' })
  }
  if (typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq < 1) {
    return send(res, 400, { error: 'seq must be a positive integer' })
  }
  const last = lastSeq.get(client) ?? 0
  if (seq <= last) return send(res, 200, { client, seq, version, duplicate: true })
  if (seq !== last + 1) return send(res, 409, { client, seq, expected: last + 1, version })
  // Claimed before the fsync so the client's next write (already queued) sees it, answered after.
  lastSeq.set(client, seq)
  const line: LogLine = { client, seq, version, replay: req.headers['x-deltaport-replay'] !== undefined }
  await append(`${JSON.stringify(line)}\n`)
  send(res, 200, { client, seq, version, applied: true })
}

async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://service')
  if (req.method === 'GET' && url.pathname === '/health') {
    return BUILD.fail === 'health' ? send(res, 503, { version, healthy: false }) : send(res, 200, { version })
  }
  if (req.method === 'POST' && url.pathname === '/write') return write(req, res)
  if (req.method === 'GET' && url.pathname === '/state') {
    const client = url.searchParams.get('client') ?? ''
    return send(res, 200, { client, lastSeq: lastSeq.get(client) ?? 0, version })
  }
  if (req.method === 'POST' && url.pathname === '/prepare') {
    req.resume()
    return send(res, 200, { version, prepared: true })
  }
  if (req.method === 'POST' && url.pathname === '/flush') {
    req.resume()
    await append('')
    return send(res, 200, { version, flushed: true })
  }
  req.resume()
  send(res, 404, { error: 'not found' })
}

function main(): void {
  loadLog()
  fd = openSync(logPath, 'a')
  const server = createServer((req, res) => {
    route(req, res).catch((error: Error) => send(res, 500, { error: error.message }))
  })
  const stop = () => {
    server.close()
    server.closeIdleConnections()
    setTimeout(() => {
      flushLog()
      closeSync(fd)
      process.exit(0)
    }, 50).unref()
  }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
  process.on('SIGUSR2', () => undefined)
  setTimeout(() => server.listen(port, '127.0.0.1'), BUILD.startupDelayMs)
  if (BUILD.crashAfterMs) {
    server.once('listening', () => setTimeout(() => process.exit(1), BUILD.crashAfterMs))
  }
}

main()
