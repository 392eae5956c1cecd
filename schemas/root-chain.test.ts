import { describe, expect, it } from 'vitest'
import { generateKeyPair, type KeyPairFiles, signDocument } from '../client-agent/signing.ts'
import { MAX_SIGNATURES } from './manifest.ts'
import { RootStatement, SignedRoot } from './root.ts'
import { nextRootProblem, selfSignedProblem } from './root-chain.ts'

const [rootA, rootB, rootC, maintainer] = await Promise.all([
  generateKeyPair(),
  generateKeyPair(),
  generateKeyPair(),
  generateKeyPair(),
])

function root(version: number, rootKeys: KeyPairFiles[], threshold = 1): RootStatement {
  const keys = Object.fromEntries([...rootKeys, maintainer].map((k) => [k.keyid, { publicKey: k.publicKey }]))
  return {
    _type: 'deltaport/root',
    version,
    expires: '2030-01-01T00:00:00Z',
    keys,
    roles: {
      root: { keyids: rootKeys.map((k) => k.keyid), threshold },
      maintainers: { keyids: [maintainer.keyid], threshold: 1 },
    },
  }
}

/** `body` signed by each of `signers` (the same key may appear twice). */
async function signed(body: RootStatement, signers: KeyPairFiles[]): Promise<SignedRoot> {
  const envelopes = await Promise.all(signers.map((k) => signDocument(body, k)))
  return { signed: body, signatures: envelopes.flatMap((e) => e.signatures) }
}

describe('root statement schema', () => {
  it('accepts a well-formed root and refuses roles naming unlisted keys or thresholds above their keys', async () => {
    const good = await signed(root(1, [rootA]), [rootA])
    expect(SignedRoot.safeParse(good).success).toBe(true)

    const unlisted = root(1, [rootA])
    unlisted.roles.maintainers.keyids = [rootC.keyid]
    expect(SignedRoot.safeParse({ ...good, signed: unlisted }).success).toBe(false)

    expect(SignedRoot.safeParse({ ...good, signed: root(1, [rootA], 2) }).success).toBe(false)
    const repeated = root(1, [rootA])
    repeated.roles.root.keyids = [rootA.keyid, rootA.keyid]
    expect(SignedRoot.safeParse({ ...good, signed: repeated }).success).toBe(false)
    expect(SignedRoot.safeParse({ ...good, signed: { ...root(1, [rootA]), extra: 1 } }).success).toBe(false)
  })
})

describe('a root on its own', () => {
  it('stands when its own root keys sign it to their threshold', async () => {
    expect(await selfSignedProblem(await signed(root(1, [rootA]), [rootA]))).toBeNull()
    expect(await selfSignedProblem(await signed(root(1, [rootA, rootB], 2), [rootA, rootB]))).toBeNull()
  })

  it('falls short with a foreign signature, too few signers, or one key signing twice', async () => {
    expect(await selfSignedProblem(await signed(root(1, [rootA]), [rootB]))).toMatch(
      /lacks 1 valid signature/,
    )
    expect(await selfSignedProblem(await signed(root(1, [rootA, rootB], 2), [rootA]))).toMatch(/lacks 2/)
    expect(await selfSignedProblem(await signed(root(1, [rootA, rootB], 2), [rootA, rootA]))).toMatch(
      /lacks 2/,
    )
  })

  it('refuses a key listed under another key’s id', async () => {
    const body = root(1, [rootA])
    body.keys[maintainer.keyid] = { publicKey: rootB.publicKey }
    expect(await selfSignedProblem(await signed(body, [rootA]))).toMatch(/under another key's id/)
  })

  it('refuses a signature over other bytes', async () => {
    const envelope = await signed(root(1, [rootA]), [rootA])
    const altered = { ...envelope, signed: { ...envelope.signed, expires: '2031-01-01T00:00:00Z' } }
    expect(await selfSignedProblem(altered)).toMatch(/lacks/)
  })
})

describe('the next root', () => {
  const current = root(1, [rootA])

  it('follows when the old and the new root keys both sign it', async () => {
    expect(await nextRootProblem(current, await signed(root(2, [rootB]), [rootA, rootB]))).toBeNull()
    // Same root keys, e.g. a maintainer key rotated: one signature serves both rules.
    expect(await nextRootProblem(current, await signed(root(2, [rootA]), [rootA]))).toBeNull()
  })

  it('does not follow without the old root keys (anyone could mint keys) or without the new ones', async () => {
    expect(await nextRootProblem(current, await signed(root(2, [rootB]), [rootB]))).toMatch(
      /root keys of root 1/,
    )
    expect(await nextRootProblem(current, await signed(root(2, [rootB]), [rootA]))).toMatch(
      /its own root keys/,
    )
  })

  it('holds the old root’s threshold', async () => {
    const twoOfThree = root(1, [rootA, rootB, rootC], 2)
    const next = root(2, [rootA, rootB, rootC], 2)
    expect(await nextRootProblem(twoOfThree, await signed(next, [rootA]))).toMatch(/lacks 2/)
    expect(await nextRootProblem(twoOfThree, await signed(next, [rootA, rootC]))).toBeNull()
  })

  it('only follows the version one up', async () => {
    expect(await nextRootProblem(current, await signed(root(3, [rootA]), [rootA]))).toMatch(/expected root 2/)
    expect(await nextRootProblem(current, await signed(root(1, [rootA]), [rootA]))).toMatch(/expected root 2/)
  })
})

describe('root thresholds', () => {
  it('are refused above the signatures one envelope carries, which no document could meet', () => {
    const keyids = Array.from({ length: 9 }, (_, i) => String(i).repeat(64))
    const keys = Object.fromEntries(keyids.map((keyid) => [keyid, { publicKey: maintainer.publicKey }]))
    const root = (threshold: number) => ({
      _type: 'deltaport/root',
      version: 1,
      expires: '2030-01-01T00:00:00.000Z',
      keys,
      roles: { root: { keyids, threshold }, maintainers: { keyids, threshold: 1 } },
    })
    expect(RootStatement.safeParse(root(MAX_SIGNATURES)).success).toBe(true)
    const refused = RootStatement.safeParse(root(MAX_SIGNATURES + 1))
    expect(refused.success).toBe(false)
    expect(refused.error?.issues.map((i) => i.message)).toContain(
      `threshold is above ${MAX_SIGNATURES}, the most signatures a signed document carries: nothing could ever meet it`,
    )
  })
})
