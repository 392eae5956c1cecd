import { createHash } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { downloadVerified } from '../download.ts'
import { EdgeClient } from '../edge-client.ts'
import { linksOf } from '../test/signal-links.ts'
import { errorFromResponse } from './error-response.ts'
import { withHeaderTimeout } from './header-timeout.ts'
import { linkSignal } from './linked-signal.ts'
import { JSON_LIMITS, readJsonBounded } from './read-json.ts'

const BLOB = Buffer.alloc(64 * 1024, 7)
const BLOB_SHA = createHash('sha256').update(BLOB).digest('hex')

let server: Server
let base = ''
let dir = ''

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'deltaport-linked-'))
  server = createServer((req, res) => {
    if (req.url === '/hang') return // headers never come: aborted by the caller
    if (req.url === '/error') {
      res.writeHead(503, { 'content-type': 'application/problem+json' })
      res.end('{"type":"about:blank","title":"down","status":503}')
      return
    }
    if (req.url === '/half') {
      // Headers and the start of a body, then silence: only an abort (or the stall timer) ends its read.
      res.writeHead(500, { 'content-type': 'application/problem+json', 'content-length': '1000' })
      res.write('{"type":"about:blank",')
      return
    }
    if (req.url === '/blob') {
      res.writeHead(200, { 'content-length': String(BLOB.length), etag: `"${BLOB_SHA}"` })
      res.end(BLOB)
      return
    }
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end('{"ok":true}')
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
})

afterAll(async () => {
  server.closeAllConnections()
  await new Promise((resolve) => server.close(resolve))
  await rm(dir, { recursive: true, force: true })
})

describe('linkSignal', () => {
  it('follows its parents until released, and never aborts them', () => {
    const parent = new AbortController()
    const linked = linkSignal(parent.signal, undefined)
    expect(linksOf(parent.signal).listeners).toBe(1)
    linked.abort(new Error('own'))
    expect(linked.signal.aborted).toBe(true)
    expect(parent.signal.aborted).toBe(false)
    expect(linksOf(parent.signal).listeners).toBe(0)

    const second = linkSignal(parent.signal)
    parent.abort(new Error('parent'))
    expect(second.signal.reason).toEqual(new Error('parent'))
    expect(linkSignal(parent.signal).signal.aborted).toBe(true)

    const other = new AbortController()
    const released = linkSignal(other.signal)
    released.release()
    released.release()
    other.abort()
    expect(released.signal.aborted).toBe(false)
  })
})

describe('a long-lived signal under many fetches (the daemon polling for weeks)', () => {
  it('keeps nothing of each request, download and JSON read once it is done', async () => {
    const life = new AbortController()
    const edge = new EdgeClient(base)
    for (let i = 0; i < 150; i++) {
      const response = await edge.request('/json', { signal: life.signal })
      await readJsonBounded(response, JSON_LIMITS.prefetch, 'a test answer', { signal: life.signal })
    }
    for (let i = 0; i < 50; i++) {
      const partialPath = join(dir, `blob-${i}.part`)
      await downloadVerified({
        url: `${base}/blob`,
        partialPath,
        size: BLOB.length,
        sha256: BLOB_SHA,
        signal: life.signal,
      })
      await rm(partialPath, { force: true })
    }
    // Error answers read for their detail without the caller's signal, bodies cancelled unread or
    // read whole by fetch's own readers: each unlinks once its body is done with.
    const ask = withHeaderTimeout(fetch)
    for (let i = 0; i < 30; i++) {
      await errorFromResponse(await ask(`${base}/error`, { signal: life.signal }), 'a test')
      await (await ask(`${base}/json`, { signal: life.signal })).body?.cancel()
      expect(await (await ask(`${base}/json`, { signal: life.signal })).json()).toEqual({ ok: true })
    }
    expect(linksOf(life.signal)).toEqual({ listeners: 0, dependants: 0 })

    // Linked while a request is under way: aborting the lifetime signal still stops it.
    const hanging = edge.request('/hang', { signal: life.signal })
    await new Promise((resolve) => setTimeout(resolve, 50))
    expect(linksOf(life.signal).listeners).toBeGreaterThan(0)
    life.abort(new Error('daemon stopping'))
    await expect(hanging).rejects.toThrow('daemon stopping')
  })
})

describe('an answer whose body is still being read', () => {
  it("stays linked to the caller's signal until its body is done with, and stops when it aborts", async () => {
    const caller = new AbortController()
    const response = await withHeaderTimeout(fetch)(`${base}/half`, { signal: caller.signal })
    // The headers are in; the body is not: still linked.
    expect(linksOf(caller.signal).listeners).toBe(1)
    const started = performance.now()
    // Read as the daemon reads a refused poll: errorFromResponse takes no signal of its own.
    const reading = errorFromResponse(response, 'a test')
    setTimeout(() => caller.abort(new Error('daemon stopping')), 100)
    const error = await reading
    // Before: unlinked at the headers, the read went on until readBody's 30 s stall timer.
    expect(performance.now() - started).toBeLessThan(5000)
    expect(error.message).toContain('HTTP 500')
    expect(linksOf(caller.signal).listeners).toBe(0)
  }, 40_000)
})
