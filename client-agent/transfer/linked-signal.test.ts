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
    expect(linksOf(life.signal)).toEqual({ listeners: 0, dependants: 0 })

    // Linked while a request is under way: aborting the lifetime signal still stops it.
    const hanging = edge.request('/hang', { signal: life.signal })
    await new Promise((resolve) => setTimeout(resolve, 50))
    expect(linksOf(life.signal).listeners).toBeGreaterThan(0)
    life.abort(new Error('daemon stopping'))
    await expect(hanging).rejects.toThrow('daemon stopping')
  })
})
