import { env } from 'cloudflare:workers'
import { describe, expect, it } from 'vitest'
import { buildChunkIndex, encodeChunkIndex } from '../../delta/chunking/index.ts'
import { ArtifactIndex } from '../../schemas/artifact-index.ts'
import type { SignedManifest } from '../../schemas/manifest.ts'
import { PlanResponse } from '../../schemas/plan.ts'
import { ProblemDetails } from '../../schemas/problem.ts'
import { Published } from '../../schemas/publish.ts'
import { PENDING_ABANDONED_AFTER_MS, stagePending } from '../publish/pending-manifest.ts'
import { COMMIT_ABANDONED_AFTER_MS, commitVersion } from '../storage/artifact-store.ts'
import { keys } from '../storage/keys.ts'
import { callApp, deltaRefOf, putChunks, putDelta } from './delta-helpers.ts'
import { FaultyR2 } from './faulty-r2.ts'
import {
  auth,
  bytesOf,
  call,
  envelopeFor,
  publishSingle,
  sha256,
  slowPut,
  startPublish,
} from './publish-helpers.ts'

/**
 * Overlapping publishes of one version: whatever order their requests land in, a failed upload never
 * removes bytes another attempt committed, and a second manifest never silently replaces a staged one.
 */

function putBlob(name: string, version: string, body: Uint8Array): Promise<Response> {
  return call(`/v1/publish/${name}/${version}/blob`, {
    method: 'PUT',
    headers: { ...auth, 'content-length': String(body.length) },
    body,
  })
}

async function startUpload(name: string, version: string): Promise<string> {
  const started = await call(`/v1/publish/${name}/${version}/uploads`, { method: 'POST', headers: auth })
  expect(started.status).toBe(201)
  return ((await started.json()) as { uploadId: string }).uploadId
}

const uploadPath = (name: string, version: string, uploadId: string) =>
  `/v1/publish/${name}/${version}/uploads/${encodeURIComponent(uploadId)}`

function abortUpload(name: string, version: string, uploadId: string): Promise<Response> {
  return call(uploadPath(name, version, uploadId), { method: 'DELETE', headers: auth })
}

function uploadPart(name: string, version: string, uploadId: string, body: Uint8Array): Promise<Response> {
  return call(`${uploadPath(name, version, uploadId)}/parts/1`, {
    method: 'PUT',
    headers: { ...auth, 'content-length': String(body.length) },
    body,
  })
}

async function completeUpload(name: string, version: string, uploadId: string, part: Response) {
  return call(`${uploadPath(name, version, uploadId)}/complete`, {
    method: 'POST',
    headers: { ...auth, 'content-type': 'application/json' },
    body: JSON.stringify({ parts: [await part.json()] }),
  })
}

async function expectServed(name: string, version: string, body: Uint8Array): Promise<void> {
  const index = ArtifactIndex.parse(await (await call(`/v1/artifacts/${name}`)).json())
  expect(index.versions.map((v) => v.version)).toContain(version)
  expect((await call(`/v1/artifacts/${name}/${version}/manifest`)).status).toBe(200)
  const blob = await call(`/v1/artifacts/${name}/${version}/blob`)
  expect(blob.status).toBe(200)
  expect(await sha256(new Uint8Array(await blob.arrayBuffer()))).toBe(await sha256(body))
}

/** Lets the slow request reach R2 (its head of the blob key and the start of its put) first. */
const settle = () => new Promise((resolve) => setTimeout(resolve, 50))

