/**
 * MAINTAINER_KEYS=root:<digest> (ADR 0035): the edge pins a first root and takes its maintainers from
 * the newest root of the chain it stores, so a rotation published with `deltaport root publish` changes
 * what the edge accepts at once, as it does on devices, with no secret to edit. Real Ed25519 keys and
 * real R2 in workerd; every test starts from an empty chain.
 */
import { env } from 'cloudflare:workers'
import { beforeEach, describe, expect, it } from 'vitest'
import type { SignedManifest } from '../../schemas/manifest.ts'
import type { RootStatement } from '../../schemas/root.ts'
import { rootDigest } from '../../schemas/root-chain.ts'
import { canonicalJson } from '../../schemas/signed-envelope.ts'
import type { YankStatement } from '../../schemas/yank-statement.ts'
import { app } from '../app.ts'
import { deleteAll } from '../retention/bucket-walk.ts'
import { createRoot } from '../storage/roots.ts'
import {
  auth,
  bytesOf,
  clearRoots,
  envelopeFor,
  expectProblem,
  newTestKey,
  signedByAll,
  type TestKey,
} from './publish-helpers.ts'

const [rootKey, alice, bob, carol, mallory] = await Promise.all([
  newTestKey(),
  newTestKey(),
  newTestKey(),
  newTestKey(),
  newTestKey(),
])

const inDays = (days: number) => new Date(Date.now() + days * 86_400_000).toISOString()

/** Root `version` with one root key and `maintainers`, `threshold` of whom must sign. */
function rootOf(
  version: number,
  maintainers: TestKey[],
  threshold = 1,
  expires = inDays(365),
): RootStatement {
  return {
    _type: 'deltaport/root',
    version,
    expires,
    keys: Object.fromEntries([rootKey, ...maintainers].map((k) => [k.keyid, { publicKey: k.publicKey }])),
    roles: {
      root: { keyids: [rootKey.keyid], threshold: 1 },
      maintainers: { keyids: maintainers.map((k) => k.keyid), threshold },
    },
  }
}

const firstRoot = rootOf(1, [alice])
/** The edge under test: its maintainers are whatever the chain starting at `firstRoot` says. */
const pinned: Env = { ...env, MAINTAINER_KEYS: `root:${await rootDigest(firstRoot)}` }

function send(method: string, path: string, body: unknown, bindings: Env = pinned) {
  return app.request(
    path,
    { method, headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify(body) },
    bindings,
  )
}

const putRoot = async (root: RootStatement) =>
  send('PUT', `/v1/roots/${root.version}`, await signedByAll(root, [rootKey]))

let releases = 0
/** A fresh release signed by `signers`, and the path that stages it. */
async function release(signers: TestKey[]): Promise<{ path: string; manifest: SignedManifest }> {
  releases++
  const unsigned = await envelopeFor(`pinned-${releases}`, '1.0.0', bytesOf(300, releases))
  return {
    path: `/v1/publish/pinned-${releases}/1.0.0`,
    manifest: await signedByAll(unsigned.signed, signers),
  }
}

async function stage(signers: TestKey[]): Promise<Response> {
  const { path, manifest } = await release(signers)
  return send('POST', path, manifest)
}

beforeEach(clearRoots)

describe('MAINTAINER_KEYS pinning a root', () => {
  it('refuses publishes until the pinned root is published, and any other first root', async () => {
    const beforeRoot = await expectProblem(await stage([alice]), 409, 'conflict')
    expect(beforeRoot.detail).toContain('publish it first')

    // A stolen PUBLISH_TOKEN cannot start the chain with a root of its own.
    const usurper = await expectProblem(await putRoot(rootOf(1, [mallory])), 422, 'untrusted-root')
    expect(usurper.detail).toContain('MAINTAINER_KEYS pins')
    expect((await putRoot(firstRoot)).status).toBe(201)

    expect((await stage([alice])).status).toBe(201)
    const refused = await expectProblem(await stage([mallory]), 422, 'untrusted-signature')
    expect(refused.detail).toContain('no valid signature by the maintainers of root 1')
  })

  it("follows rotations: the newest root's keys and threshold, a revoked key refused at once", async () => {
    expect((await putRoot(firstRoot)).status).toBe(201)
    expect((await putRoot(rootOf(2, [alice, bob], 2))).status).toBe(201)
    const short = await expectProblem(await stage([alice, alice]), 422, 'untrusted-signature')
    expect(short.detail).toContain('fewer than 2 valid signatures by the maintainers of root 2')
    expect((await stage([alice, bob])).status).toBe(201)

    // Root 3 revokes Alice: her signature alone no longer stages anything, nor does it sign a yank.
    expect((await putRoot(rootOf(3, [bob, carol]))).status).toBe(201)
    await expectProblem(await stage([alice]), 422, 'untrusted-signature')
    expect((await stage([carol])).status).toBe(201)
    // Her signature on a yank statement is refused too (checked before the version is even looked up).
    const { path, manifest } = await release([bob])
    const statement: YankStatement = {
      _type: 'deltaport/yank',
      name: manifest.signed.name,
      version: manifest.signed.version,
      sha256: manifest.signed.sha256,
      yanked: true,
      reason: 'broken',
      at: new Date().toISOString(),
      expires: inDays(30),
    }
    const forged = { reason: 'broken', statement: await signedByAll(statement, [alice]) }
    await expectProblem(await send('PUT', `${path}/yank`, forged), 422, 'untrusted-signature')
  })

  it('refuses every publish when the stored first root is not the pinned one, or the newest root expired', async () => {
    // Stored before the pin was set (the route refuses it now): the edge will not trust its chain.
    await createRoot(env.ARTIFACTS, 1, canonicalJson(await signedByAll(rootOf(1, [mallory]), [rootKey])))
    const mismatch = await expectProblem(await stage([mallory]), 500, 'internal')
    expect(mismatch.detail).toContain('not the root MAINTAINER_KEYS pins')

    await deleteAll(env.ARTIFACTS, ['roots/1.json'])
    expect((await putRoot(firstRoot)).status).toBe(201)
    // An expired newest root (stored directly: the route refuses expired roots) vouches for nothing.
    const lapsed = rootOf(2, [alice], 1, inDays(-1))
    await createRoot(env.ARTIFACTS, 2, canonicalJson(await signedByAll(lapsed, [rootKey])))
    const expired = await expectProblem(await stage([alice]), 422, 'untrusted-root')
    expect(expired.detail).toContain('publish root 3 first')
  })
})

