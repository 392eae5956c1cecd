import { env } from 'cloudflare:workers'
import { describe, expect, it } from 'vitest'
import { ArtifactIndex } from '../../schemas/artifact-index.ts'
import { ProblemDetails } from '../../schemas/problem.ts'
import { callApp } from './delta-helpers.ts'
import { kvInOutage } from './failing-kv.ts'
import {
  auth,
  bytesOf,
  call,
  envelopeFor,
  expectProblem,
  publishSingle,
  sha256,
  startPublish,
} from './publish-helpers.ts'

describe('publish → manifest → blob', () => {
  it('round-trips an artifact and lists it in the index', async () => {
    const body = bytesOf(100_000)
    const envelope = await publishSingle('roundtrip', '1.0.0', body)

    const manifest = await call('/v1/artifacts/roundtrip/1.0.0/manifest')
    expect(manifest.status).toBe(200)
    expect(manifest.headers.get('etag')).toMatch(/^".+"$/)
    expect(await manifest.json()).toEqual(envelope)

    const blob = await call('/v1/artifacts/roundtrip/1.0.0/blob')
    expect(blob.status).toBe(200)
    expect(blob.headers.get('etag')).toBe(`"${envelope.signed.sha256}"`)
    expect(blob.headers.get('cache-control')).toContain('immutable')
    expect(await sha256(new Uint8Array(await blob.arrayBuffer()))).toBe(envelope.signed.sha256)

    const index = ArtifactIndex.parse(await (await call('/v1/artifacts/roundtrip')).json())
    expect(index.versions.map((v) => v.version)).toEqual(['1.0.0'])
    expect(index.channels).toEqual({ stable: '1.0.0' })
    expect(index.latestSerial).toBe(1)
  })

  it('supports scoped names and keeps versions immutable and serials increasing', async () => {
    await publishSingle('@acme/tool', '1.0.0', bytesOf(10), 5)
    const again = await startPublish(await envelopeFor('@acme/tool', '1.0.0', bytesOf(10), { serial: 6 }))
    expect(again.status).toBe(409)
    const stale = await startPublish(await envelopeFor('@acme/tool', '1.1.0', bytesOf(10), { serial: 5 }))
    expect(stale.status).toBe(409)
    expect(ProblemDetails.parse(await stale.json()).detail).toContain('serial')
    await publishSingle('@acme/tool', '1.1.0', bytesOf(11), 6)
    const index = ArtifactIndex.parse(await (await call('/v1/artifacts/@acme%2Ftool')).json())
    expect(index.channels.stable).toBe('1.1.0')
    // Uploading to a committed version says it is published, not that its publish was never started.
    for (const upload of ['blob', 'chunks', 'deltas/1.0.0/vcdiff']) {
      const late = await call(`/v1/publish/@acme%2Ftool/1.1.0/${upload}`, {
        method: 'PUT',
        headers: { ...auth, 'content-length': '11' },
        body: bytesOf(11),
      })
      expect(late.status, upload).toBe(409)
      expect(ProblemDetails.parse(await late.json()).detail, upload).toBe(
        '@acme/tool@1.1.0 is already published; publish a new version instead',
      )
    }
  })

  it('refuses a body whose hash differs and leaves nothing in R2', async () => {
    const body = bytesOf(5000)
    const envelope = await envelopeFor('tampered', '1.0.0', body)
    expect((await startPublish(envelope)).status).toBe(201)
    const evil = bytesOf(5000, 99)
    const put = await call('/v1/publish/tampered/1.0.0/blob', {
      method: 'PUT',
      headers: { ...auth, 'content-length': String(evil.length) },
      body: evil,
    })
    expect(put.status).toBe(422)
    expect(put.headers.get('content-type')).toBe('application/problem+json')
    const listed = await env.ARTIFACTS.list()
    expect(listed.objects.map((o) => o.key).filter((k) => k.includes('tampered'))).toEqual([])
    expect((await call('/v1/artifacts/tampered/1.0.0/manifest')).status).toBe(404)
  })

  it('refuses a body whose size differs from the manifest', async () => {
    const envelope = await envelopeFor('short', '1.0.0', bytesOf(100))
    await startPublish(envelope)
    const put = await call('/v1/publish/short/1.0.0/blob', {
      method: 'PUT',
      headers: { ...auth, 'content-length': '50' },
      body: bytesOf(50),
    })
    expect(put.status).toBe(422)
  })

  it('requires the maintainer token (401 problem+json)', async () => {
    const envelope = await envelopeFor('noauth', '1.0.0', bytesOf(10))
    const missing = await call('/v1/publish/noauth/1.0.0', { method: 'POST', body: JSON.stringify(envelope) })
    expect(missing.status).toBe(401)
    expect(missing.headers.get('www-authenticate')).toContain('Bearer')
    const wrong = await call('/v1/publish/noauth/1.0.0', {
      method: 'POST',
      headers: { authorization: 'Bearer nope', 'content-type': 'application/json' },
      body: JSON.stringify(envelope),
    })
    expect(wrong.status).toBe(401)
    expect(ProblemDetails.parse(await wrong.json()).status).toBe(401)
  })

  it('locks an address out after ten wrong maintainer tokens, right token included; others go on', async () => {
    const envelope = await envelopeFor('guessed', '1.0.0', bytesOf(10))
    const start = (authorization: string, address: string) =>
      call('/v1/publish/guessed/1.0.0', {
        method: 'POST',
        headers: { authorization, 'content-type': 'application/json', 'cf-connecting-ip': address },
        body: JSON.stringify(envelope),
      })
    // Right tokens never count: a publish of many parts is not slowed.
    for (let i = 0; i < 12; i++) {
      const envelope = await envelopeFor('guessed-right', `1.0.${i}`, bytesOf(10))
      const ok = await call(`/v1/publish/guessed-right/1.0.${i}`, {
        method: 'POST',
        headers: { ...auth, 'content-type': 'application/json', 'cf-connecting-ip': '203.0.113.9' },
        body: JSON.stringify(envelope),
      })
      await ok.body?.cancel()
      expect(ok.status).toBe(201)
    }
    const statuses: number[] = []
    for (let i = 0; i < 11; i++) {
      const res = await start(`Bearer guess-${i}`, '203.0.113.9')
      statuses.push(res.status)
      await res.body?.cancel()
    }
    expect(statuses).toEqual([...Array(10).fill(401), 429])
    // Locked out: the right token is not even compared, so guesses learn nothing.
    const right = await start(auth.authorization, '203.0.113.9')
    expect(right.status).toBe(429)
    expect(right.headers.get('retry-after')).toBe('60')
    expect(ProblemDetails.parse(await right.json()).detail).toContain('wrong maintainer tokens')
    expect((await start(auth.authorization, '203.0.113.10')).status).toBe(201)
  })

  it('counts wrong tokens from IPv6 per /64: a fresh address of the same network per guess is still locked out', async () => {
    const envelope = await envelopeFor('guessed6', '1.0.0', bytesOf(10))
    const start = (authorization: string, address: string) =>
      call('/v1/publish/guessed6/1.0.0', {
        method: 'POST',
        headers: { authorization, 'content-type': 'application/json', 'cf-connecting-ip': address },
        body: JSON.stringify(envelope),
      })
    const statuses: number[] = []
    for (let i = 0; i < 11; i++) {
      const res = await start(`Bearer guess-${i}`, `2001:db8:99:1::${(i + 1).toString(16)}`)
      statuses.push(res.status)
      await res.body?.cancel()
    }
    expect(statuses).toEqual([...Array(10).fill(401), 429])
    expect((await start(auth.authorization, '2001:db8:99:1:ffff::9')).status).toBe(429)
    expect((await start(auth.authorization, '2001:db8:99:2::1')).status).toBe(201)
  })

  it('a lockout store that cannot be read is a 503 to retry, never a 500 (nor a way around the lockout)', async () => {
    const outage = { ...env, AUTH_LOCKOUTS: kvInOutage(env.AUTH_LOCKOUTS) } as Env
    for (const authorization of [auth.authorization, 'Bearer wrong']) {
      const { response, bytes } = await callApp(
        '/v1/config',
        { headers: { authorization, 'cf-connecting-ip': '203.0.113.77' } },
        outage,
      )
      expect(response.status, authorization).toBe(503)
      expect(response.headers.get('retry-after')).not.toBeNull()
      expect(ProblemDetails.parse(JSON.parse(new TextDecoder().decode(bytes))).status).toBe(503)
    }
  })

  it('rejects malformed manifests, path tricks and a manifest for another version', async () => {
    const bad = await call('/v1/publish/x/1.0.0', {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: '{"signed":',
    })
    expect(bad.status).toBe(400)
    const invalid = await call('/v1/publish/x/1.0.0', {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify({ signed: { name: 'x' }, signatures: [] }),
    })
    expect(invalid.status).toBe(400)
    expect(ProblemDetails.parse(await invalid.json()).errors?.length).toBeGreaterThan(0)
    const mismatch = await startPublish({
      ...(await envelopeFor('x', '2.0.0', bytesOf(1))),
    })
    expect(mismatch.status).toBe(201)
    const wrongPath = await call('/v1/publish/x/3.0.0', {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify(await envelopeFor('x', '2.0.0', bytesOf(1))),
    })
    expect(wrongPath.status).toBe(422)
    for (const path of [
      '/v1/artifacts/..%2Fetc/1.0.0/blob',
      '/v1/artifacts/UPPER/1.0.0/manifest',
      '/v1/artifacts/a/v1/blob',
    ]) {
      const res = await call(path)
      expect([400, 404]).toContain(res.status)
      expect(res.headers.get('content-type')).toBe('application/problem+json')
    }
  })

  it('caps the manifest body size', async () => {
    const res = await call('/v1/publish/big/1.0.0', {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: 'x'.repeat(70 * 1024),
    })
    expect(res.status).toBe(413)
  })
})