describe('a second manifest for a version being published', () => {
  it('is refused with 409 while the first is staged; the same manifest again is an idempotent retry', async () => {
    const a = await envelopeFor('race', '1.0.0', bytesOf(4000, 1), { serial: 1 })
    const b = await envelopeFor('race', '1.0.0', bytesOf(4000, 2), { serial: 2 })
    expect((await startPublish(a)).status).toBe(201)
    const second = await startPublish(b)
    expect(second.status).toBe(409)
    const detail = ProblemDetails.parse(await second.json()).detail ?? ''
    expect(detail).toContain('already being published with another manifest (serial 1')
    expect(detail).toContain('abandoned')
    // The staged manifest is still A's, byte for byte; A's retry is accepted and A publishes.
    expect(await (await env.ARTIFACTS.get(keys.pendingManifest('race', '1.0.0')))?.text()).toBe(
      JSON.stringify(a),
    )
    expect((await startPublish(a)).status).toBe(201)
    expect((await putBlob('race', '1.0.0', bytesOf(4000, 1))).status).toBe(201)
    await expectServed('race', '1.0.0', bytesOf(4000, 1))
  })

  it('replaces an abandoned staged manifest, and then the old upload cannot remove the new blob', async () => {
    // The same size, so A's upload passes the length check and fails only on the sha256, as in the report.
    const bodyA = bytesOf(200_000, 3)
    const bodyB = bytesOf(200_000, 4)
    const a = await envelopeFor('stale', '1.0.0', bodyA, { serial: 1 })
    const b: SignedManifest = await envelopeFor('stale', '1.0.0', bodyB, { serial: 2 })
    expect((await startPublish(a)).status).toBe(201)
    // Half an hour later, A counts as abandoned and B takes the version over (conditionally on A's etag).
    const later = Date.now() + PENDING_ABANDONED_AFTER_MS + 1000
    expect(await stagePending(env.ARTIFACTS, b, JSON.stringify(b), later)).toBe('staged')
    // The tester's race: A's bytes arrive slowly, B's fast; B commits, then A fails its verification.
    const slow = slowPut('stale', '1.0.0', bodyA)
    await settle()
    expect((await putBlob('stale', '1.0.0', bodyB)).status).toBe(201)
    expect((await slow.release()).status).toBe(422)
    await expectServed('stale', '1.0.0', bodyB)
  })
})

describe('aborting a multipart upload', () => {
  it("frees the version of its own publish, but not of another attempt's that took it over", async () => {
    const own = await envelopeFor('abortown', '1.0.0', bytesOf(7000, 12), { serial: 1 })
    expect((await startPublish(own)).status).toBe(201)
    const mine = await startUpload('abortown', '1.0.0')
    expect((await abortUpload('abortown', '1.0.0', mine)).status).toBe(204)
    expect(await env.ARTIFACTS.head(keys.pendingManifest('abortown', '1.0.0'))).toBeNull()

    // A's CLI stalls half an hour mid-upload; B takes the version over; A then gives up and aborts.
    const bodyB = bytesOf(7000, 14)
    const a = await envelopeFor('abortother', '1.0.0', bytesOf(7000, 13), { serial: 1 })
    const b = await envelopeFor('abortother', '1.0.0', bodyB, { serial: 2 })
    expect((await startPublish(a)).status).toBe(201)
    const uploadOfA = await startUpload('abortother', '1.0.0')
    const later = Date.now() + PENDING_ABANDONED_AFTER_MS + 1000
    expect(await stagePending(env.ARTIFACTS, b, JSON.stringify(b), later)).toBe('staged')
    expect((await abortUpload('abortother', '1.0.0', uploadOfA)).status).toBe(204)
    // B's staged manifest survived A's abort, so B's upload commits.
    expect(await (await env.ARTIFACTS.get(keys.pendingManifest('abortother', '1.0.0')))?.text()).toBe(
      JSON.stringify(b),
    )
    expect((await putBlob('abortother', '1.0.0', bodyB)).status).toBe(201)
    await expectServed('abortother', '1.0.0', bodyB)
  })
})

describe('completing a multipart upload of an attempt that was taken over', () => {
  it('is refused and leaves the staged publish of the attempt that took the version over', async () => {
    // A's CLI stalls half an hour between its last part and the complete; B takes the version over.
    const bodyA = bytesOf(7000, 15)
    const bodyB = bytesOf(7000, 16)
    const a = await envelopeFor('lateparts', '1.0.0', bodyA, { serial: 1 })
    const b = await envelopeFor('lateparts', '1.0.0', bodyB, { serial: 2 })
    expect((await startPublish(a)).status).toBe(201)
    const uploadOfA = await startUpload('lateparts', '1.0.0')
    const part = await uploadPart('lateparts', '1.0.0', uploadOfA, bodyA)
    expect(part.status).toBe(200)
    const later = Date.now() + PENDING_ABANDONED_AFTER_MS + 1000
    expect(await stagePending(env.ARTIFACTS, b, JSON.stringify(b), later)).toBe('staged')
    // A's upload was started for A's manifest: it is not checked against B's, nor may it drop B's.
    const late = await completeUpload('lateparts', '1.0.0', uploadOfA, part)
    expect(late.status).toBe(409)
    expect(ProblemDetails.parse(await late.json()).detail).toContain('another publish attempt')
    expect(await (await env.ARTIFACTS.get(keys.pendingManifest('lateparts', '1.0.0')))?.text()).toBe(
      JSON.stringify(b),
    )
    expect((await putBlob('lateparts', '1.0.0', bodyB)).status).toBe(201)
    await expectServed('lateparts', '1.0.0', bodyB)
  })
})

