import { env } from 'cloudflare:workers'
import { afterEach, beforeEach, describe, expect, it, type MockInstance, vi } from 'vitest'
import { ProblemDetails } from '../../schemas/problem.ts'
import { countedBody, measuredBody } from '../http/upload-body.ts'
import { refusalOf, STORAGE_RETRY_AFTER_SECONDS } from '../storage/guarded-bucket.ts'
import { keys } from '../storage/keys.ts'
import { callApp, type DeltaUpload, deltaRefOf } from './delta-helpers.ts'
import { FaultyR2 } from './faulty-r2.ts'
import { auth, bytesOf, envelopeFor, sha256, startPublish } from './publish-helpers.ts'

/**
 * Upload bodies that fail on the client's side (ended before their Content-Length, ran past it, broke
 * off) are a 400 problem naming that, never a storage fault (no 503, no Retry-After, no "storage fault"
 * log line blaming R2), and store nothing; a body the runtime knows no length of but whose
 * Content-Length is right is stored. Faults of R2 itself stay 503 storage faults.
 */

type Shape = 'short' | 'long' | 'broken'

/** `bytes` as a stream the runtime knows no length of, in 1000-byte pieces; `broken` errors after 2000. */
function streamOf(bytes: Uint8Array, broken = false): ReadableStream<Uint8Array> {
  let offset = 0
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (broken && offset >= 2000) return controller.error(new Error('the client went away'))
      if (offset >= bytes.length) return controller.close()
      controller.enqueue(bytes.slice(offset, offset + 1000))
      offset += 1000
    },
  })
}

/** A request of `shape` for `bytes` (of the length the manifest says): the body sent and its header. */
function badBody(shape: Shape, bytes: Uint8Array): { body: ReadableStream<Uint8Array>; length: string } {
  const length = String(bytes.length)
  if (shape === 'short') return { body: streamOf(bytes.slice(0, bytes.length - 1500)), length }
  if (shape === 'long') return { body: streamOf(new Uint8Array([...bytes, 1, 2, 3])), length }
  return { body: streamOf(bytes, true), length }
}

const SLUG: Record<Shape, string> = {
  short: 'body-length-mismatch',
  long: 'body-length-mismatch',
  broken: 'request-body-incomplete',
}

let log: MockInstance<typeof console.log>
beforeEach(() => {
  log = vi.spyOn(console, 'log')
})
afterEach(() => {
  log.mockRestore()
})

function storageFaultsLogged(): string[] {
  return log.mock.calls.map((args) => String(args[0])).filter((line) => line.includes('storage fault'))
}

async function send(path: string, init: RequestInit, bucket: R2Bucket = env.ARTIFACTS) {
  const { response, bytes } = await callApp(path, init, { ...env, ARTIFACTS: bucket })
  return { response, text: new TextDecoder().decode(bytes) }
}

/** The answer is a 400 problem of `slug`, with no Retry-After, and R2 was not blamed in the log. */
function expectClientProblem(sent: { response: Response; text: string }, slug: string): void {
  expect(sent.response.status, sent.text).toBe(400)
  expect(sent.response.headers.get('content-type')).toBe('application/problem+json')
  expect(sent.response.headers.get('retry-after')).toBeNull()
  expect(ProblemDetails.parse(JSON.parse(sent.text)).type).toBe(`https://deltaport.dev/problems/${slug}`)
  expect(storageFaultsLogged()).toEqual([])
}

let versions = 0
/** A genuine R2 fault: 503 storage-unavailable with Retry-After, logged once as a storage fault. */
function expectStorageFault(sent: { response: Response; text: string }): void {
  expect(sent.response.status, sent.text).toBe(503)
  expect(sent.response.headers.get('retry-after')).toBe(String(STORAGE_RETRY_AFTER_SECONDS))
  expect(ProblemDetails.parse(JSON.parse(sent.text)).type).toContain('/storage-unavailable')
  expect(storageFaultsLogged()).toHaveLength(1)
}

/** The blob stored for `name@version` holds exactly `bytes`. */
async function expectStoredBlob(name: string, version: string, bytes: Uint8Array): Promise<void> {
  const stored = await env.ARTIFACTS.get(keys.blob(name, version))
  expect(await sha256(new Uint8Array((await stored?.arrayBuffer()) ?? new ArrayBuffer(0)))).toBe(
    await sha256(bytes),
  )
}

async function staged(
  name: string,
  bytes: Uint8Array,
  overrides: Parameters<typeof envelopeFor>[3] = {},
): Promise<string> {
  versions += 1
  const version = `1.0.${versions}`
  const envelope = await envelopeFor(name, version, bytes, { serial: versions, ...overrides })
  expect((await startPublish(envelope)).status).toBe(201)
  return version
}

