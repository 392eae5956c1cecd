import { createHash, randomBytes } from 'node:crypto'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { downloadVerified } from './download.ts'
import { AgentError } from './errors.ts'
import { type RangeFault, type RangeServer, startRangeServer } from './test/range-server.ts'

const body = randomBytes(256 * 1024)
const sha256 = createHash('sha256').update(body).digest('hex')

let server: RangeServer | undefined
let dir: string | undefined
afterEach(async () => {
  await server?.close()
  if (dir) await rm(dir, { recursive: true, force: true })
  server = undefined
  dir = undefined
})

async function download(fault: (request: number) => RangeFault, extra: { retries?: number } = {}) {
  server = await startRangeServer(body, (_offset, _bytes, request) => fault(request))
  dir = await mkdtemp(join(tmpdir(), 'dp-download-'))
  const partialPath = join(dir, 'partial')
  const outcome = await downloadVerified({
    url: server.url,
    partialPath,
    size: body.length,
    sha256,
    stallMs: 200,
    ...extra,
  })
  return { outcome, bytes: await readFile(partialPath) }
}

describe('downloadVerified within one command', () => {
  it('resumes after a body that stalls, from where it stopped', async () => {
    const { outcome, bytes } = await download((request) => (request === 1 ? 'stall' : undefined))
    expect(Buffer.compare(bytes, body)).toBe(0)
    expect(server?.requests()).toBe(2)
    // Half came with the stalled answer; the retry asked only for the rest.
    expect(outcome).toEqual({ resumedFrom: 0, fetched: body.length })
    expect(server?.served()).toBe(body.length)
  })

  it('keeps going while each attempt moves the file forward, however many drop', async () => {
    // Eight dropped connections in a row, each after half of what it was asked: more than `retries`,
    // but every one made progress.
    const { bytes } = await download((request) => (request <= 8 ? 'cut' : undefined), { retries: 2 })
    expect(Buffer.compare(bytes, body)).toBe(0)
    expect(server?.requests()).toBe(9)
  })

  it('retries a 503 from the edge or a cache in between', async () => {
    const { bytes } = await download((request) => (request <= 2 ? 'unavailable' : undefined))
    expect(Buffer.compare(bytes, body)).toBe(0)
    expect(server?.requests()).toBe(3)
  })

  it('gives up after `retries` attempts in a row that fetch nothing, with the edge answer', async () => {
    const failure = await download(() => 'unavailable', { retries: 2 }).catch((error: unknown) => error)
    expect(failure).toBeInstanceOf(AgentError)
    expect((failure as AgentError).code).toBe('edge-rejected')
    expect((failure as AgentError).details.status).toBe(503)
    expect(server?.requests()).toBe(3)
  })

  it('blames the network, not the partial, when a later attempt rewrote the file from byte 0', async () => {
    // The partial's bytes are kept by the first answer (a 206, dropped halfway), but the second answer is
    // a 200 (a cache on a miss ignores the range) that rewrites the whole file, damaged on the way: no
    // byte from before this call is left, so downloading it all again would not help.
    server = await startRangeServer(
      Uint8Array.from(body),
      (_offset, bytes, request) => {
        // Flip the last byte (a copy of the body: the server slices a Uint8Array).
        if (request === 2) bytes.set([(body.at(-1) ?? 0) ^ 0xff], bytes.length - 1)
        return request === 1 ? 'cut' : undefined
      },
      { ignoreRange: (request) => request === 2 },
    )
    dir = await mkdtemp(join(tmpdir(), 'dp-download-'))
    const partialPath = join(dir, 'partial')
    await writeFile(partialPath, body.subarray(0, 1000))
    const failure = await downloadVerified({ url: server.url, partialPath, size: body.length, sha256 }).catch(
      (error: unknown) => error,
    )
    expect(failure).toBeInstanceOf(AgentError)
    expect((failure as AgentError).code).toBe('integrity-mismatch')
    expect(server.requests()).toBe(2)
  })

  it('counts an attempt that rewrote the file from byte 0 without passing its old end as no progress', async () => {
    // A server (or a cache in between) that ignores Range and drops every answer halfway: each attempt
    // starts over from byte 0 and writes bytes, yet the file never gets past its first half.
    server = await startRangeServer(Uint8Array.from(body), () => 'cut', { ignoreRange: () => true })
    dir = await mkdtemp(join(tmpdir(), 'dp-download-'))
    const partialPath = join(dir, 'partial')
    const failure = await downloadVerified({
      url: server.url,
      partialPath,
      size: body.length,
      sha256,
      retries: 2,
    }).catch((error: unknown) => error)
    expect(failure).toBeInstanceOf(AgentError)
    // The first attempt moved the file forward; the three after it did not.
    expect(server.requests()).toBe(4)
  })
})
