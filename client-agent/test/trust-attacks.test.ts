/**
 * The trust chain against someone who controls the network or the edge but holds no maintainer key
 * (TUF's threat model), through a real edge: each attack the adversarial pass of 2026-11-26 found
 * accepted, or answered with something other than a typed refusal, and the ones it checked that show
 * the agent verifies exactly the document it then uses (docs/security.md lists them all).
 */
import { execFile } from 'node:child_process'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import { type AgentConfig, loadConfig } from '../config.ts'
import { fileHasBytes } from '../download.ts'
import { EdgeClient } from '../edge-client.ts'
import { installArtifact, rollbackArtifact } from '../install.ts'
import { publishArtifact } from '../publish.ts'
import { checkRollout, controlRollout } from '../rollout/client.ts'
import { agentClientId } from '../rollout/client-id.ts'
import { generateKeyPair, type KeyPairFiles, signManifest } from '../signing.ts'
import { ArtifactStore } from '../store.ts'
import { setYank } from '../yank.ts'
import { agentFailure, writeArtifact } from './fixtures.ts'
import { TEST_TOKEN, useEdgeWorkspace } from './local-edge.ts'

const edgeKey = await generateKeyPair()
const suite = useEdgeWorkspace({ INDEX_SIGNING_KEY: edgeKey.privateKey })
const DAY_MS = 24 * 3600 * 1000
const BIN = join(import.meta.dirname, '..', 'bin', 'deltaport.ts')
const runCli = promisify(execFile)
const trusting = (...keys: KeyPairFiles[]) => keys.map((k) => ({ keyid: k.keyid, publicKey: k.publicKey }))

function device(store: string, overrides: Partial<AgentConfig> = {}): AgentConfig {
  return { ...suite.ws.config, installRoot: join(suite.ws.dir, store), ...overrides }
}

async function keyFileOf(key: KeyPairFiles): Promise<string> {
  const path = join(suite.ws.dir, `${key.keyid.slice(0, 12)}.key.json`)
  await writeFile(path, JSON.stringify(key))
  return path
}

async function publish(name: string, version: string) {
  const art = await writeArtifact(suite.ws.dir, `${name}-${version}.bin`, 2_000)
  await suite.publish(art.path, name, version)
}

async function publishSignedBy(name: string, version: string, signer: KeyPairFiles) {
  const art = await writeArtifact(suite.ws.dir, `${name}-${version}.bin`, 2_000)
  await publishArtifact({
    edgeUrl: suite.edge.url,
    token: TEST_TOKEN,
    keyFile: await keyFileOf(signer),
    file: art.path,
    name,
    version,
  })
}

/** A fetch that answers requests for `path` with `answer()`; everything else reaches the edge. */
function answering(path: string, answer: (real: Response) => Promise<Response> | Response): typeof fetch {
  return async (input, init) => {
    const url = new URL(input instanceof Request ? input.url : String(input))
    if (url.pathname === path) return answer(await fetch(input, init))
    return fetch(input, init)
  }
}

/**
 * `answer` as JSON text with a field no schema reads, holding `depth` nested arrays: a few hundred
 * kilobytes, well under every size cap. Spelt out as text: JSON.stringify itself overflows the stack.
 */
function padded(answer: object, depth = 100_000): Response {
  const text = JSON.stringify(answer)
  return new Response(`${text.slice(0, -1)},"padding":${'['.repeat(depth)}${']'.repeat(depth)}}`, {
    headers: { 'content-type': 'application/json' },
  })
}

