import { execFile } from 'node:child_process'
import { mkdtemp, readdir, readFile, truncate, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { base64Bytes } from '../../schemas/base64.ts'
import { MAX_ROOT_BYTES, SignedRoot } from '../../schemas/root.ts'
import { nextRootProblem, rootDigest, selfSignedProblem } from '../../schemas/root-chain.ts'
import { keyIdOf } from '../../schemas/signed-envelope.ts'
import { EdgeClient } from '../edge-client.ts'
import {
  type CreateRootRequest,
  createRoot,
  edgeRoot,
  publishRoot,
  signRootFile,
  verifyRootFile,
} from '../root-metadata.ts'
import { generateKeyPair, type KeyPairFiles } from '../signing.ts'
import { agentFailure, makeWorkspace } from './fixtures.ts'
import { startLocalEdge, TEST_TOKEN } from './local-edge.ts'

const BIN = join(import.meta.dirname, '..', 'bin', 'deltaport.ts')
const DAY_MS = 86_400_000
const NOW = new Date('2026-11-25T12:00:00.000Z')

interface Holder extends KeyPairFiles {
  file: string
}

let dir: string
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'deltaport-root-'))
})

/** A maintainer's key file, as `deltaport keygen` writes it. */
async function holder(name: string): Promise<Holder> {
  const key = await generateKeyPair()
  const file = join(dir, `${name}.key.json`)
  await writeFile(file, JSON.stringify(key))
  return { ...key, file }
}

async function readRoot(path: string): Promise<SignedRoot> {
  return SignedRoot.parse(JSON.parse(await readFile(path, 'utf8')))
}

/** Root 1: one root key `r`, one maintainer key `m`, signed by `r`. */
async function firstRoot(r: Holder, m: Holder, extra: Partial<CreateRootRequest> = {}) {
  const out = join(dir, 'root-1.json')
  await createRoot({
    version: 1,
    expiresDays: 365,
    root: { publicKeys: [r.publicKey] },
    maintainers: { publicKeys: [m.publicKey] },
    keyFiles: [r.file],
    out,
    now: NOW,
    ...extra,
  })
  return out
}

