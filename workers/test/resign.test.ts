import { env } from 'cloudflare:workers'
import { describe, expect, it } from 'vitest'
import type { SignedManifest } from '../../schemas/manifest.ts'
import { keys } from '../storage/keys.ts'
import { auth, bytesOf, call, envelopeFor, expectProblem, publishSingle } from './publish-helpers.ts'

function resign(envelope: SignedManifest, headers: Record<string, string> = auth, path?: string) {
  const { name, version } = envelope.signed
  return call(path ?? `/v1/publish/${encodeURIComponent(name)}/${version}/manifest`, {
    method: 'PUT',
    headers: { ...headers, 'content-type': 'application/json' },
    body: JSON.stringify(envelope),
  })
}

const later = (days: number) => new Date(Date.now() + days * 86_400_000).toISOString()
const resigned = (envelope: SignedManifest, fields: Partial<SignedManifest['signed']>): SignedManifest => ({
  signed: { ...envelope.signed, ...fields },
  signatures: [{ keyid: 'b'.repeat(64), sig: btoa('y'.repeat(64)) }],
})

describe('PUT /v1/publish/:name/:version/manifest (re-signing)', () => {
  it('replaces the manifest when only expires changed, and serves the new one', async () => {
    const published = await publishSingle('resigned', '1.0.0', bytesOf(1000))
    const next = resigned(published, { expires: later(90) })
    const response = await resign(next)
    expect(response.status).toBe(200)
    expect(await response.json()).toEqual({
      name: 'resigned',
      version: '1.0.0',
      expires: next.signed.expires,
      previousExpires: published.signed.expires,
    })
    const served = await call('/v1/artifacts/resigned/1.0.0/manifest')
    expect(await served.json()).toEqual(next)
    // The bytes are untouched: the blob still serves under the signed sha256.
    expect((await call('/v1/artifacts/resigned/1.0.0/blob')).status).toBe(200)
  })

  it('refuses any other change, a past expiry, a wrong name, an unknown version and no token', async () => {
    const published = await publishSingle('guarded', '1.0.0', bytesOf(500, 3))
    const swapped = await resign(
      resigned(published, { expires: later(90), sha256: 'f'.repeat(64), serial: 9 }),
    )
    expect(swapped.status).toBe(422)
    expect(((await swapped.json()) as { detail: string }).detail).toContain('sha256, serial differ')
    const past = await resign(resigned(published, { expires: new Date(Date.now() - 1000).toISOString() }))
    expect(past.status).toBe(422)
    const elsewhere = await resign(
      resigned(published, { expires: later(90) }),
      auth,
      '/v1/publish/other/1.0.0/manifest',
    )
    expect(elsewhere.status).toBe(422)
    expect((await resign(resigned(published, { version: '9.9.9', expires: later(90) }))).status).toBe(404)
    expect((await resign(resigned(published, { expires: later(90) }), {})).status).toBe(401)
    // Nothing of the refused attempts stuck.
    expect(await (await call('/v1/artifacts/guarded/1.0.0/manifest')).json()).toEqual(published)
  })
})

/** Writes `envelope` at its final manifest key marked committing, as a commit between its writes left it. */
async function leaveMarked(envelope: SignedManifest) {
  const { name, version } = envelope.signed
  await env.ARTIFACTS.put(keys.manifest(name, version), JSON.stringify(envelope), {
    httpMetadata: { contentType: 'application/json' },
    customMetadata: { state: 'committing' },
  })
}

describe('re-signing a manifest a commit left marked committing (ADR 0022)', () => {
  it('is refused (404) while the index does not list the version, and leaves it marked', async () => {
    // 1.0.0 is published; 1.1.0's commit died after writing its manifest, before the index update.
    await publishSingle('resign-unlisted', '1.0.0', bytesOf(600, 4), 1)
    const dead = await envelopeFor('resign-unlisted', '1.1.0', bytesOf(600, 5), { serial: 2 })
    await leaveMarked(dead)
    const refused = await expectProblem(
      await resign(resigned(dead, { expires: later(90) })),
      404,
      'not-found',
    )
    expect(refused.detail).toContain('is not published')
    // Writing it unmarked would have published a version the index does not list.
    const left = await env.ARTIFACTS.get(keys.manifest('resign-unlisted', '1.1.0'))
    expect(left?.customMetadata).toEqual({ state: 'committing' })
    expect(await left?.json()).toEqual(dead)
    expect((await call('/v1/artifacts/resign-unlisted/1.1.0/manifest')).status).toBe(404)
  })

  it('goes through once the index lists the version (the commit died only before unmarking)', async () => {
    const published = await publishSingle('resign-listed', '1.0.0', bytesOf(600, 6), 1)
    await leaveMarked(published)
    const next = resigned(published, { expires: later(90) })
    expect((await resign(next)).status).toBe(200)
    expect(await (await call('/v1/artifacts/resign-listed/1.0.0/manifest')).json()).toEqual(next)
  })
})