describe('PUT …/blob with a body that fails on the client side', () => {
  for (const shape of ['short', 'long', 'broken'] as const) {
    it(`${shape}: 400 ${SLUG[shape]}, nothing stored, and the same publish then succeeds`, async () => {
      const bytes = bytesOf(5000, 61)
      const version = await staged('body-blob', bytes)
      const path = `/v1/publish/body-blob/${version}/blob`
      const { body, length } = badBody(shape, bytes)
      const sent = await send(path, { method: 'PUT', headers: { ...auth, 'content-length': length }, body })
      expectClientProblem(sent, SLUG[shape])
      expect(await env.ARTIFACTS.head(keys.blob('body-blob', version))).toBeNull()
      expect(await env.ARTIFACTS.head(keys.manifest('body-blob', version))).toBeNull()
      // The staged manifest was kept (the bytes were never judged): the retry with the right body commits.
      const retry = await send(path, {
        method: 'PUT',
        headers: { ...auth, 'content-length': length },
        body: streamOf(bytes),
      })
      expect(retry.response.status, retry.text).toBe(201)
      await expectStoredBlob('body-blob', version, bytes)
    })
  }

  it('short into a slot already holding the bytes (a retry after a failed commit): 400, not committed', async () => {
    const bytes = bytesOf(5000, 69)
    const version = await staged('body-blob', bytes)
    // The bytes an earlier attempt stored before its commit failed: the upload only drains its body.
    await env.ARTIFACTS.put(keys.blob('body-blob', version), bytes, { sha256: await sha256(bytes) })
    const { body, length } = badBody('short', bytes)
    const sent = await send(`/v1/publish/body-blob/${version}/blob`, {
      method: 'PUT',
      headers: { ...auth, 'content-length': length },
      body,
    })
    expectClientProblem(sent, 'body-length-mismatch')
    expect(await env.ARTIFACTS.head(keys.manifest('body-blob', version))).toBeNull()
  })

  it('a body of unknown length whose Content-Length is right is stored (it was a 503 storage fault)', async () => {
    const bytes = bytesOf(70_000, 62)
    const version = await staged('body-blob', bytes)
    const sent = await send(`/v1/publish/body-blob/${version}/blob`, {
      method: 'PUT',
      headers: { ...auth, 'content-length': String(bytes.length) },
      body: streamOf(bytes),
    })
    expect(sent.response.status, sent.text).toBe(201)
    expect((await env.ARTIFACTS.head(keys.blob('body-blob', version)))?.size).toBe(bytes.length)
    expect(storageFaultsLogged()).toEqual([])
  })

  it('without a Content-Length: 411 length-required, nothing stored', async () => {
    const bytes = bytesOf(5000, 63)
    const version = await staged('body-blob', bytes)
    const sent = await send(`/v1/publish/body-blob/${version}/blob`, {
      method: 'PUT',
      headers: auth,
      body: streamOf(bytes),
    })
    expect(sent.response.status, sent.text).toBe(411)
    expect(ProblemDetails.parse(JSON.parse(sent.text)).type).toContain('/length-required')
    expect(await env.ARTIFACTS.head(keys.blob('body-blob', version))).toBeNull()
  })

  it('a genuine R2 fault on the put is still a 503 storage fault, logged as one', async () => {
    const bytes = bytesOf(5000, 64)
    const version = await staged('body-blob', bytes)
    const faulty = new FaultyR2(env.ARTIFACTS, { failNth: { put: [1] } })
    const sent = await send(
      `/v1/publish/body-blob/${version}/blob`,
      { method: 'PUT', headers: { ...auth, 'content-length': String(bytes.length) }, body: streamOf(bytes) },
      faulty,
    )
    expectStorageFault(sent)
    expect(await env.ARTIFACTS.head(keys.blob('body-blob', version))).toBeNull()
  })
})