describe('endless data and deep nesting in signed answers', () => {
  it('refuses an index padded with deeply nested JSON as untrusted-index, not a stack overflow', async () => {
    await publish('deep', '1.0.0')
    const served = (await (await fetch(`${suite.edge.url}/v1/artifacts/deep`)).json()) as object
    const config = device('store-deep', { indexKeys: trusting(edgeKey) })
    // The genuine statement replayed beside a field no schema reads, nested 100 000 deep.
    const refused = await agentFailure(
      installArtifact(config, {
        name: 'deep',
        fetchImpl: answering('/v1/artifacts/deep', () => padded(served)),
      }),
    )
    expect(refused.code).toBe('untrusted-index')
    expect(refused.message).toContain('nested deeper than')
  })

  it('refuses a rollout answer that is endless, stalls or nests deeply, each as a typed error', async () => {
    await publish('ra', '1.0.0')
    await controlRollout(new EdgeClient(suite.edge.url), TEST_TOKEN, 'ra', 'stable', 'start', {
      version: '1.0.0',
      stages: [{ percent: 100, durationMs: DAY_MS }],
    })
    const config = device('store-ra', { indexKeys: trusting(edgeKey) })
    const client = await agentClientId(config)
    const trust = { keys: config.indexKeys, now: () => new Date() }
    const ask = (fetchImpl: typeof fetch) =>
      agentFailure(
        checkRollout(
          new EdgeClient(suite.edge.url, fetchImpl, { stallMs: 300 }),
          'ra',
          'stable',
          client,
          trust,
        ),
      )
    const path = '/v1/rollouts/ra/stable'

    // 16 MiB of whitespace: an answer of a few hundred bytes must not be buffered that far.
    const huge = await ask(answering(path, () => new Response(new Uint8Array(16 * 1024 * 1024).fill(0x20))))
    expect(huge.message).toContain('more than')
    // A first byte, then silence: the stall timer ends it instead of a hang.
    const stalled = await ask(
      answering(
        path,
        () =>
          new Response(
            new ReadableStream({
              start(controller) {
                controller.enqueue(new TextEncoder().encode('{'))
              },
            }),
          ),
      ),
    )
    expect(stalled.code).toBe('network')
    // The genuine answer and statement, padded with nesting no schema reads.
    const nested = await ask(answering(path, async (real) => padded((await real.json()) as object)))
    expect(nested.code).toBe('untrusted-index')
    expect(nested.message).toContain('nested deeper than')
  })
})

describe('threshold counting', () => {
  it('counts one key once, even when a config lists it under two keyids', async () => {
    const stolen = await generateKeyPair()
    const other = await generateKeyPair()
    await publishSignedBy('twice', '1.0.0', stolen)
    // The owner meant "stolen and other, both must sign" but pasted stolen's public half twice.
    const config = device('store-twice', {
      trustedKeys: [
        { keyid: stolen.keyid, publicKey: stolen.publicKey },
        { keyid: other.keyid, publicKey: stolen.publicKey },
      ],
      maintainerThreshold: 2,
    })
    // The thief signs once with the key under each of the two ids.
    const forged = answering('/v1/artifacts/twice/1.0.0/manifest', async (real) => {
      const { signed } = (await real.json()) as { signed: Parameters<typeof signManifest>[0] }
      return Response.json(await signManifest(signed, [stolen, { ...stolen, keyid: other.keyid }]))
    })
    const refused = await agentFailure(installArtifact(config, { name: 'twice', fetchImpl: forged }))
    expect(refused.code).toBe('untrusted-manifest')
    expect(refused.message).toContain('fewer than 2 valid signatures by distinct trusted keys')
  })

  it('refuses a config that files a key under a keyid that is not its sha256, naming it', async () => {
    const [mine, theirs] = [await generateKeyPair(), await generateKeyPair()]
    const path = join(suite.ws.dir, 'mislabelled.json')
    const entry = { keyid: theirs.keyid, publicKey: mine.publicKey }
    for (const keys of [{ trustedKeys: [entry] }, { indexKeys: [entry] }]) {
      await writeFile(path, JSON.stringify({ ...suite.ws.config, ...keys }))
      const refused = await agentFailure(loadConfig(path))
      expect(refused.code).toBe('config')
      expect(refused.message).toMatch(
        /(trustedKeys|indexKeys)\.0\.keyid: keyid is not the sha256 of publicKey/,
      )
    }
  })
})

