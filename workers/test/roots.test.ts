/**
 * Root metadata at the edge (ADR 0035): GET /v1/roots/:version and /latest serve the chain devices
 * follow; PUT stores the next root only when it follows the chain (the rules of schemas/root-chain.ts),
 * once. Real Ed25519 keys and real R2 in workerd; every test starts from an empty chain.
 */
import { env } from 'cloudflare:workers'
import { beforeEach, describe, expect, it } from 'vitest'
import { MAX_ROOT_BYTES, type RootStatement, SignedRoot } from '../../schemas/root.ts'
import { canonicalJson } from '../../schemas/signed-envelope.ts'
import { createRoot } from '../storage/roots.ts'
import {
  auth,
  call,
  clearRoots,
  expectProblem,
  newTestKey,
  signedByAll,
  type TestKey,
} from './publish-helpers.ts'

const [rootA, rootB, rootC, maintainer] = await Promise.all([
  newTestKey(),
  newTestKey(),
  newTestKey(),
  newTestKey(),
])

const inDays = (days: number) => new Date(Date.now() + days * 86_400_000).toISOString()

/** Root `version` naming `rootKeys` (threshold `threshold`) as its root role and one maintainer key. */
function rootStatement(
  version: number,
  rootKeys: TestKey[],
  { threshold = 1, expires = inDays(365) }: { threshold?: number; expires?: string } = {},
): RootStatement {
  const listed = [...rootKeys, maintainer]
  return {
    _type: 'deltaport/root',
    version,
    expires,
    keys: Object.fromEntries(listed.map((k) => [k.keyid, { publicKey: k.publicKey }])),
    roles: {
      root: { keyids: rootKeys.map((k) => k.keyid), threshold },
      maintainers: { keyids: [maintainer.keyid], threshold: 1 },
    },
  }
}

const signedBy = (body: RootStatement, signers: TestKey[]): Promise<SignedRoot> => signedByAll(body, signers)

