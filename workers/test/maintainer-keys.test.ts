/**
 * MAINTAINER_KEYS (ADR 0031): with the maintainers' public keys configured, the edge refuses manifests,
 * re-signed manifests and yank statements that none of them signed, so a stolen PUBLISH_TOKEN alone
 * cannot commit a bogus serial, shorten expiries or store forged statements. Real Ed25519 keys in
 * workerd; the edge under test is the app with that one binding changed.
 */
import { env } from 'cloudflare:workers'
import { describe, expect, it, vi } from 'vitest'
import type { SignedManifest } from '../../schemas/manifest.ts'
import { ProblemDetails } from '../../schemas/problem.ts'
import { canonicalJson, ED25519, type Envelope } from '../../schemas/signed-envelope.ts'
import type { YankStatement } from '../../schemas/yank-statement.ts'
import { app } from '../app.ts'
import { maintainerSetting } from '../publish/maintainer-keys.ts'
import { auth, base64, bytesOf, envelopeFor, newTestKey, sha256, type TestKey } from './publish-helpers.ts'

async function signedBy<Body>(body: Body, key: TestKey, keyid = key.keyid): Promise<Envelope<Body>> {
  const message = new TextEncoder().encode(canonicalJson(body))
  const sig = new Uint8Array(await crypto.subtle.sign(ED25519, key.privateKey, message))
  return { signed: body, signatures: [{ keyid, sig: base64(sig) }] }
}

const [alice, bob, mallory] = await Promise.all([newTestKey(), newTestKey(), newTestKey()])
/** The edge with two maintainers' keys, spaced and wrapped as an operator might paste them. */
const guarded: Env = { ...env, MAINTAINER_KEYS: `\n ${alice.publicKey}\t${bob.publicKey} \n` }

function send(bindings: Env, method: string, path: string, body?: unknown) {
  return app.request(
    path,
    {
      method,
      headers: { ...auth, 'content-type': 'application/json' },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    },
    bindings,
  )
}

async function expectProblem(response: Response, status: number, type: string) {
  expect(response.status).toBe(status)
  const problem = ProblemDetails.parse(await response.json())
  expect(problem.type).toContain(type)
  return problem
}

const publishPath = (e: SignedManifest) => `/v1/publish/${e.signed.name}/${e.signed.version}`

/** A manifest signed by `key`, staged and committed on `bindings`. */
async function published(bindings: Env, name: string, key: TestKey): Promise<SignedManifest> {
  const body = bytesOf(700, name.length)
  const envelope = await signedBy((await envelopeFor(name, '1.0.0', body)).signed, key)
  expect((await send(bindings, 'POST', publishPath(envelope), envelope)).status).toBe(201)
  const put = await app.request(
    `${publishPath(envelope)}/blob`,
    { method: 'PUT', headers: { ...auth, 'content-length': String(body.length) }, body },
    bindings,
  )
  expect(put.status).toBe(201)
  return envelope
}