describe('root create', () => {
  it('writes a root whose keyids are the keys’ sha256, signed by every --key, valid on its own', async () => {
    const [r1, r2, m, i] = await Promise.all([holder('r1'), holder('r2'), holder('m'), holder('i')])
    const out = join(dir, 'root-1.json')
    const report = await createRoot({
      version: 1,
      expiresDays: 30,
      root: { publicKeys: [r1.publicKey, r2.publicKey], threshold: 2 },
      maintainers: { publicKeys: [m.publicKey] },
      index: { publicKeys: [i.publicKey] },
      keyFiles: [r1.file, r2.file],
      out,
      now: NOW,
    })
    const root = await readRoot(out)
    expect(root.signed).toEqual({
      _type: 'deltaport/root',
      version: 1,
      expires: new Date(NOW.getTime() + 30 * DAY_MS).toISOString(),
      keys: {
        [r1.keyid]: { publicKey: r1.publicKey },
        [r2.keyid]: { publicKey: r2.publicKey },
        [m.keyid]: { publicKey: m.publicKey },
        [i.keyid]: { publicKey: i.publicKey },
      },
      roles: {
        root: { keyids: [r1.keyid, r2.keyid], threshold: 2 },
        maintainers: { keyids: [m.keyid], threshold: 1 },
        index: { keyids: [i.keyid] },
      },
    })
    // keygen's keyid is what the root computes from the raw key, not copied from the key file.
    expect(await keyIdOf(base64Bytes(r1.publicKey) ?? new Uint8Array())).toBe(r1.keyid)
    expect(root.signatures.map((s) => s.keyid)).toEqual([r1.keyid, r2.keyid])
    expect(await selfSignedProblem(root)).toBeNull()
    expect(report).toMatchObject({ version: 1, problems: [], signedBy: [r1.keyid, r2.keyid] })
  })

  it('writes a root short of its threshold, says what is missing, and root sign completes it', async () => {
    const [r1, r2, m] = await Promise.all([holder('r1'), holder('r2'), holder('m')])
    const out = join(dir, 'root-1.json')
    const created = await createRoot({
      version: 1,
      expiresDays: 30,
      root: { publicKeys: [r1.publicKey, r2.publicKey], threshold: 2 },
      maintainers: { publicKeys: [m.publicKey] },
      keyFiles: [r1.file],
      out,
      now: NOW,
    })
    expect(created.problems).toEqual(['root 1 lacks 2 valid signature(s) by its own root keys'])
    // The same key again counts once (its signature is replaced, not added).
    const again = await signRootFile({ file: out, keyFiles: [r1.file, r1.file], now: NOW })
    expect(again.report.problems).toHaveLength(1)
    expect((await readRoot(out)).signatures).toHaveLength(1)
    const done = await signRootFile({ file: out, keyFiles: [r2.file], now: NOW })
    expect(done.report.problems).toEqual([])
    expect(await selfSignedProblem(await readRoot(out))).toBeNull()
  })

  it('refuses arguments that cannot make a valid root, naming the flag, and writes nothing', async () => {
    const [r, m, other] = await Promise.all([holder('r'), holder('m'), holder('other')])
    const out = join(dir, 'refused.json')
    const base: CreateRootRequest = {
      version: 1,
      expiresDays: 30,
      root: { publicKeys: [r.publicKey] },
      maintainers: { publicKeys: [m.publicKey] },
      keyFiles: [r.file],
      out,
      now: NOW,
    }
    const cases: Array<[Partial<CreateRootRequest>, string, string]> = [
      [{ keyFiles: [] }, 'usage', 'at least one key'],
      [{ keyFiles: [m.file] }, 'usage', 'is not a root key of root 1'],
      [{ version: undefined }, 'usage', 'needs --version'],
      [
        { root: { publicKeys: [r.publicKey], threshold: 2 } },
        'usage',
        '--root-threshold 2 is above the 1 root key(s)',
      ],
      [{ maintainers: { publicKeys: [] } }, 'usage', '--maintainer-key needs at least one key'],
      [{ maintainers: {} }, 'usage', 'a root needs --maintainer-key'],
      [{ maintainers: { publicKeys: [m.publicKey, m.publicKey] } }, 'usage', 'is given twice'],
      [{ maintainers: { publicKeys: ['AAAA'] } }, 'usage', 'not a 32-byte Ed25519 public key'],
      [{ maintainers: { publicKeys: [`AQ${'A'.repeat(41)}=`] } }, 'usage', 'is a small-order Ed25519 point'],
      [{ index: { publicKeys: ['not base64!'] } }, 'usage', '--index-key: "not base64!" is not base64'],
    ]
    // More keys than a root may list: the schema's limit, in its words.
    const many = await Promise.all(Array.from({ length: 16 }, () => generateKeyPair()))
    cases.push([
      { maintainers: { publicKeys: many.map((k) => k.publicKey) } },
      'usage',
      'that root would be invalid: at most 16 keys',
    ])
    // A threshold above the 8 signatures an envelope carries could never be met: no root (or manifest)
    // under it could be signed.
    const nine = many.slice(0, 9).map((k) => k.publicKey)
    cases.push(
      [
        { root: { publicKeys: nine, threshold: 9 } },
        'usage',
        '--root-threshold 9 is above 8, the most signatures a signed document carries',
      ],
      [
        { maintainers: { publicKeys: nine, threshold: 9 } },
        'usage',
        '--maintainer-threshold 9 is above 8, the most signatures a signed document carries',
      ],
    )
    for (const [change, code, message] of cases) {
      const error = await agentFailure(createRoot({ ...base, ...change }))
      expect({ code: error.code, message: error.message }).toMatchObject({
        code,
        message: expect.stringContaining(message),
      })
    }
    // A key file whose halves do not belong together would sign what no device verifies.
    const mismatched = join(dir, 'mismatched.key.json')
    await writeFile(mismatched, JSON.stringify({ ...r, privateKey: other.privateKey }))
    expect(await agentFailure(createRoot({ ...base, keyFiles: [mismatched] }))).toMatchObject({
      code: 'config',
      message: expect.stringContaining('private key does not match its public key'),
    })
    expect(await readdir(dir)).not.toContain('refused.json')
  })

  it('refuses a rotation that would need more signatures than one envelope carries', async () => {
    const olds = await Promise.all(Array.from({ length: 5 }, (_, i) => holder(`old${i}`)))
    const news = await Promise.all(Array.from({ length: 4 }, (_, i) => holder(`new${i}`)))
    const m = await holder('m')
    const one = await firstRoot(olds[0] as Holder, m, {
      root: { publicKeys: olds.map((k) => k.publicKey), threshold: 5 },
      keyFiles: olds.map((k) => k.file),
    })
    // 5 by root 1's root keys and 4 by root 2's, none shared: 9 signatures, one envelope holds 8.
    const rotation = {
      from: one,
      expiresDays: 30,
      keyFiles: [...olds, ...news].map((k) => k.file),
      out: join(dir, 'root-2.json'),
      now: NOW,
    }
    expect(
      await agentFailure(
        createRoot({ ...rotation, root: { publicKeys: news.map((k) => k.publicKey), threshold: 4 } }),
      ),
    ).toMatchObject({
      code: 'usage',
      message: expect.stringContaining(
        "root 2 would need 9 signatures (5 by root 1's root keys and 4 by its own, 0 key(s) in both), above 8",
      ),
    })
    // Keeping one of root 1's root keys makes it 8: signable, and signed here in full.
    const kept = [olds[0] as Holder, ...news.slice(0, 3)]
    const done = await createRoot({
      ...rotation,
      keyFiles: [...olds, ...news.slice(0, 3)].map((k) => k.file),
      root: { publicKeys: kept.map((k) => k.publicKey), threshold: 4 },
    })
    expect(done.problems).toEqual([])
  })

  it('never replaces an existing file', async () => {
    const [r, m] = await Promise.all([holder('r'), holder('m')])
    const out = await firstRoot(r, m)
    const before = await readFile(out, 'utf8')
    const error = await agentFailure(firstRoot(r, m, { expiresDays: 1 }))
    expect(error).toMatchObject({ code: 'config', message: expect.stringContaining('already exists') })
    expect(await readFile(out, 'utf8')).toBe(before)
    // And leaves no temp file behind.
    expect((await readdir(dir)).filter((f) => f.endsWith('.tmp'))).toEqual([])
  })
})