describe('a signed yank after a key rotation', () => {
  it('never moves a device back to a version only a revoked key signed', async () => {
    const revoked = suite.ws.key
    const successor = await generateKeyPair()
    await publishSignedBy('rotated', '1.0.0', revoked)
    const before = device('store-rotated', { trustedKeys: trusting(revoked) })
    await installArtifact(before, { name: 'rotated' })
    // The maintainers rotate the stolen key out (here by config; a root does the same, ADR 0035).
    const after = { ...before, trustedKeys: trusting(successor) }
    await publishSignedBy('rotated', '1.1.0', successor)
    expect(await installArtifact(after, { name: 'rotated' })).toMatchObject({
      version: '1.1.0',
      previous: '1.0.0',
    })

    // 1.1.0 is yanked by the successor's signature; the channel falls back to 1.0.0.
    await setYank({
      edgeUrl: suite.edge.url,
      token: TEST_TOKEN,
      name: 'rotated',
      version: '1.1.0',
      reason: 'breaks on start',
      keyFile: await keyFileOf(successor),
    })
    // 1.0.0 is on disk, but only the revoked key vouches for it: the device must not run it again.
    const refused = await agentFailure(installArtifact(after, { name: 'rotated' }))
    expect(refused.code).toBe('untrusted-manifest')
    expect(refused.message).toContain('rotated@1.0.0: no valid signature by a trusted key')
    // The refusal names the signer the device no longer trusts, as rollback's does.
    expect(refused.message).toContain(`it is signed by ${revoked.keyid}, which this device does not trust`)
    expect((await new ArtifactStore(after.installRoot, 'rotated').state()).current).toBe('1.1.0')
  })

  it('nor back to a version whose bytes on disk are no longer the signed ones', async () => {
    await publish('rotten', '1.0.0')
    await publish('rotten', '1.1.0')
    const config = device('store-rotten')
    await installArtifact(config, { name: 'rotten', target: '1.0.0' })
    await installArtifact(config, { name: 'rotten' })
    const store = new ArtifactStore(config.installRoot, 'rotten')
    // The copy of 1.0.0 kept for rollback rots (or is tampered with) while 1.1.0 runs.
    await writeFile(store.blobPath('1.0.0'), 'not the signed bytes')
    await setYank({
      edgeUrl: suite.edge.url,
      token: TEST_TOKEN,
      name: 'rotten',
      version: '1.1.0',
      reason: 'drops writes',
      keyFile: suite.ws.keyFile,
    })
    // The retreat downloads 1.0.0 again instead of switching to what is on disk.
    const moved = await installArtifact(config, { name: 'rotten' })
    expect(moved).toMatchObject({ version: '1.0.0', retreated: { from: '1.1.0' } })
    expect(moved.bytesDownloaded).toBeGreaterThan(0)
    expect(await fileHasBytes(store.blobPath('1.0.0'), (await store.manifestOf('1.0.0')).signed)).toBe(true)
  })

  it('and downloads it again when its manifest on disk is damaged, instead of failing the update', async () => {
    await publish('damaged', '1.0.0')
    await publish('damaged', '1.1.0')
    const config = device('store-damaged')
    await installArtifact(config, { name: 'damaged', target: '1.0.0' })
    await installArtifact(config, { name: 'damaged' })
    const store = new ArtifactStore(config.installRoot, 'damaged')
    await writeFile(join(store.blobPath('1.0.0'), '..', 'manifest.json'), '{"signed": ')
    await setYank({
      edgeUrl: suite.edge.url,
      token: TEST_TOKEN,
      name: 'damaged',
      version: '1.1.0',
      reason: 'drops writes',
      keyFile: suite.ws.keyFile,
    })
    const moved = await installArtifact(config, { name: 'damaged' })
    expect(moved).toMatchObject({ version: '1.0.0', retreated: { from: '1.1.0' } })
    // What it runs now has a readable manifest again: later updates and rollbacks can use it.
    expect((await store.manifestOf('1.0.0')).signed.version).toBe('1.0.0')
    expect(await installArtifact(config, { name: 'damaged' })).toMatchObject({ alreadyCurrent: true })
  })
})

