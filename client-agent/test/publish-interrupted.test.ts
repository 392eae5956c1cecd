import { type ChildProcess, spawn } from 'node:child_process'
import { once } from 'node:events'
import { createServer, request as httpRequest, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { publishArtifact } from '../publish.ts'
import { makeWorkspace, writeArtifact } from './fixtures.ts'
import { TEST_TOKEN, useEdgeWorkspace } from './local-edge.ts'

// A small single-PUT cap: artifacts above 6 MiB take the multipart path, smaller ones one PUT.
const suite = useEdgeWorkspace({ MAX_SINGLE_PUT_BYTES: String(6 * 1024 * 1024) })
const BIN = join(import.meta.dirname, '..', 'bin', 'deltaport.ts')

const PART_PUT = /\/uploads\/[^/]+\/parts\//
const BLOB_PUT = /\/blob$/

/**
 * A pass-through proxy in front of the edge. An upload PUT matching `holding` is never answered: the
 * publish going through it stalls mid-upload, as on a slow link, until it is interrupted. One matching
 * `dropping` has its connection cut once its first bytes arrive, as a dropped link does. Either way the
 * edge never sees that upload, as when a cut-off request never reaches its handler's cleanup.
 */
let proxy: Server
let proxyUrl = ''
let holding: RegExp | null = PART_PUT
let dropping: RegExp | null = null
let held: () => void = () => undefined

beforeAll(async () => {
  proxy = createServer((req, res) => {
    if (req.method === 'PUT' && holding?.test(req.url ?? '')) {
      req.resume()
      held()
      return
    }
    if (req.method === 'PUT' && dropping?.test(req.url ?? '')) {
      req.once('data', () => req.socket.destroy())
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

function publishCli(configFile: string, file: string, name = 'stopped'): ChildProcess {
  return spawn(
    process.execPath,
    [BIN, '--config', configFile, 'publish', file, '--name', name, '--version', '1.0.0', '--no-deltas'],
    { env: { ...process.env, DELTAPORT_TOKEN: TEST_TOKEN }, stdio: ['ignore', 'pipe', 'pipe'] },
  )
}

/** Runs the publish again, straight to the edge; its exit code and what it printed on stderr. */
async function rerun(configFile: string, file: string, name: string) {
  const again = publishCli(configFile, file, name)
  let stderr = ''
  again.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString()
  })
  const { code } = await exited(again)
  return { code, stderr }
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
    holding = null
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

describe('a publish cut off during its single-PUT upload', () => {
  it('Ctrl-C gives the staged attempt up at the edge, so running it again publishes at once', async () => {
    const ws = await makeWorkspace(proxyUrl)
    const art = await writeArtifact(ws.dir, 'single.bin', 1024 * 1024)
    holding = BLOB_PUT
    const blobHeld = new Promise<void>((resolve) => {
      held = resolve
    })
    const first = publishCli(ws.configFile, art.path, 'single')
    await blobHeld
    first.kill('SIGINT')
    const stopped = await exited(first)
    expect(stopped.signal === 'SIGINT' || stopped.code === 130).toBe(true)

    // Before, nothing could give a single PUT up: 409 "already being published" for 30 minutes.
    holding = null
    const again = await rerun(ws.configFile, art.path, 'single')
    expect(again.stderr).not.toContain('already being published')
    expect(again.code).toBe(0)
  })

  it('a dropped link gives the attempt up too, so running it again publishes at once', async () => {
    const ws = await makeWorkspace(proxyUrl)
    const art = await writeArtifact(ws.dir, 'dropped.bin', 1024 * 1024)
    dropping = BLOB_PUT
    const cut = publishArtifact({
      edgeUrl: proxyUrl,
      token: TEST_TOKEN,
      keyFile: ws.keyFile,
      file: art.path,
      name: 'dropped',
      version: '1.0.0',
    })
    await expect(cut).rejects.toMatchObject({ code: 'network' })

    dropping = null
    const again = await rerun(ws.configFile, art.path, 'dropped')
    expect(again.stderr).not.toContain('already being published')
    expect(again.code).toBe(0)
  })
})