describe('root create --from (rotation)', () => {
  it('keeps roles and thresholds, bumps the version, replaces the role given and drops the key it no longer uses', async () => {
    const [r1, r2, m1, m2, i] = await Promise.all([
      holder('r1'),
      holder('r2'),
      holder('m1'),
      holder('m2'),
      holder('i'),
    ])
    const one = await firstRoot(r1, m1, { index: { publicKeys: [i.publicKey] } })
    const out = join(dir, 'root-2.json')
    // Rotating the maintainer key: root 1's root key signs, as root 1 requires.
    const report = await createRoot({
      from: one,
      expiresDays: 90,
      maintainers: { publicKeys: [m2.publicKey] },
      keyFiles: [r1.file],
      out,
      now: NOW,
    })
    const two = await readRoot(out)
    expect(two.signed.version).toBe(2)
    expect(two.signed.roles).toEqual({
      root: { keyids: [r1.keyid], threshold: 1 },
      maintainers: { keyids: [m2.keyid], threshold: 1 },
      index: { keyids: [i.keyid] },
    })
    expect(Object.keys(two.signed.keys).sort()).toEqual([r1.keyid, m2.keyid, i.keyid].sort())
    expect(two.signed.keys[m1.keyid]).toBeUndefined()
    expect(report.problems).toEqual([])
    expect(await nextRootProblem((await readRoot(one)).signed, two)).toBeNull()

    // Rotating the root key itself: the old one and the new one both sign; the old one leaves.
    const three = join(dir, 'root-3.json')
    const rotated = await createRoot({
      from: out,
      expiresDays: 90,
      root: { publicKeys: [r2.publicKey] },
      keyFiles: [r1.file, r2.file],
      out: three,
      now: NOW,
    })
    const root3 = await readRoot(three)
    expect(root3.signed.version).toBe(3)
    expect(root3.signed.keys[r1.keyid]).toBeUndefined()
    expect(rotated).toMatchObject({ problems: [], signedBy: [r1.keyid, r2.keyid] })
    expect(await nextRootProblem(two.signed, root3)).toBeNull()
    // Signed by the new root key alone it stands on its own but cannot follow root 2.
    const alone = join(dir, 'root-3-alone.json')
    const aloneReport = await createRoot({
      from: out,
      expiresDays: 90,
      root: { publicKeys: [r2.publicKey] },
      keyFiles: [r2.file],
      out: alone,
      now: NOW,
    })
    expect(aloneReport.problems).toEqual([`root 3 lacks 1 valid signature(s) by the root keys of root 2`])
  })

  it('takes an explicit version and thresholds, and refuses a kept threshold the new keys cannot meet', async () => {
    const [r1, r2, r3, m] = await Promise.all([holder('r1'), holder('r2'), holder('r3'), holder('m')])
    const one = await firstRoot(r1, m, {
      root: { publicKeys: [r1.publicKey, r2.publicKey], threshold: 2 },
      keyFiles: [r1.file, r2.file],
    })
    const kept = await agentFailure(
      createRoot({
        from: one,
        expiresDays: 30,
        root: { publicKeys: [r3.publicKey] },
        keyFiles: [r1.file, r2.file, r3.file],
        out: join(dir, 'x.json'),
      }),
    )
    expect(kept).toMatchObject({
      code: 'usage',
      message: expect.stringContaining(
        "root 1's root threshold 2 is above the 1 root key(s): pass --root-threshold",
      ),
    })
    const out = join(dir, 'root-5.json')
    await createRoot({
      from: one,
      version: 5,
      expiresDays: 30,
      root: { publicKeys: [r2.publicKey, r3.publicKey], threshold: 1 },
      maintainers: { threshold: 1 },
      keyFiles: [r1.file],
      out,
    })
    const five = await readRoot(out)
    expect(five.signed.version).toBe(5)
    expect(five.signed.roles.root).toEqual({ keyids: [r2.keyid, r3.keyid], threshold: 1 })
    expect(five.signed.keys[r1.keyid]).toBeUndefined()
  })

  it('refuses to start from a root that does not verify', async () => {
    const [r, m, evil] = await Promise.all([holder('r'), holder('m'), holder('evil')])
    const one = await firstRoot(r, m)
    // Someone swapped the maintainer key in the file: the signature no longer covers it.
    const tampered = await readRoot(one)
    tampered.signed.keys = {
      [r.keyid]: { publicKey: r.publicKey },
      [evil.keyid]: { publicKey: evil.publicKey },
    }
    tampered.signed.roles.maintainers.keyids = [evil.keyid]
    await writeFile(one, JSON.stringify(tampered))
    const error = await agentFailure(
      createRoot({ from: one, expiresDays: 30, keyFiles: [r.file], out: join(dir, 'root-2.json') }),
    )
    expect(error).toMatchObject({
      code: 'untrusted-root',
      message: expect.stringContaining('lacks 1 valid signature'),
    })
  })
})