/**
 * A rotation between staging and commit: the signatures were checked when the manifest was staged, and
 * an upload (minutes for a big artifact, or a holder of a stolen key staging just before the rotation)
 * commits up to 30 minutes later. The commit checks them again against the maintainers in force then,
 * so a key revoked by `root publish` publishes nothing from that moment, and the version is left free
 * for a manifest the new maintainers signed.
 */
describe('a rotation while a publish is staged', () => {
  async function stagedBy(signers: TestKey[], name: string, body: Uint8Array) {
    const unsigned = await envelopeFor(name, '1.0.0', body)
    const path = `/v1/publish/${name}/1.0.0`
    expect((await send('POST', path, await signedByAll(unsigned.signed, signers))).status).toBe(201)
    return path
  }
  const putBlob = (path: string, body: BodyInit, length: number) =>
    app.request(
      `${path}/blob`,
      { method: 'PUT', headers: { ...auth, 'content-length': String(length) }, body },
      pinned,
    )
  const listed = async (name: string) =>
    (await app.request(`/v1/artifacts/${name}`, {}, pinned)).status === 200

  it('refuses the upload of a manifest whose signer was revoked since it was staged, and frees the version', async () => {
    expect((await putRoot(firstRoot)).status).toBe(201)
    const body = bytesOf(300, 41)
    const path = await stagedBy([alice], 'rotated-before-upload', body)
    expect((await putRoot(rootOf(2, [bob]))).status).toBe(201)

    const refused = await expectProblem(await putBlob(path, body, body.length), 422, 'untrusted-signature')
    expect(refused.detail).toContain('no valid signature by the maintainers of root 2')
    expect(refused.detail).toContain('changed since it was staged')
    expect(await listed('rotated-before-upload')).toBe(false)
    // Nothing holds the version, and it was refused before any byte was stored: Bob's manifest stages
    // at once (no 30-minute wait) and finds no bytes to commit without an upload.
    await stagedBy([bob], 'rotated-before-upload', body)
    const empty = await app.request(`${path}/commit`, { method: 'POST', headers: auth }, pinned)
    expect((await expectProblem(empty, 409, 'conflict')).detail).toContain('no bytes')
    expect((await putBlob(path, body, body.length)).status).toBe(201)

    // A multipart upload is refused at its start the same way.
    const other = await stagedBy([bob], 'rotated-before-multipart', body)
    expect((await putRoot(rootOf(3, [carol]))).status).toBe(201)
    const start = await app.request(`${other}/uploads`, { method: 'POST', headers: auth }, pinned)
    await expectProblem(start, 422, 'untrusted-signature')
    await stagedBy([carol], 'rotated-before-multipart', body)
  })

  it('refuses the commit when the rotation lands while the bytes are on their way', async () => {
    expect((await putRoot(firstRoot)).status).toBe(201)
    const body = bytesOf(300, 42)
    const path = await stagedBy([alice], 'rotated-mid-upload', body)
    const { readable, writable } = new FixedLengthStream(body.length)
    const writer = writable.getWriter()
    void writer.write(body.slice(0, 100))
    const response = putBlob(path, readable, body.length)
    // The upload is under way (its checks done, its body streaming) when root 2 revokes Alice.
    await new Promise((resolve) => setTimeout(resolve, 50))
    expect((await putRoot(rootOf(2, [bob]))).status).toBe(201)
    await writer.write(body.slice(100))
    await writer.close()
    await expectProblem(await response, 422, 'untrusted-signature')
    expect(await listed('rotated-mid-upload')).toBe(false)
    // The bytes stored stay and bind the version (as after any failed commit); Bob's manifest of the
    // same bytes commits them without an upload.
    await stagedBy([bob], 'rotated-mid-upload', body)
    expect((await app.request(`${path}/commit`, { method: 'POST', headers: auth }, pinned)).status).toBe(201)
  })

  it('refuses to complete a multipart upload started before the rotation', async () => {
    expect((await putRoot(firstRoot)).status).toBe(201)
    const body = bytesOf(300, 43)
    const path = await stagedBy([alice], 'rotated-multipart', body)
    const started = await app.request(`${path}/uploads`, { method: 'POST', headers: auth }, pinned)
    expect(started.status).toBe(201)
    const { uploadId } = (await started.json()) as { uploadId: string }
    const uploadPath = `${path}/uploads/${encodeURIComponent(uploadId)}`
    const part = await app.request(
      `${uploadPath}/parts/1`,
      { method: 'PUT', headers: { ...auth, 'content-length': String(body.length) }, body },
      pinned,
    )
    expect(part.status).toBe(200)
    const uploaded = await part.json()
    expect((await putRoot(rootOf(2, [bob]))).status).toBe(201)
    await expectProblem(
      await send('POST', `${uploadPath}/complete`, { parts: [uploaded] }),
      422,
      'untrusted-signature',
    )
    expect(await listed('rotated-multipart')).toBe(false)
  })
})