describe('a signed yank steered by an unsigned index', () => {
  it('never retreats to a version the channel was not signed for, nor below the version the device ran before', async () => {
    await publish('steered', '0.9.0')
    await publish('steered', '1.0.0')
    const beta = await writeArtifact(suite.ws.dir, 'steered-1.1.0.bin', 2_000)
    await publishArtifact({
      edgeUrl: suite.edge.url,
      token: TEST_TOKEN,
      keyFile: suite.ws.keyFile,
      file: beta.path,
      name: 'steered',
      version: '1.1.0',
      channels: ['beta'],
    })
    await publish('steered', '1.2.0')
    const config = device('store-steered')
    await installArtifact(config, { name: 'steered', target: '1.0.0' })
    await installArtifact(config, { name: 'steered' })
    // A genuine, signed yank of the running 1.2.0; the edge's stable head falls back to 1.0.0.
    await setYank({
      edgeUrl: suite.edge.url,
      token: TEST_TOKEN,
      name: 'steered',
      version: '1.2.0',
      reason: 'drops writes',
      keyFile: suite.ws.keyFile,
    })
    // Whatever answers for the edge points stable at 1.1.0 instead: newer than what the device ran
    // before, older than the yanked one, validly signed, but for beta only.
    const steering = answering('/v1/artifacts/steered', async (real) => {
      const index = (await real.json()) as { channels: Record<string, string> }
      return Response.json({ ...index, channels: { ...index.channels, stable: '1.1.0' } })
    })
    const refused = await agentFailure(installArtifact(config, { name: 'steered', fetchImpl: steering }))
    expect(refused.code).toBe('untrusted-manifest')
    expect(refused.message).toContain('steered@1.1.0 was not signed for channel "stable"')
    expect((await new ArtifactStore(config.installRoot, 'steered').state()).current).toBe('1.2.0')
    // Pointed at 0.9.0, signed for stable but older than anything this device ran: it goes back no
    // further than 1.0.0, the version it ran before (ADR 0025).
    const below = answering('/v1/artifacts/steered', async (real) => {
      const index = (await real.json()) as { channels: Record<string, string> }
      return Response.json({ ...index, channels: { ...index.channels, stable: '0.9.0' } })
    })
    expect(await installArtifact(config, { name: 'steered', fetchImpl: below })).toMatchObject({
      version: '1.0.0',
      retreated: { from: '1.2.0' },
    })
  })

  it('says so when the head it retreats to came from an index this device cannot verify, and with indexKeys takes only a verified one', async () => {
    for (const version of ['1.0.0', '1.1.0', '1.2.0', '1.3.0']) await publish('chosen', version)
    // 1.1.0 turned out bad too (an unsigned yank, shown only in the index).
    await setYank({
      edgeUrl: suite.edge.url,
      token: TEST_TOKEN,
      name: 'chosen',
      version: '1.1.0',
      reason: 'leaks handles',
    })
    const unsigned = device('store-chosen-unsigned')
    const pinned = device('store-chosen-pinned', { indexKeys: trusting(edgeKey) })
    for (const config of [unsigned, pinned]) {
      await installArtifact(config, { name: 'chosen', target: '1.0.0' })
      await installArtifact(config, { name: 'chosen' })
    }
    await setYank({
      edgeUrl: suite.edge.url,
      token: TEST_TOKEN,
      name: 'chosen',
      version: '1.3.0',
      reason: 'drops writes',
      keyFile: suite.ws.keyFile,
    })
    // The honest head is 1.2.0; whatever answers for the edge names 1.1.0 and hides its yank.
    const hiding = answering('/v1/artifacts/chosen', async (real) => {
      const index = (await real.json()) as {
        channels: Record<string, string>
        versions: Array<{ version: string; yanked?: unknown }>
      }
      return Response.json({
        ...index,
        channels: { ...index.channels, stable: '1.1.0' },
        versions: index.versions.map(({ yanked, ...entry }) =>
          entry.version === '1.1.0' ? entry : { ...entry, yanked },
        ),
      })
    })
    // Without indexKeys nothing signed tells 1.1.0 from 1.2.0 (both signed for stable, both newer than
    // 1.0.0): the device moves, and the result says the destination is the unsigned index's choice.
    const steered = await installArtifact(unsigned, { name: 'chosen', fetchImpl: hiding })
    expect(steered).toMatchObject({ version: '1.1.0', retreated: { from: '1.3.0', unverifiedHead: true } })
    // With indexKeys the same answer is refused, and the verified head is where it goes, unflagged.
    const refused = await agentFailure(installArtifact(pinned, { name: 'chosen', fetchImpl: hiding }))
    expect(refused.code).toBe('untrusted-index')
    expect((await new ArtifactStore(pinned.installRoot, 'chosen').state()).current).toBe('1.3.0')
    const verified = await installArtifact(pinned, { name: 'chosen' })
    expect(verified).toMatchObject({ version: '1.2.0', retreated: { from: '1.3.0' } })
    expect(verified.retreated?.unverifiedHead).toBeUndefined()
    // The CLI warns in words, naming indexKeys.
    const cliDevice = device('store-chosen-cli')
    await installArtifact(cliDevice, { name: 'chosen', target: '1.0.0' })
    await installArtifact(cliDevice, { name: 'chosen', target: '1.3.0', allowYanked: true })
    const configFile = join(suite.ws.dir, 'chosen-cli.json')
    await writeFile(configFile, JSON.stringify(cliDevice))
    const { stderr } = await runCli(process.execPath, [BIN, '--config', configFile, 'update', 'chosen'])
    expect(stderr).toContain(
      "warning: 1.2.0 is where the channel's head points, and the index naming it is not signed for this device (no indexKeys)",
    )
    expect(stderr).toContain("Pin the edge's index key (indexKeys, or an index role in the root)")
  })
})

