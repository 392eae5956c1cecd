import { env } from 'cloudflare:workers'
import { describe, expect, it } from 'vitest'
import { ArtifactIndex } from '../../schemas/artifact-index.ts'
import { Published } from '../../schemas/publish.ts'
import { keys } from '../storage/keys.ts'
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

/**
 * The routes a CLI needs around one staged attempt: telling a serial another publish took first
 * (re-sign and retry) from a version already published (never), committing a re-signed manifest
 * against the bytes its refused attempt stored, and giving an attempt up when its upload was cut off.
 */

function putBlob(name: string, version: string, body: Uint8Array): Promise<Response> {
  return call(`/v1/publish/${name}/${version}/blob`, {
    method: 'PUT',
    headers: { ...auth, 'content-length': String(body.length) },
    body,
  })
}

function commitStaged(name: string, version: string, headers: Record<string, string> = auth) {
  return call(`/v1/publish/${name}/${version}/commit`, { method: 'POST', headers })
}

async function indexOf(name: string): Promise<ArtifactIndex> {
  return ArtifactIndex.parse(await (await call(`/v1/artifacts/${name}`)).json())
}

async function staged(name: string, version: string): Promise<string | undefined> {
  return (await env.ARTIFACTS.get(keys.pendingManifest(name, version)))?.text()
}

describe('a serial another publish took first', () => {
  it('is a 409 serial-overtaken at the commit, and the re-signed manifest commits without the bytes again', async () => {
    await publishSingle('serials', '1.0.0', bytesOf(3000, 1), 1)
    // Two publishes read latest serial 1 and both sign serial 2; B commits first.
    const bodyA = bytesOf(5000, 2)
    const a = await envelopeFor('serials', '1.1.0', bodyA, { serial: 2, channels: ['lts'] })
    expect((await startPublish(a)).status).toBe(201)
    await publishSingle('serials', '2.0.0', bytesOf(4000, 3), 2)
    const refused = await expectProblem(await putBlob('serials', '1.1.0', bodyA), 409, 'serial-overtaken')
    expect(refused.detail).toContain('serial 2 is not above the latest published serial 2')
    // The staged manifest is dropped (it can never commit), the bytes stay in the write-once slot.
    expect(await staged('serials', '1.1.0')).toBeUndefined()
    expect((await env.ARTIFACTS.head(keys.blob('serials', '1.1.0')))?.size).toBe(bodyA.length)

    // Staging the same serial again is refused with the same type: the CLI re-signs.
    await expectProblem(await startPublish(a), 409, 'serial-overtaken')
    const resigned = await envelopeFor('serials', '1.1.0', bodyA, { serial: 3, channels: ['lts'] })
    expect((await startPublish(resigned)).status).toBe(201)
    const committed = await commitStaged('serials', '1.1.0')
    expect(committed.status, await committed.clone().text()).toBe(201)
    expect(Published.parse(await committed.json())).toMatchObject({ version: '1.1.0', serial: 3 })
    const index = await indexOf('serials')
    expect(index.versions.map((v) => [v.version, v.serial])).toEqual([
      ['1.0.0', 1],
      ['2.0.0', 2],
      ['1.1.0', 3],
    ])
    expect(index.channels).toEqual({ stable: '2.0.0', lts: '1.1.0' })
    const blob = await call('/v1/artifacts/serials/1.1.0/blob')
    expect(await sha256(new Uint8Array(await blob.arrayBuffer()))).toBe(await sha256(bodyA))
  })

  it('stays a plain conflict when the version itself is published: no re-signing can help', async () => {
    const first = await publishSingle('taken', '1.0.0', bytesOf(2000, 4), 1)
    await expectProblem(await startPublish(first), 409, 'conflict')
    const higher = await envelopeFor('taken', '1.0.0', bytesOf(2000, 4), { serial: 9 })
    const problem = await expectProblem(await startPublish(higher), 409, 'conflict')
    expect(problem.detail).toContain('already published')
  })

  it('commit needs the bytes stored, the attachments in place and the maintainer token', async () => {
    const body = bytesOf(2500, 5)
    const envelope = await envelopeFor('nobytes', '1.0.0', body, { serial: 1 })
    expect((await startPublish(envelope)).status).toBe(201)
    const early = await expectProblem(await commitStaged('nobytes', '1.0.0'), 409, 'conflict')
    expect(early.detail).toContain('no bytes of nobytes@1.0.0 are stored yet')
    await expectProblem(await commitStaged('nobytes', '1.0.0', {}), 401, 'unauthorized')
    await expectProblem(await commitStaged('nothing', '1.0.0'), 409, 'conflict')
    expect((await indexOf('nobytes').catch(() => null))?.versions ?? []).toEqual([])
  })
})