describe('MAINTAINER_KEYS', () => {
  it('reads whitespace-separated keys with the keyids devices derive, and blank as not configured', async () => {
    expect(await maintainerSetting(guarded.MAINTAINER_KEYS)).toEqual({
      keys: [
        { keyid: alice.keyid, publicKey: alice.publicKey },
        { keyid: bob.keyid, publicKey: bob.publicKey },
      ],
    })
    expect(await maintainerSetting(' \n\t ')).toBeNull()
    expect(await maintainerSetting(undefined)).toBeNull()
    expect(await maintainerSetting(` root:${'ab'.repeat(32)}\n`)).toEqual({ rootDigest: 'ab'.repeat(32) })
  })

  it('stages only manifests a configured key signed, over exactly the bytes it signed', async () => {
    const body = bytesOf(500, 7)
    const manifest = (await envelopeFor('gated', '1.0.0', body)).signed

    const byMallory = await signedBy(manifest, mallory)
    await expectProblem(
      await send(guarded, 'POST', publishPath(byMallory), byMallory),
      422,
      'untrusted-signature',
    )
    // Mallory's signature under Alice's keyid, and a syntactically valid but made-up signature.
    const borrowed = await signedBy(manifest, mallory, alice.keyid)
    await expectProblem(
      await send(guarded, 'POST', publishPath(borrowed), borrowed),
      422,
      'untrusted-signature',
    )
    const madeUp = await envelopeFor('gated', '1.0.0', body)
    await expectProblem(await send(guarded, 'POST', publishPath(madeUp), madeUp), 422, 'untrusted-signature')
    // Alice's signature with the serial raised afterwards: what a stolen token would try, to block
    // every later publish with a 409.
    const honest = await signedBy(manifest, alice)
    const inflated = { ...honest, signed: { ...honest.signed, serial: 2 ** 40 } }
    await expectProblem(
      await send(guarded, 'POST', publishPath(inflated), inflated),
      422,
      'untrusted-signature',
    )

    // Nothing of the refused attempts was staged: the honest manifest starts at once, and so does a
    // version signed by the second key.
    expect((await send(guarded, 'POST', publishPath(honest), honest)).status).toBe(201)
    const byBob = await signedBy((await envelopeFor('gated', '1.0.1', body, { serial: 2 })).signed, bob)
    expect((await send(guarded, 'POST', publishPath(byBob), byBob)).status).toBe(201)
  })

  it('checks re-signed manifests and yank statements, and leaves unsigned yanks to the token', async () => {
    const original = await published(guarded, 'resigned-gated', alice)
    const longer = { ...original.signed, expires: new Date(Date.now() + 30 * 86_400_000).toISOString() }
    const path = `${publishPath(original)}/manifest`
    await expectProblem(
      await send(guarded, 'PUT', path, await signedBy(longer, mallory)),
      422,
      'untrusted-signature',
    )
    expect((await send(guarded, 'PUT', path, await signedBy(longer, bob))).status).toBe(200)

    const statement: YankStatement = {
      _type: 'deltaport/yank',
      name: 'resigned-gated',
      version: '1.0.0',
      sha256: await sha256(bytesOf(700, 'resigned-gated'.length)),
      yanked: true,
      reason: 'broken',
      at: new Date().toISOString(),
      expires: new Date(Date.now() + 86_400_000).toISOString(),
    }
    const yankPath = `${publishPath(original)}/yank`
    const forged = { reason: 'broken', statement: await signedBy(statement, mallory) }
    await expectProblem(await send(guarded, 'PUT', yankPath, forged), 422, 'untrusted-signature')
    const signed = await send(guarded, 'PUT', yankPath, {
      reason: 'broken',
      statement: await signedBy(statement, alice),
    })
    expect(signed.status).toBe(200)
    expect(await signed.json()).toMatchObject({ signed: true })

    const restore = {
      ...statement,
      yanked: false,
      reason: null,
      at: new Date(Date.now() + 1000).toISOString(),
    }
    await expectProblem(
      await send(guarded, 'DELETE', yankPath, { statement: await signedBy(restore, mallory) }),
      422,
      'untrusted-signature',
    )
    // An unsigned yank moves channels but no device (ADR 0025); it stays a PUBLISH_TOKEN operation.
    expect((await send(guarded, 'DELETE', yankPath)).status).toBe(200)
    expect((await send(guarded, 'PUT', yankPath, { reason: 'still broken' })).status).toBe(200)
  })

  it('checks each request once: one token check and one verification per signature, bad ones refused', async () => {
    const original = await published(guarded, 'checked-once', alice)
    let lockoutReads = 0
    const lockouts = new Proxy(env.AUTH_LOCKOUTS, {
      get(target, property) {
        const value = Reflect.get(target, property, target)
        if (property !== 'get' || typeof value !== 'function') return value
        return (...args: unknown[]) => {
          lockoutReads++
          return (value as (...a: unknown[]) => unknown).apply(target, args)
        }
      },
    })
    // The real KV, counted; a client address, so the lockout is consulted (locally it is not otherwise).
    const counted: Env = { ...guarded, AUTH_LOCKOUTS: lockouts }
    const path = publishPath(original)
    const statement: YankStatement = {
      _type: 'deltaport/yank',
      name: 'checked-once',
      version: '1.0.0',
      sha256: original.signed.sha256,
      yanked: true,
      reason: 'broken',
      at: new Date().toISOString(),
      expires: new Date(Date.now() + 86_400_000).toISOString(),
    }
    const restore = {
      ...statement,
      yanked: false,
      reason: null,
      at: new Date(Date.now() + 1000).toISOString(),
    }
    const longer = { ...original.signed, expires: new Date(Date.now() + 30 * 86_400_000).toISOString() }
    const next = (await envelopeFor('checked-once', '1.1.0', bytesOf(50))).signed
    type Sign = <Body>(body: Body) => Promise<Envelope<Body>>
    const routes: [string, string, (sign: Sign) => Promise<unknown>, number][] = [
      ['POST', '/v1/publish/checked-once/1.1.0', (sign) => sign({ ...next, serial: 2 }), 201],
      ['PUT', `${path}/manifest`, (sign) => sign(longer), 200],
      ['PUT', `${path}/yank`, async (sign) => ({ reason: 'broken', statement: await sign(statement) }), 200],
      ['DELETE', `${path}/yank`, async (sign) => ({ statement: await sign(restore) }), 200],
    ]
    // An unlisted key (nothing to verify), a listed keyid over another key's signature (verified once,
    // refused), a maintainer's signature (verified once).
    const signers: [Sign, number, number | null][] = [
      [(body) => signedBy(body, mallory), 0, 422],
      [(body) => signedBy(body, mallory, alice.keyid), 1, 422],
      [(body) => signedBy(body, alice), 1, null],
    ]
    const verify = vi.spyOn(crypto.subtle, 'verify')
    try {
      for (const [method, route, body, ok] of routes) {
        for (const [sign, verifications, refused] of signers) {
          lockoutReads = 0
          verify.mockClear()
          const response = await app.request(
            route,
            {
              method,
              headers: { ...auth, 'content-type': 'application/json', 'cf-connecting-ip': '192.0.2.7' },
              body: JSON.stringify(await body(sign)),
            },
            counted,
          )
          expect(response.status, `${method} ${route}: ${await response.text()}`).toBe(refused ?? ok)
          expect(lockoutReads, `${method} ${route}`).toBe(1)
          expect(verify, `${method} ${route}`).toHaveBeenCalledTimes(verifications)
        }
        const wrongToken = await app.request(
          route,
          {
            method,
            headers: { authorization: 'Bearer wrong', 'content-type': 'application/json' },
            body: '{}',
          },
          counted,
        )
        expect(wrongToken.status, `${method} ${route}`).toBe(401)
      }
    } finally {
      verify.mockRestore()
    }
  })

  it('accepts any signature when blank, and refuses every publish when malformed', async () => {
    const blank = await envelopeFor('unchecked', '1.0.0', bytesOf(10))
    expect((await send({ ...env, MAINTAINER_KEYS: '  ' }, 'POST', publishPath(blank), blank)).status).toBe(
      201,
    )

    const manifest = await signedBy((await envelopeFor('misconfigured', '1.0.0', bytesOf(10))).signed, alice)
    for (const broken of [
      `${alice.publicKey} not-base64!`,
      btoa('sixteen bytes ..'),
      `${alice.publicKey}=`,
      // The identity point: a small-order key under which anyone can forge a signature.
      `${alice.publicKey} AQ${'A'.repeat(41)}=`,
    ]) {
      const problem = await expectProblem(
        await send({ ...env, MAINTAINER_KEYS: broken }, 'POST', publishPath(manifest), manifest),
        500,
        'internal',
      )
      expect(problem.detail).toContain('MAINTAINER_KEYS')
    }
    expect((await send(guarded, 'POST', publishPath(manifest), manifest)).status).toBe(201)
  })
})