describe('PUT …/parts/:part with a body that fails on the client side', () => {
  async function openUpload(bytes: Uint8Array): Promise<{ version: string; parts: string }> {
    const version = await staged('body-part', bytes)
    const created = await send(`/v1/publish/body-part/${version}/uploads`, { method: 'POST', headers: auth })
    expect(created.response.status, created.text).toBe(201)
    const { uploadId } = JSON.parse(created.text) as { uploadId: string }
    return { version, parts: `/v1/publish/body-part/${version}/uploads/${encodeURIComponent(uploadId)}` }
  }

  for (const shape of ['short', 'long', 'broken'] as const) {
    it(`${shape}: 400 ${SLUG[shape]}, no part recorded, and the upload then completes`, async () => {
      const bytes = bytesOf(6000, 65)
      const { version, parts } = await openUpload(bytes)
      const { body, length } = badBody(shape, bytes)
      const sent = await send(`${parts}/parts/1`, {
        method: 'PUT',
        headers: { ...auth, 'content-length': length },
        body,
      })
      expectClientProblem(sent, SLUG[shape])
      expect(sent.text).not.toContain('etag')
      // The upload is intact: the same part sent whole completes it, and only its bytes are the blob.
      const part = await send(`${parts}/parts/1`, {
        method: 'PUT',
        headers: { ...auth, 'content-length': length },
        body: streamOf(bytes),
      })
      expect(part.response.status, part.text).toBe(200)
      const complete = await send(`${parts}/complete`, {
        method: 'POST',
        headers: { ...auth, 'content-type': 'application/json' },
        body: JSON.stringify({ parts: [JSON.parse(part.text)] }),
      })
      expect(complete.response.status, complete.text).toBe(201)
      await expectStoredBlob('body-part', version, bytes)
    })
  }

  it('a genuine R2 fault on the part is still a 503 storage fault, logged as one', async () => {
    const bytes = bytesOf(6000, 66)
    const { parts } = await openUpload(bytes)
    const faulty = new FaultyR2(env.ARTIFACTS, { failNth: { uploadPart: [1] } })
    const sent = await send(
      `${parts}/parts/1`,
      { method: 'PUT', headers: { ...auth, 'content-length': String(bytes.length) }, body: streamOf(bytes) },
      faulty,
    )
    expectStorageFault(sent)
  })
})

describe('PUT …/deltas/:from/:method with a body that fails on the client side', () => {
  for (const shape of ['short', 'long', 'broken'] as const) {
    it(`${shape}: 400 ${SLUG[shape]}, nothing stored, and the same delta then uploads`, async () => {
      const upload: DeltaUpload = { from: '0.9.0', method: 'vcdiff', bytes: bytesOf(5000, 67) }
      const version = await staged('body-delta', bytesOf(3000, 68), { deltas: [await deltaRefOf(upload)] })
      const path = `/v1/publish/body-delta/${version}/deltas/0.9.0/vcdiff`
      const { body, length } = badBody(shape, upload.bytes)
      const sent = await send(path, { method: 'PUT', headers: { ...auth, 'content-length': length }, body })
      expectClientProblem(sent, SLUG[shape])
      expect(await env.ARTIFACTS.head(keys.delta('body-delta', '0.9.0', version, 'vcdiff'))).toBeNull()
      const retry = await send(path, {
        method: 'PUT',
        headers: { ...auth, 'content-length': length },
        body: streamOf(upload.bytes),
      })
      expect(retry.response.status, retry.text).toBe(201)
    })
  }
})

describe('a counted body whose consumer gives up (an R2 fault mid-put)', () => {
  /** A request body of 5000 bytes whose 1000-byte pieces arrive every 30 ms: still in flight when cancelled. */
  function trickle(): ReadableStream<Uint8Array> {
    let sent = 0
    return new ReadableStream<Uint8Array>({
      async pull(controller) {
        if (sent > 0) await scheduler.wait(30)
        controller.enqueue(new Uint8Array(1000))
        if (++sent === 5) controller.close()
      },
    })
  }

  // R2 failing a put cancels the stream it was reading while the next read of the request is pending.
  // The cancel ends that read; the body must not then be judged "ended short" and marked refused, or the
  // guard would answer R2's fault as a 400 body-length-mismatch, which a client does not retry.
  const fault = new Error('put: We encountered an internal error. Please try again. (10001)')

  it('countedBody: cancelled during a pending read, it reports no failure of the body', async () => {
    const failed = vi.fn()
    const reader = countedBody(trickle(), 5000, failed).getReader()
    await reader.read()
    const pending = reader.read()
    await scheduler.wait(5)
    await reader.cancel(fault)
    await pending
    await scheduler.wait(100)
    expect(failed).not.toHaveBeenCalled()
  })

  it('measuredBody: cancelled by its consumer, it is not marked refused (the put stays a storage fault)', async () => {
    const measured = measuredBody(trickle(), 5000)
    const reader = measured.getReader()
    await reader.read()
    await scheduler.wait(5)
    await reader.cancel(fault)
    await scheduler.wait(200)
    expect(refusalOf(measured)).toBeNull()
  })
})