describe('root sign and verify', () => {
  it('replaces a signature by the same key instead of adding one', async () => {
    const [r, m] = await Promise.all([holder('r'), holder('m')])
    const out = await firstRoot(r, m)
    const root = await readRoot(out)
    // A stale signature by r (over an earlier draft): signing again replaces it.
    const stale = { keyid: r.keyid, sig: Buffer.alloc(64, 7).toString('base64') }
    await writeFile(out, JSON.stringify({ ...root, signatures: [stale] }))
    expect((await verifyRootFile({ file: out, now: NOW })).problems).toHaveLength(1)
    await signRootFile({ file: out, keyFiles: [r.file], now: NOW })
    const resigned = await readRoot(out)
    expect(resigned.signatures).toEqual(root.signatures)
    expect((await verifyRootFile({ file: out, now: NOW })).problems).toEqual([])
  })

  it('refuses files that are not a signed root, and one over MAX_ROOT_BYTES before parsing it', async () => {
    const [r, m] = await Promise.all([holder('r'), holder('m')])
    const one = await readRoot(await firstRoot(r, m))
    const file = join(dir, 'candidate.json')
    const cases: Array<[string | Uint8Array, string]> = [
      [JSON.stringify(r), 'is not a signed deltaport root'],
      [JSON.stringify(one.signed), 'is not a signed deltaport root'],
      [JSON.stringify({ ...one, signatures: [] }), 'is not a signed deltaport root'],
      [
        JSON.stringify({ ...one, signed: { ...one.signed, _type: 'deltaport/yank' } }),
        'is not a signed deltaport root',
      ],
      ['{"signed":', 'is not JSON'],
      // Not JSON either, but the size is what it is refused for: it is never parsed.
      ['x'.repeat(MAX_ROOT_BYTES + 1), `is over ${MAX_ROOT_BYTES} bytes`],
    ]
    for (const [content, message] of cases) {
      await writeFile(file, content)
      for (const attempt of [
        () => signRootFile({ file, keyFiles: [r.file] }),
        () => verifyRootFile({ file }),
      ]) {
        const error = await agentFailure(attempt())
        expect({ code: error.code, message: error.message }).toEqual({
          code: 'untrusted-root',
          message: expect.stringContaining(message),
        })
      }
      expect(await readFile(file)).toEqual(Buffer.from(content))
    }
    // A huge file (sparse: nothing on disk) is refused by its size as fast, never read whole.
    await truncate(file, 3 * 2 ** 30)
    expect(await agentFailure(verifyRootFile({ file }))).toMatchObject({
      code: 'untrusted-root',
      message: expect.stringContaining(`is over ${MAX_ROOT_BYTES} bytes`),
    })
    // A root padded to just under the limit is still read.
    const padded = JSON.stringify(one, null, 2)
    await writeFile(file, padded + ' '.repeat(MAX_ROOT_BYTES - Buffer.byteLength(padded)))
    expect((await verifyRootFile({ file, now: NOW })).problems).toEqual([])
  })

  it('verify names each problem: a bad signature, a version gap, root keys of the previous root, expiry', async () => {
    const [r1, r2, m] = await Promise.all([holder('r1'), holder('r2'), holder('m')])
    const one = await firstRoot(r1, m)
    const two = join(dir, 'root-2.json')
    await createRoot({ from: one, expiresDays: 10, keyFiles: [r1.file], out: two, now: NOW })
    expect(await verifyRootFile({ file: two, previous: one, now: NOW })).toMatchObject({
      version: 2,
      problems: [],
      signedBy: [r1.keyid],
    })
    // Past its expiry it would be refused.
    const later = new Date(NOW.getTime() + 11 * DAY_MS)
    expect((await verifyRootFile({ file: two, now: later })).problems).toEqual([
      `root 2 expired at ${new Date(NOW.getTime() + 10 * DAY_MS).toISOString()}`,
    ])
    // Root 1 cannot follow itself, nor root 2 follow root 2.
    expect((await verifyRootFile({ file: one, previous: one, now: NOW })).problems).toEqual([
      'expected root 2, got root 1',
    ])
    // Signed only by a key root 1 never named.
    const foreign = join(dir, 'root-2-foreign.json')
    await createRoot({
      from: one,
      expiresDays: 10,
      root: { publicKeys: [r2.publicKey] },
      keyFiles: [r2.file],
      out: foreign,
      now: NOW,
    })
    expect((await verifyRootFile({ file: foreign, previous: one, now: NOW })).problems).toEqual([
      'root 2 lacks 1 valid signature(s) by the root keys of root 1',
    ])
    // A signature that does not verify (the document changed after signing).
    const edited = await readRoot(two)
    await writeFile(
      two,
      JSON.stringify({ ...edited, signed: { ...edited.signed, expires: later.toISOString() } }),
    )
    expect(await verifyRootFile({ file: two, previous: one, now: NOW })).toMatchObject({
      signedBy: [],
      problems: [
        'root 2 lacks 1 valid signature(s) by its own root keys',
        'root 2 lacks 1 valid signature(s) by the root keys of root 1',
      ],
    })
  })
})