describe('a chunk index upload of an attempt taken over meanwhile', () => {
  /** A PUT of the chunk index whose body arrives only once `release` is called. */
  function slowChunks(name: string, version: string, index: Uint8Array) {
    const { readable, writable } = new FixedLengthStream(index.length)
    const writer = writable.getWriter()
    const response = call(`/v1/publish/${name}/${version}/chunks`, {
      method: 'PUT',
      headers: { ...auth, 'content-length': String(index.length) },
      body: readable,
    })
    return {
      async release() {
        await writer.write(index)
        await writer.close()
        return response
      },
    }
  }

  async function withChunkIndex(name: string, body: Uint8Array, serial: number) {
    const index = encodeChunkIndex(await buildChunkIndex(body))
    const chunkIndex = {
      size: index.length,
      sha256: await sha256(index),
      chunkCount: (index.length - 36) / 20,
    }
    return { index, envelope: await envelopeFor(name, '1.0.0', body, { serial, chunkIndex }) }
  }

  it('is written before the manifest, which is written before the index lists the version', async () => {
    const { index, envelope } = await withChunkIndex('chunkorder', bytesOf(20_000, 25), 1)
    const recorder = new FaultyR2(env.ARTIFACTS, {})
    const bindings = { ...env, ARTIFACTS: recorder }
    const send = (path: string, init: RequestInit) =>
      callApp(`/v1/publish/chunkorder/1.0.0${path}`, init, bindings)
    const json = { ...auth, 'content-type': 'application/json' }
    expect(
      (await send('', { method: 'POST', headers: json, body: JSON.stringify(envelope) })).response.status,
    ).toBe(201)
    const upload = (path: string, bytes: Uint8Array) =>
      send(path, { method: 'PUT', headers: { ...auth, 'content-length': String(bytes.length) }, body: bytes })
    expect((await upload('/chunks', index)).response.status).toBe(201)
    expect((await upload('/blob', bytesOf(20_000, 25))).response.status).toBe(201)
    const puts = recorder.log.filter((r) => r.op === 'put').map((r) => r.key)
    const order = [keys.chunks, keys.blob, keys.manifest].map((key) =>
      puts.indexOf(key('chunkorder', '1.0.0')),
    )
    order.push(puts.lastIndexOf(keys.index('chunkorder')))
    expect(order.every((at) => at >= 0)).toBe(true)
    expect([...order].sort((a, b) => a - b)).toEqual(order)
  })

  it('never leaves a published manifest served with a chunk index that is not its own', async () => {
    const x = await withChunkIndex('chunkrace', bytesOf(200_000, 20), 1)
    const y = await withChunkIndex('chunkrace', bytesOf(200_000, 21), 2)
    expect((await startPublish(x.envelope)).status).toBe(201)
    // X's chunk index upload started while X was staged; its body is still on the way.
    const staleChunks = slowChunks('chunkrace', '1.0.0', x.index)
    await settle()
    // X counts as abandoned; Y takes the version over and uploads its own chunk index, then its bytes.
    const later = Date.now() + PENDING_ABANDONED_AFTER_MS + 1000
    expect(await stagePending(env.ARTIFACTS, y.envelope, JSON.stringify(y.envelope), later)).toBe('staged')
    expect((await putChunks('chunkrace', '1.0.0', y.index)).status).toBe(201)
    const bytesY = slowPut('chunkrace', '1.0.0', bytesOf(200_000, 21))
    await settle()
    // X's chunk index lands after Y's commit gate passed, before Y commits.
    await (await staleChunks.release()).body?.cancel()
    const committed = await bytesY.release()
    if (committed.status !== 201) {
      // Refused as incomplete: Y uploads its chunk index again and commits the bytes it stored.
      expect(committed.status, await committed.text()).toBe(409)
      expect((await putChunks('chunkrace', '1.0.0', y.index)).status).toBe(201)
      expect(
        (await call('/v1/publish/chunkrace/1.0.0/commit', { method: 'POST', headers: auth })).status,
      ).toBe(201)
    }
    const served = await call('/v1/artifacts/chunkrace/1.0.0/chunks')
    expect(served.status).toBe(200)
    expect(await sha256(new Uint8Array(await served.arrayBuffer()))).toBe(
      y.envelope.signed.chunkIndex?.sha256,
    )
  })
})

