import { env } from 'cloudflare:workers'
import { describe, expect, it } from 'vitest'
import { ArtifactIndex } from '../../schemas/artifact-index.ts'
import { Published, PublishStarted } from '../../schemas/publish.ts'
import { holdForCommit, readPending, releaseHold } from '../publish/pending-manifest.ts'
import { keys } from '../storage/keys.ts'
import { callApp } from './delta-helpers.ts'
import { FaultyR2 } from './faulty-r2.ts'
import {
  auth,
  bytesOf,
  call,
  envelopeFor,
  expectProblem,
  publishSingle,
  sha256,
  slowPut,
  stalledAt,
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

function abandon(name: string, version: string, attempt: string, headers: Record<string, string> = auth) {
  return call(`/v1/publish/${name}/${version}/attempts/${attempt}`, { method: 'DELETE', headers })
}

async function indexOf(name: string): Promise<ArtifactIndex> {
  return ArtifactIndex.parse(await (await call(`/v1/artifacts/${name}`)).json())
}

/** Lets the slow request reach R2 (its reads and the start of its put) first. */
const settle = () => new Promise((resolve) => setTimeout(resolve, 50))

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

  /** A's commit refused (serial 2 taken by B) on an edge whose deletes of `key` fail: what is left over. */
  async function refusedWithFaultyDeletes(name: string, key: (name: string) => string) {
    await publishSingle(name, '1.0.0', bytesOf(3000, 1), 1)
    const bodyA = bytesOf(5000, 2)
    const a = await envelopeFor(name, '1.1.0', bodyA, { serial: 2 })
    expect((await startPublish(a)).status).toBe(201)
    await publishSingle(name, '2.0.0', bytesOf(4000, 3), 2)
    const faulty = new FaultyR2(env.ARTIFACTS, { rate: 1, ops: ['delete'], keys: (k) => k === key(name) })
    const { response, bytes } = await callApp(
      `/v1/publish/${name}/1.1.0/blob`,
      { method: 'PUT', headers: { ...auth, 'content-length': String(bodyA.length) }, body: bodyA },
      { ...env, ARTIFACTS: faulty },
    )
    await expectProblem(new Response(bytes, response), 409, 'serial-overtaken')
    expect(faulty.faults).toBeGreaterThan(0)
    // What the CLI does next: sign again above the latest serial, stage, commit the stored bytes.
    const resigned = await envelopeFor(name, '1.1.0', bodyA, { serial: 3 })
    const staged = await startPublish(resigned)
    expect(staged.status, await staged.clone().text()).toBe(201)
    const committed = await commitStaged(name, '1.1.0')
    expect(committed.status, await committed.clone().text()).toBe(201)
    expect(await (await call(`/v1/artifacts/${name}/1.1.0/manifest`)).text()).toBe(JSON.stringify(resigned))
  }

  it('the re-signed manifest commits at once when withdrawing the refused one met a storage fault', async () => {
    // The refused manifest stays at the final key; it used to hold the version for 2 minutes.
    await refusedWithFaultyDeletes('leftfinal', (name) => keys.manifest(name, '1.1.0'))
  })

  it('the re-signed manifest stages at once when dropping the refused one met a storage fault', async () => {
    // The refused manifest stays staged; it used to hold the version for 30 minutes.
    await refusedWithFaultyDeletes('leftstaged', (name) => keys.pendingManifest(name, '1.1.0'))
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

describe('giving up a staged attempt', () => {
  async function stage(name: string, version: string, seed: number, serial = 1) {
    const envelope = await envelopeFor(name, version, bytesOf(3000, seed), { serial })
    const started = await startPublish(envelope)
    expect(started.status).toBe(201)
    const { attempt } = PublishStarted.parse(await started.json())
    if (attempt === undefined) throw new Error('the edge named no attempt')
    return { envelope, attempt }
  }

  it('frees the version at once, and giving up again is no error', async () => {
    const { attempt } = await stage('giveup', '1.0.0', 6)
    // What a cut-off single PUT left: the version is held for another manifest.
    const other = await envelopeFor('giveup', '1.0.0', bytesOf(3000, 7), { serial: 1 })
    expect((await startPublish(other)).status).toBe(409)

    expect((await abandon('giveup', '1.0.0', attempt)).status).toBe(204)
    expect(await staged('giveup', '1.0.0')).toBeUndefined()
    expect((await abandon('giveup', '1.0.0', attempt)).status).toBe(204)
    // The rerun (a new manifest) stages and publishes at once.
    expect((await startPublish(other)).status).toBe(201)
    expect((await putBlob('giveup', '1.0.0', bytesOf(3000, 7))).status).toBe(201)
  })

  it('names the attempt after the envelope as staged: the same manifest again is the same attempt', async () => {
    const { envelope, attempt } = await stage('samename', '1.0.0', 8)
    expect(attempt).toBe(await sha256(new TextEncoder().encode(JSON.stringify(envelope))))
    const again = PublishStarted.parse(await (await startPublish(envelope)).json())
    expect(again.attempt).toBe(attempt)
  })

  it("leaves another attempt's staged publish alone", async () => {
    const { envelope } = await stage('holder', '1.0.0', 9)
    const notTheHolder = await abandon('holder', '1.0.0', 'f'.repeat(64))
    expect((await expectProblem(notTheHolder, 409, 'conflict')).detail).toContain("another attempt's")
    expect(await staged('holder', '1.0.0')).toBe(JSON.stringify(envelope))
    // Still the holder's to publish.
    expect((await putBlob('holder', '1.0.0', bytesOf(3000, 9))).status).toBe(201)
  })

  it('never touches a published version, even named by the attempt that published it', async () => {
    const { attempt } = await stage('committed', '1.0.0', 10)
    expect((await putBlob('committed', '1.0.0', bytesOf(3000, 10))).status).toBe(201)
    const refused = await expectProblem(await abandon('committed', '1.0.0', attempt), 409, 'conflict')
    expect(refused.detail).toContain('is published')
    expect((await indexOf('committed')).versions.map((v) => v.version)).toEqual(['1.0.0'])
    expect(await env.ARTIFACTS.head(keys.manifest('committed', '1.0.0'))).not.toBeNull()
    expect((await call('/v1/artifacts/committed/1.0.0/blob')).status).toBe(200)
  })

  it('can never commit once given up, even when its PUT was still streaming', async () => {
    const body = bytesOf(200_000, 12)
    const envelope = await envelopeFor('cutoff', '1.0.0', body, { serial: 1 })
    const started = PublishStarted.parse(await (await startPublish(envelope)).json())
    if (started.attempt === undefined) throw new Error('the edge named no attempt')
    // The CLI thought its PUT was cut off and gave the attempt up; the PUT was in fact still arriving.
    const slow = slowPut('cutoff', '1.0.0', body)
    await settle()
    expect((await abandon('cutoff', '1.0.0', started.attempt)).status).toBe(204)
    const late = await expectProblem(await slow.release(), 409, 'conflict')
    expect(late.detail).toContain('given up')
    expect((await call('/v1/artifacts/cutoff')).status).toBe(404)
    expect((await call('/v1/artifacts/cutoff/1.0.0/manifest')).status).toBe(404)
    // Its bytes stay and bind the version, as after any failed commit: the rerun publishes them.
    const rerun = await envelopeFor('cutoff', '1.0.0', body, { serial: 1 })
    expect((await startPublish(rerun)).status).toBe(201)
    expect((await commitStaged('cutoff', '1.0.0')).status).toBe(201)
    expect((await indexOf('cutoff')).versions.map((v) => v.version)).toEqual(['1.0.0'])
  })

  it('is refused (409) while its commit is under way, so a commit is never half given up', async () => {
    const { envelope, attempt } = await stage('committing', '1.0.0', 13)
    const raw = JSON.stringify(envelope)
    const pending = await readPending(env.ARTIFACTS, 'committing', '1.0.0')
    if (!pending) throw new Error('nothing staged')
    // What a commit does first: it holds the staged manifest, conditionally on what it read.
    await holdForCommit(env.ARTIFACTS, pending)
    const refused = await expectProblem(await abandon('committing', '1.0.0', attempt), 409, 'conflict')
    expect(refused.detail).toContain('committing')
    expect(await staged('committing', '1.0.0')).toBe(raw)
    // A commit that held it and then failed releases it, and the attempt can be given up again.
    const held = await readPending(env.ARTIFACTS, 'committing', '1.0.0')
    if (!held) throw new Error('nothing staged')
    await releaseHold(env.ARTIFACTS, held)
    expect((await abandon('committing', '1.0.0', attempt)).status).toBe(204)
  })

  it('counts as given up even when the delete after the mark meets a storage fault', async () => {
    const { envelope, attempt } = await stage('markleft', '1.0.0', 14)
    const faulty = new FaultyR2(env.ARTIFACTS, { failNth: { delete: [1] } })
    const { response } = await callApp(
      `/v1/publish/markleft/1.0.0/attempts/${attempt}`,
      { method: 'DELETE', headers: auth },
      { ...env, ARTIFACTS: faulty },
    )
    expect(response.status).toBe(503)
    // The marked object is still there, but it holds nothing: its upload is refused, and another
    // manifest (or the same one again) stages at once.
    expect(await staged('markleft', '1.0.0')).toBe(JSON.stringify(envelope))
    const late = await expectProblem(await putBlob('markleft', '1.0.0', bytesOf(3000, 14)), 409, 'conflict')
    expect(late.detail).toContain('start the publish')
    const rerun = await envelopeFor('markleft', '1.0.0', bytesOf(3000, 15), { serial: 1 })
    expect((await startPublish(rerun)).status).toBe(201)
    expect((await putBlob('markleft', '1.0.0', bytesOf(3000, 15))).status).toBe(201)
  })

  it('takes the maintainer token, and refuses a malformed attempt or version with 400', async () => {
    const { attempt } = await stage('authed', '1.0.0', 11)
    await expectProblem(await abandon('authed', '1.0.0', attempt, {}), 401, 'unauthorized')
    await expectProblem(
      await abandon('authed', '1.0.0', attempt, { authorization: 'Bearer wrong' }),
      401,
      'unauthorized',
    )
    await expectProblem(await abandon('authed', '1.0.0', 'not-an-attempt'), 400, 'bad-request')
    await expectProblem(await abandon('authed', '1.0.0', attempt.toUpperCase()), 400, 'bad-request')
    await expectProblem(await abandon('authed', 'v1', attempt), 400, 'bad-request')
    expect(await staged('authed', '1.0.0')).toBeDefined()
  })
})

describe('giving up and committing one attempt at the same moment', () => {
  it('lets exactly one win: a give-up that read the attempt before its commit held it is refused', async () => {
    const body = bytesOf(3000, 16)
    const envelope = await envelopeFor('bothwin', '1.0.0', body, { serial: 1 })
    const started = PublishStarted.parse(await (await startPublish(envelope)).json())
    if (started.attempt === undefined) throw new Error('the edge named no attempt')
    // The give-up has read the staged attempt and is about to mark it given up.
    const giveUp = stalledAt('put', keys.pendingManifest('bothwin', '1.0.0'))
    const abandoned = callApp(
      `/v1/publish/bothwin/1.0.0/attempts/${started.attempt}`,
      { method: 'DELETE', headers: auth },
      { ...env, ARTIFACTS: giveUp.bucket },
    )
    await giveUp.atGate
    // Meanwhile the attempt's upload arrives and its commit holds the staged manifest, and is between
    // its manifest and index writes when the give-up's mark goes through.
    const commit = stalledAt('put', keys.index('bothwin'))
    const put = callApp(
      '/v1/publish/bothwin/1.0.0/blob',
      { method: 'PUT', headers: { ...auth, 'content-length': String(body.length) }, body },
      { ...env, ARTIFACTS: commit.bucket },
    )
    await commit.atGate
    expect((await readPending(env.ARTIFACTS, 'bothwin', '1.0.0'))?.state).toBe('committing')
    giveUp.release()
    const { response: refused, bytes } = await abandoned
    commit.release()
    const { response: committed } = await put
    expect(committed.status).toBe(201)
    // Published, so the give-up must not have answered 204 (the CLI would report nothing published).
    const problem = await expectProblem(new Response(bytes, refused), 409, 'conflict')
    expect(problem.detail).toContain('committing')
    expect((await indexOf('bothwin')).versions.map((v) => v.version)).toEqual(['1.0.0'])
  })
})

describe('giving up an attempt whose commit finishes meanwhile', () => {
  it('is refused (409 published), not answered as if nothing had been staged', async () => {
    const body = bytesOf(2000, 17)
    const envelope = await envelopeFor('lategone', '1.0.0', body, { serial: 1 })
    const started = PublishStarted.parse(await (await startPublish(envelope)).json())
    if (started.attempt === undefined) throw new Error('the edge named no attempt')
    // The give-up has read the index (nothing published) and is about to read the staged attempt.
    const read = stalledAt('get', keys.pendingManifest('lategone', '1.0.0'))
    const abandoned = callApp(
      `/v1/publish/lategone/1.0.0/attempts/${started.attempt}`,
      { method: 'DELETE', headers: auth },
      { ...env, ARTIFACTS: read.bucket },
    )
    await read.atGate
    expect((await putBlob('lategone', '1.0.0', body)).status).toBe(201)
    read.release()
    const { response, bytes } = await abandoned
    const refused = await expectProblem(new Response(bytes, response), 409, 'conflict')
    expect(refused.detail).toContain('is published')
  })
})
