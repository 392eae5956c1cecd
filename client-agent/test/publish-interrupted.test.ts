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
let refusingGiveUps = false

beforeAll(async () => {
  proxy = createServer((req, res) => {
    if (req.method === 'PUT' && holding?.test(req.url ?? '')) {
      req.resume()
      held()
      return
    }
    // The link down just when the CLI tries to give its attempt up: the edge never hears of it.
    if (req.method === 'DELETE' && refusingGiveUps) {
      req.socket.destroy()
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

/** Runs the publish again, straight to the edge; its exit code and what it printed. */
async function rerun(configFile: string, file: string, name: string) {
  const again = publishCli(configFile, file, name)
  let stderr = ''
  let stdout = ''
  again.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString()
  })
  again.stdout?.on('data', (chunk: Buffer) => {
    stdout += chunk.toString()
  })
  const { code } = await exited(again)
  return { code, stderr, stdout }
}

/** Everything `child` writes on stderr, as it comes. */
function stderrOf(child: ChildProcess): { text: string } {
  const collected = { text: '' }
  child.stderr?.on('data', (chunk: Buffer) => {
    collected.text += chunk.toString()
  })
  return collected
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
    const said = stderrOf(first)
    await partHeld
    first.kill('SIGINT')
    const stopped = await exited(first)
    // Ended by the signal, as Ctrl-C ends any command, saying what it left.
    expect(stopped.signal === 'SIGINT' || stopped.code === 130).toBe(true)
    expect(said.text).toContain(
      'stopped by SIGINT: nothing was published and nothing of it is left staged at the edge; run the publish again',
    )

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
    const said = stderrOf(first)
    await blobHeld
    first.kill('SIGINT')
    const stopped = await exited(first)
    expect(stopped.signal === 'SIGINT' || stopped.code === 130).toBe(true)
    expect(said.text).toContain('stopped by SIGINT: nothing was published and nothing of it is left staged')

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

/**
 * A run that could not give its attempt up: killed (SIGKILL, a crash, the laptop's battery) or stopped
 * while the edge was out of reach. The edge holds the version for that attempt for 30 minutes; the CLI
 * keeps the attempt's name on disk until the edge has heard its fate, so running the same publish
 * again on this machine gives it up first and publishes at once.
 */
describe('a publish that could not give its attempt up', () => {
  it('killed mid-upload (SIGKILL): running it again gives the killed attempt up and publishes', async () => {
    const ws = await makeWorkspace(proxyUrl)
    const art = await writeArtifact(ws.dir, 'killed.bin', 1024 * 1024)
    holding = BLOB_PUT
    const blobHeld = new Promise<void>((resolve) => {
      held = resolve
    })
    const first = publishCli(ws.configFile, art.path, 'killed')
    await blobHeld
    first.kill('SIGKILL')
    await exited(first)

    holding = null
    const again = await rerun(ws.configFile, art.path, 'killed')
    expect(again.stderr).not.toContain('already being published')
    expect(again.stderr).toContain('gave up the publish of killed@1.0.0 that an earlier run')
    expect(again.code).toBe(0)
  })

  it('stopped while the edge was out of reach: running it again gives that attempt up', async () => {
    const ws = await makeWorkspace(proxyUrl)
    const art = await writeArtifact(ws.dir, 'unreached.bin', 1024 * 1024)
    holding = BLOB_PUT
    refusingGiveUps = true
    const blobHeld = new Promise<void>((resolve) => {
      held = resolve
    })
    const first = publishCli(ws.configFile, art.path, 'unreached')
    const said = stderrOf(first)
    await blobHeld
    first.kill('SIGINT')
    await exited(first)
    expect(said.text).toContain(
      'stopped by SIGINT: nothing was published, but the edge could not be told to give the attempt up',
    )

    holding = null
    refusingGiveUps = false
    const again = await rerun(ws.configFile, art.path, 'unreached')
    expect(again.stderr).not.toContain('already being published')
    expect(again.code).toBe(0)
    // Settled: a third run finds nothing of it left to give up.
    const third = await rerun(ws.configFile, art.path, 'unreached')
    expect(third.stdout).toContain('already published with these bytes')
    expect(third.stderr).not.toContain('gave up')
  })
})
