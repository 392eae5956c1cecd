import { createHash, randomBytes } from 'node:crypto'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { type DownloadOutcome, downloadVerified } from './download.ts'
import { AgentError } from './errors.ts'
import {
  type RangeFault,
  type RangeServer,
  type RangeServerOptions,
  startRangeServer,
} from './test/range-server.ts'

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

interface DownloadSetup {
  retries?: number
  /** Bytes already in the partial file, as an earlier run left them. */
  partial?: Uint8Array
  server?: RangeServerOptions
}

/**
 * Downloads `body` from a range server whose answers `fault` damages (it may also change the bytes of
 * a copy of the body in place); the file's bytes, or what the download threw.
 */
async function download(
  fault: (request: number, bytes: Uint8Array) => RangeFault,
  setup: DownloadSetup = {},
): Promise<{ bytes: Uint8Array; outcome: DownloadOutcome } | { failure: unknown }> {
  server = await startRangeServer(
    Uint8Array.from(body),
    (_offset, bytes, request) => fault(request, bytes),
    setup.server,
  )
  dir = await mkdtemp(join(tmpdir(), 'dp-download-'))
  const partialPath = join(dir, 'partial')
  if (setup.partial) await writeFile(partialPath, setup.partial)
  try {
    const outcome = await downloadVerified({
      url: server.url,
      partialPath,
      size: body.length,
      sha256,
      stallMs: 200,
      ...(setup.retries === undefined ? {} : { retries: setup.retries }),
    })
    return { outcome, bytes: await readFile(partialPath) }
  } catch (failure) {
    return { failure }
  }
}

/** The file a download that must succeed ended with, and its outcome. */
async function downloaded(...args: Parameters<typeof download>) {
  const result = await download(...args)
  if ('failure' in result) throw result.failure
  return result
}

/** What a download that must fail threw: an AgentError. */
async function failed(...args: Parameters<typeof download>): Promise<AgentError> {
  const result = await download(...args)
  if (!('failure' in result)) throw new Error('the download succeeded')
  expect(result.failure).toBeInstanceOf(AgentError)
  return result.failure as AgentError
}

describe('downloadVerified within one command', () => {
  it('resumes after a body that stalls, from where it stopped', async () => {
    const { outcome, bytes } = await downloaded((request) => (request === 1 ? 'stall' : undefined))
    expect(Buffer.compare(bytes, body)).toBe(0)
    expect(server?.requests()).toBe(2)
    // Half came with the stalled answer; the retry asked only for the rest.
    expect(outcome).toEqual({ resumedFrom: 0, fetched: body.length })
    expect(server?.served()).toBe(body.length)
  })

  it('keeps going while each attempt moves the file forward, however many drop', async () => {
    // Eight dropped connections in a row, each after half of what it was asked: more than `retries`,
    // but every one made progress.
    const { bytes } = await downloaded((request) => (request <= 8 ? 'cut' : undefined), { retries: 2 })
    expect(Buffer.compare(bytes, body)).toBe(0)
    expect(server?.requests()).toBe(9)
  })

  it('retries a 503 from the edge or a cache in between', async () => {
    const { bytes } = await downloaded((request) => (request <= 2 ? 'unavailable' : undefined))
    expect(Buffer.compare(bytes, body)).toBe(0)
    expect(server?.requests()).toBe(3)
  })

  it('gives up after `retries` attempts in a row that fetch nothing, with the edge answer', async () => {
    const failure = await failed(() => 'unavailable', { retries: 2 })
    expect(failure.code).toBe('edge-rejected')
    expect(failure.details.status).toBe(503)
    expect(server?.requests()).toBe(3)
  })

  it('blames the network, not the partial, when a later attempt rewrote the file from byte 0', async () => {
    // The partial's bytes are kept by the first answer (a 206, dropped halfway), but the second answer is
    // a 200 (a cache on a miss ignores the range) that rewrites the whole file, damaged on the way: no
    // byte from before this call is left, so downloading it all again would not help.
    const failure = await failed(
      (request, bytes) => {
        // Flip the last byte (of the server's copy of the body).
        if (request === 2) bytes.set([(body.at(-1) ?? 0) ^ 0xff], bytes.length - 1)
        return request === 1 ? 'cut' : undefined
      },
      { partial: body.subarray(0, 1000), server: { ignoreRange: (request) => request === 2 } },
    )
    expect(failure.code).toBe('integrity-mismatch')
    expect(server?.requests()).toBe(2)
  })

  it('reports as resumed only the bytes of an earlier run the finished file still holds', async () => {
    // A partial that kept its bytes: resumed from its end.
    const kept = await downloaded(() => undefined, { partial: body.subarray(0, 1000) })
    expect(kept.outcome).toEqual({ resumedFrom: 1000, fetched: body.length - 1000 })
    // A partial longer than the artifact (a different file left under its name) is deleted.
    const oversized = await downloaded(() => undefined, {
      partial: new Uint8Array(body.length + 10),
    })
    expect(oversized.outcome).toEqual({ resumedFrom: 0, fetched: body.length })
  })

  it('reports nothing resumed when the edge answered a resume with the whole file', async () => {
    const { outcome } = await downloaded(() => undefined, {
      partial: body.subarray(0, 1000),
      server: { ignoreRange: () => true },
    })
    expect(outcome).toEqual({ resumedFrom: 0, fetched: body.length })
  })

  it('counts an attempt that rewrote the file from byte 0 without passing its old end as no progress', async () => {
    // A server (or a cache in between) that ignores Range and drops every answer halfway: each attempt
    // starts over from byte 0 and writes bytes, yet the file never gets past its first half.
    await failed(() => 'cut', { retries: 2, server: { ignoreRange: () => true } })
    // The first attempt moved the file forward; the three after it did not.
    expect(server?.requests()).toBe(4)
  })
})