describe('a delta upload of an attempt taken over meanwhile', () => {
  it('is refused when it ends, and never replaces the delta the other attempt published', async () => {
    const deltaX = { from: '0.9.0', method: 'vcdiff' as const, bytes: bytesOf(150_000, 22) }
    const deltaY = { from: '0.9.0', method: 'vcdiff' as const, bytes: bytesOf(150_000, 23) }
    const body = bytesOf(3000, 24)
    const x = await envelopeFor('deltarace', '1.0.0', body, { serial: 1, deltas: [await deltaRefOf(deltaX)] })
    const y = await envelopeFor('deltarace', '1.0.0', body, { serial: 2, deltas: [await deltaRefOf(deltaY)] })
    expect((await startPublish(x)).status).toBe(201)
    const { readable, writable } = new FixedLengthStream(deltaX.bytes.length)
    const writer = writable.getWriter()
    void writer.write(deltaX.bytes.slice(0, 70_000))
    const stale = call('/v1/publish/deltarace/1.0.0/deltas/0.9.0/vcdiff', {
      method: 'PUT',
      headers: { ...auth, 'content-length': String(deltaX.bytes.length) },
      body: readable,
    })
    await settle()
    const later = Date.now() + PENDING_ABANDONED_AFTER_MS + 1000
    expect(await stagePending(env.ARTIFACTS, y, JSON.stringify(y), later)).toBe('staged')
    expect((await putDelta('deltarace', '1.0.0', deltaY)).status).toBe(201)
    expect((await putBlob('deltarace', '1.0.0', body)).status).toBe(201)
    await writer.write(deltaX.bytes.slice(70_000))
    await writer.close()
    const late = await stale
    expect(late.status, await late.text()).toBe(409)
    const stored = await env.ARTIFACTS.head(keys.delta('deltarace', '0.9.0', '1.0.0', 'vcdiff'))
    expect(stored?.customMetadata?.payloadSha256).toBe(y.signed.deltas[0]?.sha256)
  })
})

describe('two attempts with the same bytes and different manifests', () => {
  it('the one that commits second leaves the committed manifest alone', async () => {
    // A re-signed publish (serial 2) takes over an abandoned one (serial 1); both upload the right bytes.
    const body = bytesOf(200_000, 10)
    const a = await envelopeFor('resigned', '1.0.0', body, { serial: 1 })
    const b = await envelopeFor('resigned', '1.0.0', body, { serial: 2 })
    expect((await startPublish(a)).status).toBe(201)
    const slow = slowPut('resigned', '1.0.0', body)
    await settle()
    const later = Date.now() + PENDING_ABANDONED_AFTER_MS + 1000
    expect(await stagePending(env.ARTIFACTS, b, JSON.stringify(b), later)).toBe('staged')
    expect((await putBlob('resigned', '1.0.0', body)).status).toBe(201)
    // A's bytes are right too, but its manifest is not the one published.
    const late = await slow.release()
    expect(late.status).toBe(409)
    expect(ProblemDetails.parse(await late.json()).detail).toContain('already published')
    await expectServed('resigned', '1.0.0', body)
    // The served manifest is the one the index lists (serial 2), byte for byte.
    const served = await (await call('/v1/artifacts/resigned/1.0.0/manifest')).text()
    expect(served).toBe(JSON.stringify(b))
    const index = ArtifactIndex.parse(await (await call('/v1/artifacts/resigned')).json())
    expect(index.versions.map((v) => v.serial)).toEqual([2])
  })
  it("a commit that died between its two writes holds the version's manifest key only briefly", async () => {
    const body = bytesOf(3000, 11)
    const dead = await envelopeFor('halfway', '1.0.0', body, { serial: 1 })
    const live = await envelopeFor('halfway', '1.0.0', body, { serial: 2 })
    // What such a commit leaves: its manifest at the final key, the index without the version.
    await env.ARTIFACTS.put(keys.manifest('halfway', '1.0.0'), JSON.stringify(dead))
    const commit = (now: number) => commitVersion(env.ARTIFACTS, live.signed, JSON.stringify(live), now)
    await expect(commit(Date.now())).rejects.toMatchObject({
      status: 409,
      message: expect.stringContaining('retry in a moment'),
    })
    await commit(Date.now() + COMMIT_ABANDONED_AFTER_MS + 1000)
    const served = await (await call('/v1/artifacts/halfway/1.0.0/manifest')).text()
    expect(served).toBe(JSON.stringify(live))
  })
})

