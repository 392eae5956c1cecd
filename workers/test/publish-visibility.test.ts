import { env } from 'cloudflare:workers'
import { describe, expect, it } from 'vitest'
import { ArtifactIndex } from '../../schemas/artifact-index.ts'
import { COMMIT_ABANDONED_AFTER_MS } from '../storage/artifact-store.ts'
import { InterceptedBucket } from '../storage/intercepted-bucket.ts'
import { keys } from '../storage/keys.ts'
import { callApp } from './delta-helpers.ts'
import { injectedFault } from './faulty-r2.ts'
import {
  auth,
  bytesOf,
  call,
  commitThrough,
  envelopeFor,
  expectProblem,
  servedAndListed,
  stalledAt,
  startPublish,
} from './publish-helpers.ts'

/**
 * When a version's manifest becomes servable during its commit. The commit writes the manifest key
 * before the index (so an indexed version always has its manifest); readers must not serve it in
 * between, since the manifest is cacheable for 60 s and a failed index update leaves the version
 * unpublished (ADR 0022, "Amended 2026-11-26: a manifest is served only once the index lists it").
 */

/** An ARTIFACTS whose first put of `key` waits until released, then fails or goes ahead. */
function gatedPut(key: string) {
  let reached: () => void = () => undefined
  const atGate = new Promise<void>((resolve) => {
    reached = resolve
  })
  let open: (fail: boolean) => void = () => undefined
  const gate = new Promise<boolean>((resolve) => {
    open = resolve
  })
  let passed = false
  const bucket = new InterceptedBucket(env.ARTIFACTS, async (op, target, run) => {
    if (op === 'put' && target === key && !passed) {
      passed = true
      reached()
      if (await gate) throw injectedFault(op, target)
    }
    return run()
  })
  return { bucket, atGate, release: (fail: boolean) => open(fail) }
}

/** PUTs the blob of a staged publish through `bucket`; resolves to the answer's status. */
async function putBlobThrough(bucket: R2Bucket, name: string, version: string, body: Uint8Array) {
  const { response } = await callApp(
    `/v1/publish/${name}/${version}/blob`,
    { method: 'PUT', headers: { ...auth, 'content-length': String(body.length) }, body },
    { ...env, ARTIFACTS: bucket },
  )
  return response.status
}

async function listed(name: string): Promise<string[]> {
  const object = await env.ARTIFACTS.get(keys.index(name))
  if (!object) return []
  return ArtifactIndex.parse(await object.json()).versions.map((v) => v.version)
}

const manifestOf = (name: string, version: string) => call(`/v1/artifacts/${name}/${version}/manifest`)

describe('a manifest during its commit', () => {
  it('is not served before the index lists its version, nor after the index update failed', async () => {
    const body = bytesOf(3000, 11)
    const envelope = await envelopeFor('halfway', '1.0.0', body)
    expect((await startPublish(envelope)).status).toBe(201)
    const gated = gatedPut(keys.index('halfway'))
    const put = putBlobThrough(gated.bucket, 'halfway', '1.0.0', body)
    await gated.atGate
    // The manifest key is written; the index is not.
    expect(await env.ARTIFACTS.head(keys.manifest('halfway', '1.0.0'))).not.toBeNull()
    const early = await manifestOf('halfway', '1.0.0')
    expect(early.status, await early.clone().text()).toBe(404)
    expect(early.headers.get('cache-control')).not.toContain('max-age=60')
    expect((await call('/v1/artifacts/halfway/1.0.0/blob')).status).toBe(404)
    gated.release(true)
    expect(await put).toBe(503)
    expect(await listed('halfway')).toEqual([])
    expect((await manifestOf('halfway', '1.0.0')).status).toBe(404)

    // The staged attempt is kept for the retry, which publishes it.
    expect(await putBlobThrough(env.ARTIFACTS, 'halfway', '1.0.0', body)).toBe(201)
    const served = await manifestOf('halfway', '1.0.0')
    expect(served.status).toBe(200)
    expect(await served.text()).toBe(JSON.stringify(envelope))
  })

  it('is served once a slow index update lands, and then needs no index read', async () => {
    const body = bytesOf(2000, 12)
    const envelope = await envelopeFor('slowindex', '1.0.0', body)
    expect((await startPublish(envelope)).status).toBe(201)
    const gated = gatedPut(keys.index('slowindex'))
    const put = putBlobThrough(gated.bucket, 'slowindex', '1.0.0', body)
    await gated.atGate
    expect((await manifestOf('slowindex', '1.0.0')).status).toBe(404)
    gated.release(false)
    expect(await put).toBe(201)
    const served = await manifestOf('slowindex', '1.0.0')
    expect(served.status).toBe(200)
    expect(await served.text()).toBe(JSON.stringify(envelope))
    // The commit took its marker off: reads of a published version cost one R2 read, as before.
    const stored = await env.ARTIFACTS.head(keys.manifest('slowindex', '1.0.0'))
    expect(stored?.customMetadata).toEqual({})
  })

  it('is served when taking the marker off failed, since the index lists it', async () => {
    const body = bytesOf(2500, 13)
    const envelope = await envelopeFor('stillmarked', '1.0.0', body)
    expect((await startPublish(envelope)).status).toBe(201)
    const key = keys.manifest('stillmarked', '1.0.0')
    let puts = 0
    const bucket = new InterceptedBucket(env.ARTIFACTS, async (op, target, run) => {
      if (op === 'put' && target === key && ++puts === 2) throw injectedFault(op, target)
      return run()
    })
    expect(await putBlobThrough(bucket, 'stillmarked', '1.0.0', body)).toBe(201)
    expect(puts).toBe(2)
    expect((await env.ARTIFACTS.head(key))?.customMetadata).toEqual({ state: 'committing' })
    const served = await manifestOf('stillmarked', '1.0.0')
    expect(served.status).toBe(200)
    expect(await served.text()).toBe(JSON.stringify(envelope))
    expect((await call('/v1/artifacts/stillmarked/1.0.0/blob')).status).toBe(200)
  })

  it('written without the marker (by an edge of the previous release) is served as before', async () => {
    // What the previous release left in R2: manifest and index, no marker.
    const envelope = await envelopeFor('oldwrite', '1.0.0', bytesOf(1000, 14))
    await env.ARTIFACTS.put(keys.manifest('oldwrite', '1.0.0'), JSON.stringify(envelope), {
      httpMetadata: { contentType: 'application/json' },
    })
    const served = await manifestOf('oldwrite', '1.0.0')
    expect(served.status).toBe(200)
    expect(await served.text()).toBe(JSON.stringify(envelope))
  })

  it('left by a commit that died between its writes is not served, and the version is not called published', async () => {
    const body = bytesOf(1500, 15)
    const envelope = await envelopeFor('diedmid', '1.0.0', body)
    // What the dead commit left: its manifest, marked, at the final key; no index entry, nothing staged.
    await env.ARTIFACTS.put(keys.manifest('diedmid', '1.0.0'), JSON.stringify(envelope), {
      httpMetadata: { contentType: 'application/json' },
      customMetadata: { state: 'committing' },
    })
    expect((await manifestOf('diedmid', '1.0.0')).status).toBe(404)
    const upload = await call('/v1/publish/diedmid/1.0.0/blob', {
      method: 'PUT',
      headers: { ...auth, 'content-length': String(body.length) },
      body,
    })
    const refused = await expectProblem(upload, 409, 'conflict')
    expect(refused.detail).toContain('start the publish')
    // The rerun publishes it.
    expect((await startPublish(envelope)).status).toBe(201)
    expect(await putBlobThrough(env.ARTIFACTS, 'diedmid', '1.0.0', body)).toBe(201)
    expect((await manifestOf('diedmid', '1.0.0')).status).toBe(200)
  })
})

