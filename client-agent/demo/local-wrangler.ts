import { type ChildProcess, spawn } from 'node:child_process'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'

export interface RunningEdge {
  url: string
  stop(): Promise<void>
}

/**
 * Starts `wrangler dev` — the same embedded edge a newcomer runs by hand — on a free loopback port,
 * with state persisted under `persistTo`, and waits until it answers.
 */
export async function startWranglerDev(options: {
  persistTo: string
  token: string
  /** OPERATOR_TOKEN (the dashboard's token); a random one when not given. */
  operatorToken?: string
  /** MAINTAINER_KEYS: public keys whose signatures the edge requires on publishes; blank when not given. */
  maintainerKeys?: string
  /** INDEX_SIGNING_KEY: the key the edge signs index statements with; blank when not given. */
  indexSigningKey?: string
  log: string[]
}): Promise<RunningEdge> {
  const port = await freePort()
  const wrangler = join(import.meta.dirname, '..', '..', 'node_modules', '.bin', 'wrangler')
  const child = spawn(
    wrangler,
    [
      'dev',
      '--ip',
      '127.0.0.1',
      '--port',
      String(port),
      '--persist-to',
      options.persistTo,
      '--var',
      `PUBLISH_TOKEN:${options.token}`,
      '--var',
      `OPERATOR_TOKEN:${options.operatorToken ?? crypto.randomUUID()}`,
      '--var',
      `DEVICE_TOKEN_SECRET:${crypto.randomUUID()}`,
      '--var',
      `MAINTAINER_KEYS:${options.maintainerKeys ?? ''}`,
      '--var',
      `INDEX_SIGNING_KEY:${options.indexSigningKey ?? ''}`,
      '--show-interactive-dev-session=false',
      '--inspector-port',
      '0',
    ],
    {
      // Miniflare would otherwise try to download a Request.cf sample at start-up.
      env: {
        ...process.env,
        CLOUDFLARE_CF_FETCH_ENABLED: 'false',
        WRANGLER_SEND_METRICS: 'false',
        CI: 'true',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    },
  )
  child.stdout?.on('data', (d: Buffer) => options.log.push(d.toString()))
  child.stderr?.on('data', (d: Buffer) => options.log.push(d.toString()))
  const url = `http://127.0.0.1:${port}`
  const deadline = Date.now() + 60_000
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`wrangler dev exited early:\n${options.log.join('')}`)
    try {
      const response = await fetch(url)
      if (response.ok) return { url, stop: () => stop(child) }
    } catch {
      // Not listening yet.
    }
    await sleep(200)
  }
  await stop(child)
  throw new Error(`wrangler dev did not answer within 60 s:\n${options.log.join('')}`)
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.pid === undefined) return
  const exited = new Promise((resolve) => child.once('exit', resolve))
  process.kill(-child.pid, 'SIGTERM')
  await Promise.race([exited, sleep(5000)])
  if (child.exitCode === null) process.kill(-child.pid, 'SIGKILL')
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      server.close(() =>
        typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port')),
      )
    })
  })
}
