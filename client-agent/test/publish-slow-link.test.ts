import { once } from 'node:events'
import { createServer, request as httpRequest, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ArtifactIndex } from '../../schemas/artifact-index.ts'
import { publishArtifact } from '../publish.ts'
import { writeArtifact } from './fixtures.ts'
import { TEST_TOKEN, useEdgeWorkspace } from './local-edge.ts'

/**
 * Publishing over a slow uplink, to the real edge through a proxy that passes upload bodies on at a fixed
 * rate. The edge answers an upload only once its last byte arrived, so the wait for that answer's headers
 * must not start before the body is sent: an upload that takes longer than the CLI's stall timer (30 s;
 * 2 s here) is progress, not a stall. Before, every single PUT or part that took longer to send than the
 * timer failed as "the edge sent no answer" (a 50 MiB artifact over a 10 Mbit/s uplink, a 5 MiB part over
 * 1 Mbit/s), however steadily its bytes flowed.
 */

// Artifacts above 10 MiB take the multipart path (5 MiB parts, the last one smaller).
const suite = useEdgeWorkspace({ MAX_SINGLE_PUT_BYTES: String(10 * 1024 * 1024) })
const STALL_MS = 3_000
/**
 * Bytes per second the proxy passes an upload body on at. Socket buffers on loopback take a few MiB
 * ahead of the proxy, so the rate must drain them within the timer once the last byte is handed over;
 * and a full send buffer tells the sender it may write again only once a third to a half of it (up to
 * 2 MiB here) drained, a gap without progress that must stay well inside the timer.
 */
let rate = 1024 * 1024

let proxy: Server
let proxyUrl = ''
/** How long the proxy holds a multipart complete before passing it on (the edge copying a big upload). */
let completeDelayMs = 0
beforeAll(async () => {
  proxy = createServer(async (req, res) => {
    if (req.method === 'POST' && req.url?.endsWith('/complete') && completeDelayMs > 0) {
      req.pause()
      await new Promise((resolve) => setTimeout(resolve, completeDelayMs))
      req.resume()
    }
    const upstream = new URL(req.url ?? '/', suite.edge.url)
    const forwarded = httpRequest(upstream, { method: req.method, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers)
      answer.pipe(res)
    })
    forwarded.on('error', () => res.destroy())
    if (req.method !== 'PUT') {
      req.pipe(forwarded)
      return
    }
    // Each chunk held for its share of a second: `rate` bytes a second.
    req.on('data', (chunk: Buffer) => {
      req.pause()
      forwarded.write(chunk)
      setTimeout(() => req.resume(), (chunk.length / rate) * 1000)
    })
    req.on('end', () => forwarded.end())
  })
  proxy.listen(0, '127.0.0.1')
  await once(proxy, 'listening')
  proxyUrl = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`
})
afterAll(() => {
  proxy?.closeAllConnections()
  proxy?.close()
})

async function listed(name: string): Promise<string[]> {
  const response = await fetch(`${suite.edge.url}/v1/artifacts/${name}`)
  return response.status === 404
    ? []
    : ArtifactIndex.parse(await response.json()).versions.map((v) => v.version)
}

describe('publish over a link slower than the stall timer', () => {
  it('a single PUT whose body takes longer to send than the timer is published', async () => {
    // 9 MiB at 2 MiB/s: 4.5 s of steady upload, 1.5 times the timer. At 1 MiB/s the send buffer's
    // refill gap (above) came within the timer's reach on a loaded machine: one run in four failed.
    rate = 2 * 1024 * 1024
    const art = await writeArtifact(suite.ws.dir, 'slow-single.bin', 9 * 1024 * 1024)
    const published = await publishArtifact({
      edgeUrl: proxyUrl,
      token: TEST_TOKEN,
      keyFile: suite.ws.keyFile,
      file: art.path,
      name: 'slow-single',
      version: '1.0.0',
      stallMs: STALL_MS,
    })
    rate = 1024 * 1024
    expect(published.serial).toBe(1)
    expect(await listed('slow-single')).toEqual(['1.0.0'])
  }, 60_000)

  it('multipart parts that take longer to send than the timer are published', async () => {
    // 5 MiB parts at 1 MiB/s: 5 s each.
    const art = await writeArtifact(suite.ws.dir, 'slow-parts.bin', 11 * 1024 * 1024)
    const published = await publishArtifact({
      edgeUrl: proxyUrl,
      token: TEST_TOKEN,
      keyFile: suite.ws.keyFile,
      file: art.path,
      name: 'slow-parts',
      version: '1.0.0',
      stallMs: STALL_MS,
    })
    expect(published.serial).toBe(1)
    expect(await listed('slow-parts')).toEqual(['1.0.0'])
  }, 120_000)

  it('a multipart complete the edge takes longer than the timer to answer is published', async () => {
    // The edge copies and verifies the whole upload before it answers: the CLI gives it time that grows
    // with the artifact (3 s + 11 MiB at 4 MiB/s here), not the bare timer.
    // Held just past the timer: the edge's own copy comes on top, and at load it took over a second.
    completeDelayMs = STALL_MS + 500
    try {
      const art = await writeArtifact(suite.ws.dir, 'slow-complete.bin', 11 * 1024 * 1024)
      const published = await publishArtifact({
        edgeUrl: proxyUrl,
        token: TEST_TOKEN,
        keyFile: suite.ws.keyFile,
        file: art.path,
        name: 'slow-complete',
        version: '1.0.0',
        stallMs: STALL_MS,
      })
      expect(published.settled).toBeUndefined()
      expect(await listed('slow-complete')).toEqual(['1.0.0'])
    } finally {
      completeDelayMs = 0
    }
  }, 120_000)
})