describe('deltaport rollback after a key rotation', () => {
  it('refuses a previous version only a revoked key signed, naming the key, and re-hashes it even when told to switch', async () => {
    const revoked = await generateKeyPair()
    const successor = await generateKeyPair()
    await publishSignedBy('rolled-revoked', '1.0.0', revoked)
    const before = device('store-rolled-revoked', { trustedKeys: trusting(revoked) })
    await installArtifact(before, { name: 'rolled-revoked' })
    // The key is rotated out of the config (a root does the same, root-trust.test.ts).
    const after = { ...before, trustedKeys: trusting(successor) }
    await publishSignedBy('rolled-revoked', '1.1.0', successor)
    await installArtifact(after, { name: 'rolled-revoked' })
    const store = new ArtifactStore(after.installRoot, 'rolled-revoked')

    const refused = await agentFailure(rollbackArtifact(after, 'rolled-revoked'))
    expect(refused.code).toBe('untrusted-manifest')
    expect(refused.message).toContain(
      `rolled-revoked@1.0.0 on disk has no valid signature by a trusted key now; it is signed by ${revoked.keyid}, no longer trusted`,
    )
    expect(refused.details).toMatchObject({ version: '1.0.0', revokedKeys: [revoked.keyid] })
    expect((await store.state()).current).toBe('1.1.0')

    // --allow-revoked lifts the key check only: a copy whose bytes changed is still refused.
    const signedBytes = await readFile(store.blobPath('1.0.0'))
    await writeFile(store.blobPath('1.0.0'), 'not the signed bytes')
    const rotten = await agentFailure(rollbackArtifact(after, 'rolled-revoked', { allowRevoked: true }))
    expect(rotten.code).toBe('integrity-mismatch')
    expect((await store.state()).current).toBe('1.1.0')
    await writeFile(store.blobPath('1.0.0'), signedBytes)
    expect(await rollbackArtifact(after, 'rolled-revoked', { allowRevoked: true })).toMatchObject({
      from: '1.1.0',
      to: '1.0.0',
    })
    // Back to a version the keys trusted now signed takes no flag.
    expect(await rollbackArtifact(after, 'rolled-revoked')).toMatchObject({ to: '1.1.0' })
  })
})

describe('the bytes verified are the bytes used', () => {
  it('takes a manifest re-spelt in transit (escapes, exponents, a repeated key) only when it means what was signed', async () => {
    await publish('spelt', '1.0.0')
    const path = '/v1/artifacts/spelt/1.0.0/manifest'
    const respelt = (change: (text: string) => string) =>
      answering(path, async (real) => new Response(change(await real.text()), { status: real.status }))
    // Same meaning, other bytes: a repeated key whose first value JSON.parse drops, \u escapes, 2e0
    // for 2. The signature covers the document as parsed, which is the one the agent then uses.
    const sameMeaning = respelt((text) =>
      text
        .replace('"name":"spelt"', '"name":"evil","name":"\\u0073pelt"')
        .replace(/"serial":(\d+)/, (_, n: string) => `"serial":${n}e0`),
    )
    expect(
      await installArtifact(device('store-spelt'), {
        name: 'spelt',
        target: '1.0.0',
        fetchImpl: sameMeaning,
      }),
    ).toMatchObject({ version: '1.0.0' })
    // A repeated key whose last value (the one JSON.parse keeps) differs from the signed one: refused.
    const otherMeaning = respelt((text) =>
      text.replace(/"serial":(\d+)/, (_, n: string) => `"serial":${n},"serial":${Number(n) + 1}`),
    )
    const refused = await agentFailure(
      installArtifact(device('store-spelt-2'), { name: 'spelt', target: '1.0.0', fetchImpl: otherMeaning }),
    )
    expect(refused.code).toBe('untrusted-manifest')
  })

  it('refuses what was signed for another artifact: its index statement, its manifest (name confusion)', async () => {
    await publish('alpha', '1.0.0')
    await publish('bravo', '1.0.0')
    const config = device('store-names', { indexKeys: trusting(edgeKey) })
    const alphaIndex = (await (await fetch(`${suite.edge.url}/v1/artifacts/alpha`)).json()) as object
    const index = await agentFailure(
      installArtifact(config, {
        name: 'bravo',
        fetchImpl: answering('/v1/artifacts/bravo', () => Response.json(alphaIndex)),
      }),
    )
    expect(index).toMatchObject({ code: 'untrusted-index' })
    expect(index.message).toContain('carries a statement about alpha')
    const alphaManifest = await (await fetch(`${suite.edge.url}/v1/artifacts/alpha/1.0.0/manifest`)).json()
    const manifest = await agentFailure(
      installArtifact(config, {
        name: 'bravo',
        fetchImpl: answering('/v1/artifacts/bravo/1.0.0/manifest', () => Response.json(alphaManifest)),
      }),
    )
    expect(manifest).toMatchObject({ code: 'untrusted-manifest' })
    expect(manifest.message).toContain('asked for bravo@1.0.0 but the manifest describes alpha@1.0.0')
  })
})