/** The real local edge (workerd, R2) with its root routes, fresh for each test. */
async function startRootEdge(): Promise<{ url: string; token: string; dispose(): Promise<void> }> {
  return { ...(await startLocalEdge()), token: TEST_TOKEN }
}

describe('root publish and show', () => {
  let edge: Awaited<ReturnType<typeof startRootEdge>>
  beforeEach(async () => {
    edge = await startRootEdge()
  })
  afterEach(async () => {
    await edge.dispose()
  })

  it('publishes a chain root by root; the same root again is no error; show reads it back', async () => {
    const [r1, r2, m] = await Promise.all([holder('r1'), holder('r2'), holder('m')])
    const publish = (file: string) => publishRoot({ edgeUrl: edge.url, token: edge.token, file })
    expect(await agentFailure(edgeRoot({ edgeUrl: edge.url }))).toMatchObject({
      code: 'not-found',
      message: expect.stringContaining('the edge has no root yet'),
    })

    const one = await firstRoot(r1, m, { now: new Date() })
    expect(await publish(one)).toMatchObject({ created: true, report: { version: 1 } })
    // Reformatted, the same root is the same document: the edge answers "already there".
    await writeFile(one, JSON.stringify(await readRoot(one)))
    expect(await publish(one)).toMatchObject({ created: false })

    const two = join(dir, 'root-2.json')
    await createRoot({
      from: one,
      expiresDays: 30,
      root: { publicKeys: [r1.publicKey, r2.publicKey], threshold: 2 },
      keyFiles: [r1.file, r2.file],
      out: two,
    })
    expect(await publish(two)).toMatchObject({ created: true, report: { version: 2 } })

    const latest = await edgeRoot({ edgeUrl: edge.url })
    expect(latest.document).toEqual(await readRoot(two))
    expect(latest.report).toMatchObject({
      version: 2,
      roles: { root: { keyids: [r1.keyid, r2.keyid], threshold: 2 }, maintainers: { keyids: [m.keyid] } },
      problems: [],
    })
    expect((await edgeRoot({ edgeUrl: edge.url, version: 1 })).document).toEqual(await readRoot(one))
    expect(await agentFailure(edgeRoot({ edgeUrl: edge.url, version: 3 }))).toMatchObject({
      code: 'not-found',
    })
  })

  it('refuses locally, before any upload, a root the edge’s previous root does not vouch for', async () => {
    const [r1, r2, m] = await Promise.all([holder('r1'), holder('r2'), holder('m')])
    const publish = (file: string) => publishRoot({ edgeUrl: edge.url, token: edge.token, file })
    const one = await firstRoot(r1, m, { now: new Date() })

    // No root 1 on the edge yet: root 2 has nothing to follow.
    const two = join(dir, 'root-2.json')
    await createRoot({
      from: one,
      expiresDays: 30,
      root: { publicKeys: [r2.publicKey] },
      keyFiles: [r2.file],
      out: two,
    })
    expect(await agentFailure(publish(two))).toMatchObject({
      code: 'not-found',
      message: 'the edge has no root 1: publish root 1 before root 2',
    })

    // Root 1 short of its own threshold: named from the file, never uploaded.
    const halfOne = join(dir, 'root-1-half.json')
    await createRoot({
      version: 1,
      expiresDays: 30,
      root: { publicKeys: [r1.publicKey, r2.publicKey], threshold: 2 },
      maintainers: { publicKeys: [m.publicKey] },
      keyFiles: [r1.file],
      out: halfOne,
    })
    expect(await agentFailure(publish(halfOne))).toMatchObject({
      code: 'untrusted-root',
      message: `not publishing ${halfOne}: root 1 lacks 2 valid signature(s) by its own root keys`,
    })
    expect(await new EdgeClient(edge.url).latestRoot()).toBeNull()

    await publish(one)
    // Signed by its own new root key only: root 1's key never agreed to the rotation.
    const refused = await agentFailure(publish(two))
    expect(refused).toMatchObject({
      code: 'untrusted-root',
      message: expect.stringMatching(
        /^not publishing .*root 2 lacks 1 valid signature\(s\) by the root keys of root 1$/,
      ),
    })
    expect(await new EdgeClient(edge.url).root(2)).toBeNull()

    // Short of its own threshold: refused from the file alone.
    const half = join(dir, 'root-2-half.json')
    await createRoot({
      from: one,
      expiresDays: 30,
      root: { publicKeys: [r1.publicKey, r2.publicKey], threshold: 2 },
      keyFiles: [r1.file],
      out: half,
    })
    expect(await agentFailure(publish(half))).toMatchObject({
      code: 'untrusted-root',
      message: expect.stringContaining('root 2 lacks 2 valid signature(s) by its own root keys'),
    })
    // What the file alone shows needs no edge at all (port 9, discard: nothing answers there).
    const offline = publishRoot({ edgeUrl: 'http://127.0.0.1:9', token: edge.token, file: half })
    expect(await agentFailure(offline)).toMatchObject({
      code: 'untrusted-root',
      message: `not publishing ${half}: root 2 lacks 2 valid signature(s) by its own root keys`,
    })
    // Expired: no device would take it.
    const stale = join(dir, 'root-2-stale.json')
    await createRoot({
      from: one,
      expiresDays: 1,
      keyFiles: [r1.file],
      out: stale,
      now: new Date(Date.now() - 2 * DAY_MS),
    })
    expect(await agentFailure(publish(stale))).toMatchObject({
      code: 'untrusted-root',
      message: expect.stringContaining('root 2 expired at'),
    })
    expect(await new EdgeClient(edge.url).root(2)).toBeNull()
  })

  it('reports the edge’s refusals: another root 1 already stored, a wrong token', async () => {
    const [r, m] = await Promise.all([holder('r'), holder('m')])
    const one = await firstRoot(r, m, { now: new Date() })
    await publishRoot({ edgeUrl: edge.url, token: edge.token, file: one })
    const other = join(dir, 'other-root-1.json')
    await createRoot({
      version: 1,
      expiresDays: 100,
      root: { publicKeys: [r.publicKey] },
      maintainers: { publicKeys: [m.publicKey] },
      keyFiles: [r.file],
      out: other,
    })
    expect(
      await agentFailure(publishRoot({ edgeUrl: edge.url, token: edge.token, file: other })),
    ).toMatchObject({
      code: 'edge-rejected',
      details: { status: 409 },
    })
    expect(await agentFailure(publishRoot({ edgeUrl: edge.url, token: 'wrong', file: one }))).toMatchObject({
      code: 'edge-rejected',
      details: { status: 401 },
    })
    expect((await edgeRoot({ edgeUrl: edge.url })).document).toEqual(await readRoot(one))
  })

  it('runs from the CLI: create, sign, verify, publish and show, with --json and exit codes', async () => {
    const ws = await makeWorkspace(edge.url)
    const cli = async (args: string[], env: Record<string, string> = {}) => {
      try {
        const { stdout, stderr } = await promisify(execFile)(
          process.execPath,
          [BIN, '--config', ws.configFile, ...args],
          { env: { ...process.env, DELTAPORT_TOKEN: edge.token, ...env } },
        )
        return { code: 0, stdout, stderr }
      } catch (error) {
        const e = error as { code: number; stdout: string; stderr: string }
        return { code: e.code, stdout: e.stdout, stderr: e.stderr }
      }
    }
    const [r1, r2, m] = await Promise.all([holder('r1'), holder('r2'), holder('m')])
    const one = join(dir, 'root-1.json')
    const created = await cli([
      '--json',
      'root',
      'create',
      '--version',
      '1',
      '--expires-days',
      '30',
      '--root-key',
      r1.publicKey,
      '--root-key',
      r2.publicKey,
      '--root-threshold',
      '2',
      '--maintainer-key',
      m.publicKey,
      '--key',
      r1.file,
      '--out',
      one,
    ])
    expect(created.code).toBe(0)
    expect(JSON.parse(created.stdout)).toMatchObject({
      ok: true,
      root: { version: 1, roles: { root: { threshold: 2 } }, problems: [expect.stringContaining('lacks 2')] },
    })

    const unverified = await cli(['--json', 'root', 'verify', one])
    expect(unverified.code).toBe(16)
    expect(JSON.parse(unverified.stdout)).toMatchObject({
      ok: false,
      error: { code: 'untrusted-root', version: 1, problems: [expect.stringContaining('lacks 2')] },
    })
    // Publishing it is refused the same way, before the upload.
    expect((await cli(['root', 'publish', one])).code).toBe(16)

    expect((await cli(['root', 'sign', one, '--key', r2.file])).code).toBe(0)
    const verified = await cli(['root', 'verify', one])
    expect(verified).toMatchObject({ code: 0, stdout: expect.stringContaining('root 1 verifies') })
    // The digest an operator pins at the edge: the statement's, so co-signing did not change it.
    const pin = `MAINTAINER_KEYS=root:${await rootDigest((await readRoot(one)).signed)}`
    expect(verified.stderr).toContain(pin)

    expect((await cli(['root', 'publish', one], { DELTAPORT_TOKEN: '' })).code).toBe(3)
    const published = await cli(['--json', 'root', 'publish', one])
    expect(JSON.parse(published.stdout)).toMatchObject({ ok: true, created: true, root: { version: 1 } })
    expect((await cli(['root', 'publish', one])).stdout).toContain('already on the edge')

    const shown = await cli(['root', 'show'])
    expect(shown.code).toBe(0)
    expect(shown.stdout).toContain('root 1, expires')
    expect(shown.stdout).toContain('root keys, 2 of 2 must sign the next root')
    expect(shown.stdout).toContain(`${r2.keyid}  (signed)`)
    expect(shown.stdout).toContain(pin)
    const json = JSON.parse((await cli(['--json', 'root', 'show', '--version', '1'])).stdout)
    expect(json.document).toEqual(await readRoot(one))
    expect((await cli(['root', 'show', '--version', '2'])).code).toBe(6)

    // Arguments are checked before anything is read or written.
    const bad = await cli([
      'root',
      'create',
      '--version',
      '0',
      '--expires-days',
      '1',
      '--key',
      r1.file,
      '--out',
      one,
    ])
    expect(bad.code).toBe(2)
    expect(
      (
        await cli([
          'root',
          'create',
          '--expires-days',
          '1',
          '--key',
          r1.file,
          '--root-key',
          'AAAA',
          '--out',
          one,
        ])
      ).stderr,
    ).toContain('not a 32-byte Ed25519 public key')
    expect(
      (
        await cli([
          'root',
          'create',
          '--from',
          one,
          '--expires-days',
          '1',
          '--root-threshold',
          '17',
          '--key',
          r1.file,
          '--out',
          join(dir, 'x.json'),
        ])
      ).code,
    ).toBe(2)
  })
})