function putRoot(path: string | number, body: unknown, headers: Record<string, string> = auth) {
  return call(`/v1/roots/${path}`, {
    method: 'PUT',
    headers: { ...headers, 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  })
}

const getRoot = (path: string | number) => call(`/v1/roots/${path}`)

/** Publishes `root` and expects it stored (201). */
async function published(root: SignedRoot): Promise<SignedRoot> {
  const response = await putRoot(root.signed.version, root)
  expect(response.status, await response.clone().text()).toBe(201)
  return root
}

beforeEach(clearRoots)

describe('GET /v1/roots', () => {
  it('serves a stored root by version and as latest, with the caching each needs', async () => {
    await expectProblem(await getRoot('latest'), 404, 'not-found')
    const root = await published(await signedBy(rootStatement(1, [rootA]), [rootA]))

    const byVersion = await getRoot(1)
    expect(byVersion.status).toBe(200)
    expect(byVersion.headers.get('content-type')).toBe('application/json')
    expect(byVersion.headers.get('cache-control')).toBe('public, max-age=31536000, immutable')
    const text = await byVersion.text()
    expect(text).toBe(canonicalJson(root))
    expect(SignedRoot.parse(JSON.parse(text))).toEqual(root)
    const etag = byVersion.headers.get('etag')
    expect(etag).toMatch(/^".+"$/)

    const latest = await getRoot('latest')
    expect(latest.status).toBe(200)
    expect(latest.headers.get('cache-control')).toBe('public, max-age=5')
    expect(latest.headers.get('content-location')).toBe('/v1/roots/1')
    expect(await latest.text()).toBe(text)

    const revalidated = await call('/v1/roots/1', { headers: { 'if-none-match': etag ?? '' } })
    expect(revalidated.status).toBe(304)
  })

  it('answers 404 for a root not published yet, never cached (devices poll for it)', async () => {
    await published(await signedBy(rootStatement(1, [rootA]), [rootA]))
    const next = await expectProblem(await getRoot(2), 404, 'not-found')
    expect(next.detail).toContain('root 2')
    const response = await getRoot(2)
    expect(response.headers.get('cache-control')).toBe('no-store')
  })

  it('refuses versions that are not decimal integers from 1 to 1000000 (400)', async () => {
    for (const bad of ['0', '01', '-1', '1e0', '0x1', 'abc', '1000001', '1.0', '%201']) {
      await expectProblem(await getRoot(bad), 400, 'bad-request')
    }
    await expectProblem(await getRoot(1_000_000), 404, 'not-found')
  })

  it('finds latest past version 10, where a lexicographic listing would say 9', async () => {
    for (let version = 1; version <= 11; version++) {
      await published(await signedBy(rootStatement(version, [rootA]), [rootA]))
    }
    const latest = await getRoot('latest')
    expect(latest.status).toBe(200)
    expect(SignedRoot.parse(await latest.json()).signed.version).toBe(11)
    expect(latest.headers.get('content-location')).toBe('/v1/roots/11')
    expect(SignedRoot.parse(await (await getRoot(10)).json()).signed.version).toBe(10)
    await expectProblem(await getRoot(12), 404, 'not-found')
  })
})

describe('PUT /v1/roots/:version', () => {
  it('stores a self-signed first root (201) with its location', async () => {
    const root = await signedBy(rootStatement(1, [rootA]), [rootA])
    const response = await putRoot(1, root)
    expect(response.status).toBe(201)
    expect(response.headers.get('location')).toBe('/v1/roots/1')
    expect(await response.text()).toBe(canonicalJson(root))
  })

  it('refuses a first root without its own root keys’ threshold of signatures (422)', async () => {
    const byOther = await expectProblem(
      await putRoot(1, await signedBy(rootStatement(1, [rootA]), [rootB])),
      422,
      'untrusted-root',
    )
    expect(byOther.detail).toContain('its own root keys')
    // Threshold 2 of {A, B}: one signature is not enough, and the same key twice counts once.
    const twoOfTwo = rootStatement(1, [rootA, rootB], { threshold: 2 })
    await expectProblem(await putRoot(1, await signedBy(twoOfTwo, [rootA])), 422, 'untrusted-root')
    await expectProblem(await putRoot(1, await signedBy(twoOfTwo, [rootA, rootA])), 422, 'untrusted-root')
    // A key listed under another key's id.
    const misfiled = rootStatement(1, [rootA])
    misfiled.keys[rootA.keyid] = { publicKey: rootB.publicKey }
    await expectProblem(await putRoot(1, await signedBy(misfiled, [rootB])), 422, 'untrusted-root')
    await expectProblem(await getRoot(1), 404, 'not-found')
    await published(await signedBy(twoOfTwo, [rootA, rootB]))
  })

  it('stores a rotation signed by the old root keys and the new ones; latest follows', async () => {
    await published(await signedBy(rootStatement(1, [rootA]), [rootA]))
    const rotated = await published(await signedBy(rootStatement(2, [rootB]), [rootA, rootB]))
    const latest = await getRoot('latest')
    expect(latest.headers.get('content-location')).toBe('/v1/roots/2')
    expect(await latest.json()).toEqual(rotated)
    // Root 2's keys sign root 3; root 1's key alone no longer can.
    await expectProblem(
      await putRoot(3, await signedBy(rootStatement(3, [rootC]), [rootA, rootC])),
      422,
      'untrusted-root',
    )
    await published(await signedBy(rootStatement(3, [rootC]), [rootB, rootC]))
  })

  it('refuses a rotation signed only by the new root keys, or only by the old ones (422)', async () => {
    await published(await signedBy(rootStatement(1, [rootA]), [rootA]))
    const next = rootStatement(2, [rootB])
    const newOnly = await expectProblem(
      await putRoot(2, await signedBy(next, [rootB])),
      422,
      'untrusted-root',
    )
    expect(newOnly.detail).toContain('root keys of root 1')
    const oldOnly = await expectProblem(
      await putRoot(2, await signedBy(next, [rootA])),
      422,
      'untrusted-root',
    )
    expect(oldOnly.detail).toContain('its own root keys')
    await expectProblem(await getRoot(2), 404, 'not-found')
    expect((await getRoot('latest')).headers.get('content-location')).toBe('/v1/roots/1')
  })

  it('refuses a root whose predecessor is not published (409)', async () => {
    const orphan = await signedBy(rootStatement(2, [rootA]), [rootA])
    expect((await expectProblem(await putRoot(2, orphan), 409, 'conflict')).detail).toContain(
      'root 1 not published',
    )
    await published(await signedBy(rootStatement(1, [rootA]), [rootA]))
    const skipping = await signedBy(rootStatement(3, [rootA]), [rootA])
    expect((await expectProblem(await putRoot(3, skipping), 409, 'conflict')).detail).toContain(
      'root 2 not published',
    )
    await expectProblem(await getRoot(3), 404, 'not-found')
  })

  it('is write-once: the same root again is 200, another root for a stored version 409', async () => {
    const first = await published(await signedBy(rootStatement(1, [rootA]), [rootA]))
    // The same root, laid out differently: the canonical bytes are equal, so it is a retry.
    const again = await putRoot(1, JSON.stringify(first, null, 2))
    expect(again.status).toBe(200)
    expect(await again.text()).toBe(canonicalJson(first))
    // A valid but different first root: the chain has started, so it cannot be replaced.
    const other = await signedBy(rootStatement(1, [rootB]), [rootB])
    await expectProblem(await putRoot(1, other), 409, 'conflict')
    const second = await published(await signedBy(rootStatement(2, [rootA]), [rootA]))
    const reSigned = await signedBy({ ...second.signed, expires: inDays(30) }, [rootA])
    await expectProblem(await putRoot(2, reSigned), 409, 'conflict')
    expect(await (await getRoot(1)).text()).toBe(canonicalJson(first))
    expect(await (await getRoot(2)).text()).toBe(canonicalJson(second))
  })

  it('writes create-only: a root stored meanwhile is never overwritten', async () => {
    // What a PUT that lost a race meets: its checks saw no root 1, and another root 1 was stored since.
    const theirs = canonicalJson(await signedBy(rootStatement(1, [rootB]), [rootB]))
    const mine = canonicalJson(await signedBy(rootStatement(1, [rootA]), [rootA]))
    expect(await createRoot(env.ARTIFACTS, 1, theirs)).toBe('created')
    await expect(createRoot(env.ARTIFACTS, 1, mine)).rejects.toMatchObject({ status: 409 })
    expect(await createRoot(env.ARTIFACTS, 1, theirs)).toBe('unchanged')
    expect(await (await getRoot(1)).text()).toBe(theirs)
  })

  it('refuses a root that has already expired (422)', async () => {
    const expired = rootStatement(1, [rootA], { expires: new Date(Date.now() - 1000).toISOString() })
    const problem = await expectProblem(
      await putRoot(1, await signedBy(expired, [rootA])),
      422,
      'unprocessable',
    )
    expect(problem.detail).toContain('expired')
    await published(await signedBy(rootStatement(1, [rootA]), [rootA]))
    const expiredNext = rootStatement(2, [rootA], { expires: new Date(Date.now() - 1000).toISOString() })
    await expectProblem(await putRoot(2, await signedBy(expiredNext, [rootA])), 422, 'unprocessable')
    await expectProblem(await getRoot(2), 404, 'not-found')
  })

  it('refuses bad versions, a body of another version, oversized and malformed bodies', async () => {
    const root = await signedBy(rootStatement(1, [rootA]), [rootA])
    for (const bad of ['0', '01', 'latest', '1000001'])
      await expectProblem(await putRoot(bad, root), 400, 'bad-request')
    const mismatch = await expectProblem(await putRoot(2, root), 400, 'bad-request')
    expect(mismatch.detail).toContain('not root 2')
    await expectProblem(await putRoot(1, 'x'.repeat(MAX_ROOT_BYTES + 1)), 413, 'payload-too-large')
    // Padding inside the JSON counts too: the limit is on bytes, before anything is parsed.
    const padded = `${JSON.stringify(root)}${' '.repeat(MAX_ROOT_BYTES)}`
    await expectProblem(await putRoot(1, padded), 413, 'payload-too-large')
    await expectProblem(await putRoot(1, '{"signed":'), 400, 'bad-request')
    const notARoot = await expectProblem(
      await putRoot(1, {
        signed: { ...root.signed, _type: 'deltaport/manifest' },
        signatures: root.signatures,
      }),
      400,
      'bad-request',
    )
    expect(notARoot.errors?.map((e) => e.path)).toContain('signed._type')
    const unsigned = await expectProblem(
      await putRoot(1, { signed: root.signed, signatures: [] }),
      400,
      'bad-request',
    )
    expect(unsigned.errors?.map((e) => e.path)).toContain('signatures')
    // A small-order key (the identity point) verifies forged signatures, so no root may list one.
    const identity = `AQ${'A'.repeat(41)}=`
    const keyid = Object.keys(root.signed.keys)[0] ?? ''
    const smallOrder = await expectProblem(
      await putRoot(1, { ...root, signed: { ...root.signed, keys: { [keyid]: { publicKey: identity } } } }),
      400,
      'bad-request',
    )
    expect(JSON.stringify(smallOrder.errors)).toContain('small-order')
    await expectProblem(await getRoot(1), 404, 'not-found')
  })

  it('needs the maintainer token (401), as the publish routes do', async () => {
    const root = await signedBy(rootStatement(1, [rootA]), [rootA])
    await expectProblem(await putRoot(1, root, {}), 401, 'unauthorized')
    await expectProblem(
      await putRoot(1, root, { authorization: 'Bearer not-the-token' }),
      401,
      'unauthorized',
    )
    await expectProblem(await getRoot(1), 404, 'not-found')
    // Reads and writes share the path: other methods are 405 with Allow.
    const deleted = await call('/v1/roots/1', { method: 'DELETE', headers: auth })
    await expectProblem(deleted, 405, 'method-not-allowed')
    expect(deleted.headers.get('allow')).toBe('GET, HEAD, PUT')
  })
})