describe('an upload that fails while another attempt of the same manifest commits', () => {
  it('single PUT: the failed one leaves the committed blob alone', async () => {
    const body = bytesOf(300_000, 5)
    const envelope = await envelopeFor('same', '1.0.0', body)
    expect((await startPublish(envelope)).status).toBe(201)
    // A client retry of the same publish while the first attempt is still sending corrupted bytes.
    const corrupted = body.slice()
    corrupted[200_000] = (corrupted[200_000] ?? 0) ^ 0xff
    const slow = slowPut('same', '1.0.0', corrupted)
    await settle()
    expect((await startPublish(envelope)).status).toBe(201)
    expect((await putBlob('same', '1.0.0', body)).status).toBe(201)
    const failed = await slow.release()
    expect([409, 422]).toContain(failed.status)
    await expectServed('same', '1.0.0', body)
  })

  it('multipart: completing a bad upload after the version committed changes nothing', async () => {
    const body = bytesOf(6 * 1024 * 1024, 6)
    const envelope = await envelopeFor('samemulti', '1.0.0', body)
    expect((await startPublish(envelope)).status).toBe(201)
    const uploadId = await startUpload('samemulti', '1.0.0')
    const part = await uploadPart('samemulti', '1.0.0', uploadId, bytesOf(body.length, 7))
    expect(part.status).toBe(200)
    // Meanwhile another attempt of the same manifest publishes the right bytes.
    expect((await startPublish(envelope)).status).toBe(201)
    expect((await putBlob('samemulti', '1.0.0', body)).status).toBe(201)
    const done = await completeUpload('samemulti', '1.0.0', uploadId, part)
    expect(done.status).toBeGreaterThanOrEqual(400)
    await expectServed('samemulti', '1.0.0', body)
    // The failed attempt's staging object is gone too.
    expect((await env.ARTIFACTS.list({ prefix: 'pending/samemulti/' })).objects).toEqual([])
  })

  it('multipart: an upload never writes the blob key before it is verified', async () => {
    const body = bytesOf(5 * 1024 * 1024 + 10, 8)
    const envelope = await envelopeFor('staged', '1.0.0', body)
    expect((await startPublish(envelope)).status).toBe(201)
    const uploadId = await startUpload('staged', '1.0.0')
    const part = await uploadPart('staged', '1.0.0', uploadId, body)
    expect(await env.ARTIFACTS.head(keys.blob('staged', '1.0.0'))).toBeNull()
    const done = await completeUpload('staged', '1.0.0', uploadId, part)
    expect(done.status).toBe(201)
    await expectServed('staged', '1.0.0', body)
    expect((await env.ARTIFACTS.list({ prefix: 'pending/staged/' })).objects).toEqual([])
  })
})

describe('channel heads', () => {
  async function publish(name: string, version: string, serial: number, channels: string[]) {
    const body = bytesOf(1000 + serial, serial)
    const envelope = await envelopeFor(name, version, body, { serial, channels })
    expect((await startPublish(envelope)).status).toBe(201)
    const put = await putBlob(name, version, body)
    expect(put.status).toBe(201)
    return Published.parse(await put.json())
  }

  it('only move up in semver: an older version is published but leaves the head where it is', async () => {
    await publish('lodash', '4.17.20', 1, ['stable'])
    expect((await publish('lodash', '4.17.21', 2, ['stable'])).channelsNotMoved).toEqual([])
    const older = await publish('lodash', '4.17.15', 3, ['stable', 'lts'])
    expect(older.channelsNotMoved).toEqual([{ channel: 'stable', head: '4.17.21' }])
    const index = ArtifactIndex.parse(await (await call('/v1/artifacts/lodash')).json())
    // A channel without a head yet takes the version; `stable` keeps the higher one.
    expect(index.channels).toEqual({ stable: '4.17.21', lts: '4.17.15' })
    expect(index.latestSerial).toBe(3)
    await expectServed('lodash', '4.17.15', bytesOf(1003, 3))
    // A higher version moves it again (a prerelease of the next major ranks above 4.17.21 too).
    expect((await publish('lodash', '5.0.0-rc.1', 4, ['stable'])).channelsNotMoved).toEqual([])
    const after = ArtifactIndex.parse(await (await call('/v1/artifacts/lodash')).json())
    expect(after.channels.stable).toBe('5.0.0-rc.1')
  })

  it('the plan for a device on the head does not downgrade it after an older publish', async () => {
    await publishSingle('plan-head', '2.0.0', bytesOf(2000, 9), 1)
    await publish('plan-head', '1.9.0', 2, ['stable'])
    const plan = await call('/v1/plan', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        name: 'plan-head',
        installed: '2.0.0',
        target: 'stable',
        capabilities: { methods: ['vcdiff'], chunkSync: true },
      }),
    })
    const planned = PlanResponse.parse(await plan.json())
    expect(planned).toMatchObject({ to: '2.0.0', strategy: 'none' })
  })
})