describe('a stalled commit another attempt took over (ADR 0022, amended 2026-11-26)', () => {
  const later = () => Date.now() + COMMIT_ABANDONED_AFTER_MS + 1000

  it('does not list its serial once the key holds the other attempt’s claim, nor delete that claim', async () => {
    const body = bytesOf(1200, 21)
    const first = await envelopeFor('takeover1', '1.0.0', body, { serial: 1 })
    const second = await envelopeFor('takeover1', '1.0.0', body, { serial: 2 })
    // A's claim lands, its answer is slow: A stalls between its claim and its index update.
    const a = stalledAt('put', keys.manifest('takeover1', '1.0.0'), true)
    const committingA = commitThrough(a.bucket, first)
    await a.atGate
    // B takes the version over, claims the key and stalls before its index update.
    const b = stalledAt('put', keys.index('takeover1'))
    const committingB = commitThrough(b.bucket, second, later())
    await b.atGate
    a.release()
    expect(await committingA).toBe(409)
    b.release()
    expect(await committingB).toBe('committed')
    const end = await servedAndListed('takeover1', '1.0.0')
    expect(end.status).toBe(200)
    expect(end.text).toBe(JSON.stringify(second))
    expect(end.entry?.serial).toBe(2)
  })

  it('whose index update lands after the takeover serves its own manifest, and the other attempt is refused', async () => {
    const body = bytesOf(1300, 22)
    const first = await envelopeFor('takeover2', '1.0.0', body, { serial: 1 })
    const second = await envelopeFor('takeover2', '1.0.0', body, { serial: 2 })
    // A passed every check and stalls in its index update itself; B takes over and stalls in its own.
    const a = stalledAt('put', keys.index('takeover2'))
    const committingA = commitThrough(a.bucket, first)
    await a.atGate
    const b = stalledAt('put', keys.index('takeover2'))
    const committingB = commitThrough(b.bucket, second, later())
    await b.atGate
    a.release()
    expect(await committingA).toBe('committed')
    // From here the index lists A's serial: only A's manifest may be served, never B's claim.
    const between = await servedAndListed('takeover2', '1.0.0')
    expect(between.entry?.serial).toBe(1)
    expect(between.text).toBe(JSON.stringify(first))
    b.release()
    expect(await committingB).toBe(409)
    const end = await servedAndListed('takeover2', '1.0.0')
    expect(end.status).toBe(200)
    expect(end.text).toBe(JSON.stringify(first))
    expect(end.entry?.serial).toBe(1)
  })

  it('is not served as the index entry when the key holds another attempt’s claim', async () => {
    const body = bytesOf(1400, 23)
    const listedOne = await envelopeFor('takeover3', '1.0.0', body, { serial: 1 })
    const claim = await envelopeFor('takeover3', '1.0.0', body, { serial: 2 })
    // What a late index update left when its commit died before repairing the key.
    await commitThrough(env.ARTIFACTS, listedOne)
    await env.ARTIFACTS.put(keys.manifest('takeover3', '1.0.0'), JSON.stringify(claim), {
      httpMetadata: { contentType: 'application/json' },
      customMetadata: { state: 'committing' },
    })
    expect((await servedAndListed('takeover3', '1.0.0')).status).toBe(503)
  })
})