describe('multipart publish', () => {
  it('publishes a > 10 MiB artifact in 5 MiB parts and verifies it', async () => {
    const body = bytesOf(10 * 1024 * 1024 + 12345, 7)
    const envelope = await envelopeFor('bigone', '1.0.0', body)
    expect((await startPublish(envelope)).status).toBe(201)
    const created = await call('/v1/publish/bigone/1.0.0/uploads', { method: 'POST', headers: auth })
    const { uploadId } = (await created.json()) as { uploadId: string }
    const partBytes = 5 * 1024 * 1024
    const parts = []
    for (let at = 0, n = 1; at < body.length; at += partBytes, n++) {
      const chunk = body.subarray(at, at + partBytes)
      const res = await call(`/v1/publish/bigone/1.0.0/uploads/${encodeURIComponent(uploadId)}/parts/${n}`, {
        method: 'PUT',
        headers: { ...auth, 'content-length': String(chunk.length) },
        body: chunk,
      })
      expect(res.status).toBe(200)
      parts.push(await res.json())
    }
    expect(parts).toHaveLength(3)
    const done = await call(`/v1/publish/bigone/1.0.0/uploads/${encodeURIComponent(uploadId)}/complete`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify({ parts }),
    })
    expect(done.status).toBe(201)
    const blob = await call('/v1/artifacts/bigone/1.0.0/blob', { headers: { range: 'bytes=10485760-' } })
    expect(blob.status).toBe(206)
    expect(new Uint8Array(await blob.arrayBuffer())).toEqual(body.subarray(10485760))
  })

  it('deletes a multipart object whose hash differs', async () => {
    const body = bytesOf(6 * 1024 * 1024, 3)
    const envelope = await envelopeFor('badmulti', '1.0.0', body)
    await startPublish(envelope)
    const { uploadId } = (await (
      await call('/v1/publish/badmulti/1.0.0/uploads', { method: 'POST', headers: auth })
    ).json()) as {
      uploadId: string
    }
    const evil = bytesOf(body.length, 4)
    const part = await call(`/v1/publish/badmulti/1.0.0/uploads/${encodeURIComponent(uploadId)}/parts/1`, {
      method: 'PUT',
      headers: { ...auth, 'content-length': String(evil.length) },
      body: evil,
    })
    const done = await call(`/v1/publish/badmulti/1.0.0/uploads/${encodeURIComponent(uploadId)}/complete`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify({ parts: [await part.json()] }),
    })
    expect(done.status).toBe(422)
    const listed = await env.ARTIFACTS.list({ prefix: 'artifacts/badmulti' })
    expect(listed.objects).toEqual([])
    expect((await env.ARTIFACTS.list({ prefix: 'pending/badmulti' })).objects).toEqual([])
  })
})

