import { type ChildProcess, spawn } from 'node:child_process'
import { once } from 'node:events'
import { createServer, request as httpRequest, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { makeWorkspace, writeArtifact } from './fixtures.ts'
import { TEST_TOKEN, useEdgeWorkspace } from './local-edge.ts'

// A small single-PUT cap: the artifact below takes the multipart path.
const suite = useEdgeWorkspace({ MAX_SINGLE_PUT_BYTES: String(6 * 1024 * 1024) })
const BIN = join(import.meta.dirname, '..', 'bin', 'deltaport.ts')

/**
 * A pass-through proxy in front of the edge that, while `holding`, never answers a multipart part
 * upload: the publish going through it stalls mid-upload, as on a slow link, until it is interrupted.
 */
let proxy: Server
let proxyUrl = ''
let holding = true
let held: () => void = () => undefined

beforeAll(async () => {
  proxy = createServer((req, res) => {
    if (holding && req.method === 'PUT' && /\/uploads\/[^/]+\/parts\//.test(req.url ?? '')) {
      req.resume()
      held()
      return
    }
    const upstream = new URL(req.url ?? '/', suite.edge.url)
    const forwarded = httpRequest(upstream, { method: req.method, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers)
      answer.pipe(res)
    })
    forwarded.on('error', () => res.destroy())
    req.pipe(forwarded)
  })
  proxy.listen(0, '127.0.0.1')
  await once(proxy, 'listening')
  proxyUrl = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`
})
afterAll(() => {
  proxy?.closeAllConnections()
  proxy?.close()
})

function publishCli(configFile: string, file: string): ChildProcess {
  return spawn(
    process.execPath,
    [BIN, '--config', configFile, 'publish', file, '--name', 'stopped', '--version', '1.0.0', '--no-deltas'],
    { env: { ...process.env, DELTAPORT_TOKEN: TEST_TOKEN }, stdio: ['ignore', 'pipe', 'pipe'] },
  )
}

async function exited(child: ChildProcess): Promise<{ code: number | null; signal: string | null }> {
  const [code, signal] = (await once(child, 'exit')) as [number | null, string | null]
  return { code, signal }
}

describe('a publish interrupted (Ctrl-C) during a multipart upload', () => {
  it('gives the upload up at the edge, so running it again publishes at once', async () => {
    const ws = await makeWorkspace(proxyUrl)
    const art = await writeArtifact(ws.dir, 'stopped.bin', 12 * 1024 * 1024)
    const partHeld = new Promise<void>((resolve) => {
      held = resolve
    })
    const first = publishCli(ws.configFile, art.path)
    await partHeld
    first.kill('SIGINT')
    const stopped = await exited(first)
    // Ended by the signal, as Ctrl-C ends any command.
    expect(stopped.signal === 'SIGINT' || stopped.code === 130).toBe(true)

    // Before, the staged publish held the version for 30 minutes: 409 "already being published".
    holding = false
    const again = publishCli(ws.configFile, art.path)
    let stderr = ''
    again.stderr?.on('data', (chunk: Buffer) => {
      stderr += chunk.toString()
    })
    const rerun = await exited(again)
    expect(stderr).not.toContain('already being published')
    expect(rerun.code).toBe(0)
  })
})