/**
 * A signing machine whose clock is off: the CLI dates a manifest (`createdAt`) and counts its expiry
 * (`expires`, 90 days by default) from its own clock. One 80 days behind signs a release devices refuse
 * after 10 days, with nothing said; one a year ahead signs one that outlives its intended lifetime by a
 * year. Staging refuses both, naming the clocks, rather than "expired; sign it again" (which signing
 * again on the same machine cannot fix) or nothing at all.
 */
describe('a manifest signed on a machine whose clock is off', () => {
  const at = (offsetMs: number) => new Date(Date.now() + offsetMs)
  const signedAt = (name: string, offsetMs: number) =>
    envelopeFor(name, '1.0.0', bytesOf(300, 7), {
      createdAt: at(offsetMs).toISOString(),
      expires: at(offsetMs + 90 * 86_400_000).toISOString(),
    })

  it('is refused at staging when dated more than a day behind or an hour ahead of the edge', async () => {
    for (const [name, offset, words] of [
      ['clock-behind', -80 * 86_400_000, 'behind'],
      ['clock-far-behind', -100 * 86_400_000, 'behind'],
      ['clock-ahead', 2 * 3_600_000, 'ahead of'],
    ] as const) {
      const refused = await expectProblem(
        await startPublish(await signedAt(name, offset)),
        422,
        'unprocessable',
      )
      expect(refused.detail).toContain(`${words} this edge's clock`)
      expect(refused.detail).toContain("check the signing machine's clock")
      expect(await env.ARTIFACTS.head(`pending/${name}/1.0.0/manifest.json`)).toBeNull()
    }
  })

  it('is staged when its clock is within the bounds', async () => {
    expect((await startPublish(await signedAt('clock-slow', -12 * 3_600_000))).status).toBe(201)
    expect((await startPublish(await signedAt('clock-fast', 30 * 60_000))).status).toBe(201)
  })
})
