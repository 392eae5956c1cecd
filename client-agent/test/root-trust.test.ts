/**
 * Keys under root metadata end to end (ADR 0035): a device ships with root 1 and a config that names
 * no keys; maintainers rotate, revoke and raise thresholds by publishing roots to the real local edge,
 * and the device follows, without its config changing, and refuses what the newest root does not allow.
 */
import { execFile } from 'node:child_process'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import type { SignedRoot } from '../../schemas/root.ts'
import { type AgentConfig, loadConfig } from '../config.ts'
import { runDaemonCycle } from '../daemon/daemon.ts'
import { EdgeClient, rootPath } from '../edge-client.ts'
import { installArtifact, rollbackArtifact } from '../install.ts'
import { MAX_ROOT_STEPS, refreshRootTrust, trustedRootPath } from '../root-trust.ts'
import { generateKeyPair, type KeyPairFiles, signDocumentByAll } from '../signing.ts'
import { ArtifactStore } from '../store.ts'
import { EdgeChannelSource } from '../swap/edge-source.ts'
import { agentFailure, cliFailure } from './fixtures.ts'
import { TEST_TOKEN, useEdgeWorkspace } from './local-edge.ts'
import { keyFileIn, publishSignedByAll, rootBody, putRoot as storeRoot } from './roots.ts'

const suite = useEdgeWorkspace()
const BIN = join(import.meta.dirname, '..', 'bin', 'deltaport.ts')
const DAY_MS = 86_400_000

const [rootKey, nextRootKey, maintainerA, maintainerB, maintainerC] = await Promise.all([
  generateKeyPair(),
  generateKeyPair(),
  generateKeyPair(),
  generateKeyPair(),
  generateKeyPair(),
])

async function putRoot(root: SignedRoot): Promise<void> {
  await storeRoot(suite.edge.url, root)
}

function keyFile(key: KeyPairFiles): Promise<string> {
  return keyFileIn(suite.ws.dir, key)
}

/** Publishes `name@version` signed by each of `signers`. */
function publishSigned(name: string, version: string, signers: KeyPairFiles[]): Promise<void> {
  return publishSignedByAll(suite.edge.url, suite.ws.dir, { name, version }, signers)
}

/** A device that ships root 1 (written beside its store) and names no keys itself. */
async function device(store: string, shipped: SignedRoot): Promise<AgentConfig> {
  const path = join(suite.ws.dir, `${store}-root.json`)
  await writeFile(path, JSON.stringify(shipped))
  return { ...suite.ws.config, installRoot: join(suite.ws.dir, store), trustedKeys: [], root: path }
}

/** Answers for the edge with no roots: what a device sees of an edge that stopped serving the chain. */
const hidingRoots: typeof fetch = async (input, init) =>
  String(input).includes('/v1/roots/') ? new Response('{}', { status: 404 }) : fetch(input, init)

async function currentOf(config: AgentConfig, name: string): Promise<string | null> {
  return (await new ArtifactStore(config.installRoot, name).state()).current
}

describe('a device under root metadata', () => {
  // One chain on the suite's edge, grown test by test: root 1 (maintainer A), root 2 (A revoked, B),
  // root 3 (root key rotated; B and C, both needed).
  const root1 = () =>
    signDocumentByAll(rootBody(1, { root: [rootKey], maintainers: [maintainerA] }), [rootKey])

  it('takes its maintainer keys from the root it ships with', async () => {
    await putRoot(await root1())
    await publishSigned('fw', '1.0.0', [maintainerA])
    const config = await device('store-a', await root1())
    expect((await installArtifact(config, { name: 'fw', target: '1.0.0' })).version).toBe('1.0.0')
  })

  it('follows a rotation: the revoked key’s releases are refused, the new key’s installed', async () => {
    const config = await device('store-b', await root1())
    await installArtifact(config, { name: 'fw', target: '1.0.0' })
    await putRoot(
      await signDocumentByAll(rootBody(2, { root: [rootKey], maintainers: [maintainerB] }), [rootKey]),
    )

    await publishSigned('fw', '1.1.0', [maintainerA])
    const revoked = await agentFailure(installArtifact(config, { name: 'fw', target: '1.1.0' }))
    expect(revoked.code).toBe('untrusted-manifest')
    expect(await currentOf(config, 'fw')).toBe('1.0.0')

    await publishSigned('fw', '1.2.0', [maintainerB])
    expect((await installArtifact(config, { name: 'fw', target: '1.2.0' })).version).toBe('1.2.0')
    // The root it followed is kept: the next refresh starts there, not from the shipped root.
    const kept = JSON.parse(await readFile(trustedRootPath(config.installRoot), 'utf8')) as {
      root: SignedRoot
    }
    expect(kept.root.signed.version).toBe(2)
  })

  it('holds a raised threshold and a rotated root key', async () => {
    const body = rootBody(3, { root: [nextRootKey], maintainers: [maintainerB, maintainerC], threshold: 2 })
    await putRoot(await signDocumentByAll(body, [rootKey, nextRootKey]))
    const config = await device('store-c', await root1())

    await publishSigned('fw', '1.3.0', [maintainerB])
    const alone = await agentFailure(installArtifact(config, { name: 'fw', target: '1.3.0' }))
    expect(alone.code).toBe('untrusted-manifest')
    expect(alone.message).toMatch(/fewer than 2 valid signatures/)

    await publishSigned('fw', '1.4.0', [maintainerB, maintainerC])
    expect((await installArtifact(config, { name: 'fw', target: '1.4.0' })).version).toBe('1.4.0')
    const refreshed = await refreshRootTrust(config)
    expect(refreshed.root?.version).toBe(3)
    expect(refreshed.config.maintainerThreshold).toBe(2)
  })

  it("moves `deltaport run`'s service to the head only the newest root's keys signed", async () => {
    const config = await device('store-run', await root1())
    await installArtifact(config, { name: 'fw', target: '1.0.0', fetchImpl: hidingRoots })
    // The head (1.4.0) carries maintainers B and C: only root 3 makes it trusted.
    const update = await new EdgeChannelSource(config, 'fw').next('1.0.0', new Set())
    expect(update?.version).toBe('1.4.0')
  })

  it('stages in a daemon cycle the head only the newest root makes trusted', async () => {
    const config = await device('store-daemon', await root1())
    await installArtifact(config, { name: 'fw', target: '1.0.0', fetchImpl: hidingRoots })
    const cycle = await runDaemonCycle(config, { loadSampler: () => 0 })
    expect(cycle.failures).toEqual([])
    expect(cycle.staged.map((item) => `${item.name}@${item.version}`)).toContain('fw@1.4.0')
    expect((await refreshRootTrust(config, { fetchImpl: hidingRoots })).root?.version).toBe(3)
  })

  it('keeps the newest root it verified when the edge stops serving the chain', async () => {
    const config = await device('store-d', await root1())
    expect((await refreshRootTrust(config)).followed).toEqual([2, 3])
    // An edge (or whatever answers for it) that forgets roots cannot take the device back to root 1.
    const offline = await refreshRootTrust(config, { fetchImpl: hidingRoots })
    expect(offline.root?.version).toBe(3)
    expect(offline.config.trustedKeys.map((k) => k.keyid).sort()).toEqual(
      [maintainerB.keyid, maintainerC.keyid].sort(),
    )
  })

  it('follows the root it ships with now, not one kept from the chain its old shipped root began', async () => {
    const config = await device('store-reprovisioned', await root1())
    expect((await refreshRootTrust(config)).root?.version).toBe(3)
    // The owner moves the device to a new chain (the old root keys were stolen, or another deployment):
    // a new root 1 in the config, the install root left as it is.
    const newRootKey = await generateKeyPair()
    const fresh = await signDocumentByAll(rootBody(1, { root: [newRootKey], maintainers: [maintainerA] }), [
      newRootKey,
    ])
    const freshPath = join(suite.ws.dir, 'store-reprovisioned-new-root.json')
    await writeFile(freshPath, JSON.stringify(fresh))
    const moved = { ...config, root: freshPath }
    const offline = await refreshRootTrust(moved, { fetchImpl: hidingRoots })
    expect(offline.root?.version).toBe(1)
    expect(offline.config.trustedKeys.map((k) => k.keyid)).toEqual([maintainerA.keyid])
    // An edge still serving the old chain serves nothing that follows the new root 1.
    const stale = await agentFailure(refreshRootTrust(moved))
    expect(stale.code).toBe('untrusted-root')
    expect(stale.message).toMatch(/root 2 lacks 1 valid signature\(s\) by the root keys of root 1/)
    // Back on the old chain, the root kept from it counts again: root 3 without asking the edge.
    expect((await refreshRootTrust(config, { fetchImpl: hidingRoots })).root?.version).toBe(3)
  })

  describe('a kept root written by an agent from before the shipped root was recorded', () => {
    /** The kept root in the form agents before 2026-11-26 wrote it: `JSON.stringify(root)`, no origin. */
    async function keptByOldAgent(config: AgentConfig): Promise<string> {
      const keptPath = trustedRootPath(config.installRoot)
      expect((await refreshRootTrust(config)).root?.version).toBe(3)
      const { root } = JSON.parse(await readFile(keptPath, 'utf8')) as { root: SignedRoot }
      await writeFile(keptPath, JSON.stringify(root))
      return keptPath
    }

    /** An edge (or a man in the middle) serving `roots` as its whole chain. */
    const serving =
      (roots: SignedRoot[]): typeof fetch =>
      async (input, init) => {
        const path = new URL(String(input)).pathname
        if (!path.startsWith('/v1/roots/')) return fetch(input, init)
        const root = roots.find((r) => path === rootPath(r.signed.version))
        return root ? Response.json(root) : new Response('{}', { status: 404 })
      }

    it('is trusted once the chain walked from the shipped root reaches it, and then kept with its origin', async () => {
      const config = await device('store-legacy-same', await root1())
      const keptPath = await keptByOldAgent(config)
      // An edge withholding roots 2 and 3: the device cannot tell root 3 is its chain's, and trusts neither.
      const withheld = await agentFailure(refreshRootTrust(config, { fetchImpl: hidingRoots }))
      expect(withheld.code).toBe('untrusted-root')
      expect(withheld.message).toContain(
        `${keptPath} holds root 3, kept by an agent from before 2026-11-26 that did not record which shipped root its chain began from, and the edge serves the chain of the shipped root only up to root 1`,
      )
      expect(JSON.parse(await readFile(keptPath, 'utf8'))).not.toHaveProperty('shippedDigest')
      // The edge serving the chain: root 3 walked from root 1 is the kept one, recorded with its origin.
      expect(await refreshRootTrust(config)).toMatchObject({ root: { version: 3 }, followed: [2, 3] })
      expect(JSON.parse(await readFile(keptPath, 'utf8'))).toHaveProperty('shippedDigest')
      expect((await refreshRootTrust(config, { fetchImpl: hidingRoots })).root?.version).toBe(3)
    })

    it('from another chain is not followed when the device ships a new root 1', async () => {
      const config = await device('store-legacy-moved', await root1())
      const keptPath = await keptByOldAgent(config)
      // The old chain's root keys were stolen; the owner re-provisions with a new root 1 (chain Y).
      const newRootKey = await generateKeyPair()
      const chainY = await Promise.all(
        [1, 2, 3].map((version) =>
          signDocumentByAll(
            rootBody(version, {
              root: [newRootKey],
              maintainers: [version === 1 ? maintainerA : maintainerC],
            }),
            [newRootKey],
          ),
        ),
      )
      const shippedY = join(suite.ws.dir, 'store-legacy-moved-new-root.json')
      await writeFile(shippedY, JSON.stringify(chainY[0]))
      const moved = { ...config, root: shippedY }
      // The old agent's file cannot say which chain it is from: with chain Y withheld, nothing is trusted.
      const unknown = await agentFailure(refreshRootTrust(moved, { fetchImpl: hidingRoots }))
      expect(unknown.code).toBe('untrusted-root')
      expect(unknown.message).toContain(
        `If this device was moved to a new root on purpose, delete ${keptPath}`,
      )
      // Chain Y served: its root 3 is not the kept root 3, so chain Y is followed and kept.
      const followed = await refreshRootTrust(moved, { fetchImpl: serving(chainY) })
      expect(followed.root?.version).toBe(3)
      expect(followed.config.trustedKeys.map((k) => k.keyid)).toEqual([maintainerC.keyid])
      const kept = JSON.parse(await readFile(keptPath, 'utf8')) as { root: SignedRoot }
      expect(kept.root.signed.roles.root.keyids).toEqual([newRootKey.keyid])
    })
  })

  it('refuses a next root that its current root keys did not sign, and installs nothing', async () => {
    const config = await device('store-e', await root1())
    // Installed under root 1, while the chain was out of its reach.
    await installArtifact(config, { name: 'fw', target: '1.0.0', fetchImpl: hidingRoots })
    const intruder = await generateKeyPair()
    const forged = await signDocumentByAll(rootBody(2, { root: [intruder], maintainers: [intruder] }), [
      intruder,
    ])
    // Whatever sits between the device and the edge answers root 2 with its own keys.
    const forging: typeof fetch = async (input, init) =>
      String(input).endsWith(rootPath(2)) ? Response.json(forged) : fetch(input, init)
    const refused = await agentFailure(
      installArtifact(config, { name: 'fw', target: '1.2.0', fetchImpl: forging }),
    )
    expect(refused.code).toBe('untrusted-root')
    expect(refused.message).toMatch(/root keys of root 1/)
    expect(await currentOf(config, 'fw')).toBe('1.0.0')
  })

  it('stops trusting keys once the newest root it can reach has expired (freeze)', async () => {
    const stale = await signDocumentByAll(
      rootBody(1, { root: [rootKey], maintainers: [maintainerA] }, new Date(Date.now() + DAY_MS)),
      [rootKey],
    )
    const config = await device('store-f', stale)
    const later = new Date(Date.now() + 2 * DAY_MS)
    const frozen = await agentFailure(refreshRootTrust(config, { fetchImpl: hidingRoots, now: later }))
    expect(frozen.code).toBe('untrusted-root')
    expect(frozen.message).toMatch(/root 1 expired/)
  })

  it('says an expired root was where one refresh stops (the step limit), not that the edge has no newer one', async () => {
    // A chain of its own, served by a stand-in for the edge: roots 1…66, all but the last expired by
    // `later`. One refresh follows at most MAX_ROOT_STEPS (64) roots: 2…65, and root 65 has expired.
    const chainKey = await generateKeyPair()
    const soon = new Date(Date.now() + DAY_MS)
    const chain = await Promise.all(
      Array.from({ length: MAX_ROOT_STEPS + 2 }, (_, i) =>
        signDocumentByAll(
          rootBody(
            i + 1,
            { root: [chainKey], maintainers: [maintainerA] },
            i === MAX_ROOT_STEPS + 1 ? new Date(Date.now() + 365 * DAY_MS) : soon,
          ),
          [chainKey],
        ),
      ),
    )
    const servingChain: typeof fetch = async (input, init) => {
      const match = /\/v1\/roots\/(\d+)$/.exec(String(input))
      if (!match) return fetch(input, init)
      const root = chain[Number(match[1]) - 1]
      return root ? Response.json(root) : new Response('{}', { status: 404 })
    }
    const config = await device('store-far-behind', chain[0] as SignedRoot)
    const later = new Date(Date.now() + 2 * DAY_MS)
    const stopped = await agentFailure(refreshRootTrust(config, { fetchImpl: servingChain, now: later }))
    expect(stopped.code).toBe('untrusted-root')
    expect(stopped.message).toContain(`root ${MAX_ROOT_STEPS + 1} expired at ${soon.toISOString()}`)
    expect(stopped.message).not.toContain('serves no newer root')
    expect(stopped.message).toContain(`followed ${MAX_ROOT_STEPS} roots`)
    // The roots followed were kept: the next refresh goes on from root 65 to root 66, which holds.
    const next = await refreshRootTrust(config, { fetchImpl: servingChain, now: later })
    expect(next.root?.version).toBe(MAX_ROOT_STEPS + 2)
    expect(next.followed).toEqual([MAX_ROOT_STEPS + 2])
  })

  /** A config file for the CLI that names only root 1 (shipped beside it) and a store of its own. */
  async function cliConfigWithRoot(name: string, installRoot: string): Promise<string> {
    const configFile = join(suite.ws.dir, `${name}.json`)
    await writeFile(join(suite.ws.dir, `${name}-root1.json`), JSON.stringify(await root1()))
    await writeFile(
      configFile,
      JSON.stringify({ edgeUrl: suite.edge.url, root: `${name}-root1.json`, installRoot }),
    )
    return configFile
  }

  it('updates through the CLI with a config that names only its root', async () => {
    const configFile = await cliConfigWithRoot('root-device', 'store-cli')
    const run = promisify(execFile)
    const { stdout } = await run(process.execPath, [
      BIN,
      '--config',
      configFile,
      '--json',
      'install',
      'fw@1.4.0',
    ])
    expect(stdout).toContain('"version":"1.4.0"')
    const failed = await cliFailure(
      run(process.execPath, [BIN, '--config', configFile, '--json', 'install', 'fw@1.3.0']),
    )
    expect(failed?.code).toBe(7)
    expect(failed?.stdout).toContain('fewer than 2 valid signatures')
  })

  it('refuses to roll back to a release only a key revoked by a newer root signed, unless told to', async () => {
    const config = await device('store-rollback-revoked', await root1())
    // 1.0.0 (maintainer A) installed under root 1, then 1.4.0 (B and C) once root 3 revoked A.
    await installArtifact(config, { name: 'fw', target: '1.0.0', fetchImpl: hidingRoots })
    await installArtifact(config, { name: 'fw', target: '1.4.0' })
    const configFile = join(suite.ws.dir, 'rollback-revoked.json')
    await writeFile(
      configFile,
      JSON.stringify({ edgeUrl: suite.edge.url, root: config.root, installRoot: config.installRoot }),
    )
    const run = promisify(execFile)
    const refused = await cliFailure(
      run(process.execPath, [BIN, '--config', configFile, '--json', 'rollback', 'fw']),
    )
    expect(refused?.code).toBe(7)
    expect(refused?.stdout).toContain('"code":"untrusted-manifest"')
    expect(refused?.stdout).toContain(`signed by ${maintainerA.keyid}, no longer trusted`)
    expect(refused?.stdout).toContain('--allow-revoked')
    expect(await currentOf(config, 'fw')).toBe('1.4.0')
    // Checked from disk: with root 3 kept in the old form (not yet confirmed by a walk from root 1), its
    // revocation still counts, beside root 1.
    const keptPath = trustedRootPath(config.installRoot)
    const { root: bare } = JSON.parse(await readFile(keptPath, 'utf8')) as { root: SignedRoot }
    await writeFile(keptPath, JSON.stringify(bare))
    expect((await agentFailure(rollbackArtifact(config, 'fw'))).code).toBe('untrusted-manifest')
    expect(await currentOf(config, 'fw')).toBe('1.4.0')
    // The owner's explicit word switches, as rollback always did.
    await run(process.execPath, [BIN, '--config', configFile, 'rollback', 'fw', '--allow-revoked'])
    expect(await currentOf(config, 'fw')).toBe('1.0.0')
  })

  it('re-signs under the root as devices verify: its threshold on what is served, and never with fewer keys', async () => {
    const dir = suite.ws.dir
    const configFile = await cliConfigWithRoot('root-maintainer', 'store-maint')
    const [keyB, keyC] = await Promise.all([keyFile(maintainerB), keyFile(maintainerC)])
    const run = promisify(execFile)
    const resign = (spec: string, keys: string[]) =>
      run(
        process.execPath,
        [BIN, '--config', configFile, '--json', 'resign', spec, ...keys.flatMap((k) => ['--key', k])],
        { env: { ...process.env, DELTAPORT_TOKEN: TEST_TOKEN } },
      )
    const served = (version: string) => new EdgeClient(suite.edge.url).manifest('fw', version)
    const before = await served('1.4.0')

    // Root 3 needs B and C: one key would replace two good signatures by one no device accepts.
    const oneKey = await cliFailure(resign('fw@1.4.0', [keyB]))
    expect(oneKey?.code).toBe(3)
    expect(oneKey?.stdout).toContain(
      'devices need 2 signatures by distinct maintainer keys the root (3) names and 1 key was given',
    )
    expect(await served('1.4.0')).toEqual(before)
    // 1.3.0 carries B alone, short of root 3's threshold: devices refuse it, so it is not vouched for.
    const short = await cliFailure(resign('fw@1.3.0', [keyB, keyC]))
    expect(short?.code).toBe(7)
    expect(short?.stdout).toContain('fewer than 2 valid signatures')

    await resign('fw@1.4.0', [keyB, keyC])
    expect((await served('1.4.0')).signed).not.toEqual(before.signed)
    const config = await device('store-after-resign', await root1())
    expect((await installArtifact(config, { name: 'fw', target: '1.4.0' })).version).toBe('1.4.0')

    // Publishing with too few keys would burn the version number on a release no device installs,
    // and a key the root does not name (A, revoked by root 2) does not count.
    // 1.4.0 with one byte changed, so a publish builds a delta from it.
    const previous = new Uint8Array(
      await (await fetch(`${suite.edge.url}/v1/artifacts/fw/1.4.0/blob`)).arrayBuffer(),
    )
    previous[0] = (previous[0] ?? 0) ^ 0xff
    const art = { path: join(dir, 'fw-1.5.0.bin') }
    await writeFile(art.path, previous)
    const keyA = await keyFile(maintainerA)
    const cli = (args: string[]) =>
      run(process.execPath, [BIN, '--config', configFile, '--json', ...args], {
        env: { ...process.env, DELTAPORT_TOKEN: TEST_TOKEN },
      })
    const publish = (keys: string[]) =>
      cli(['publish', art.path, '--name', 'fw', '--version', '1.5.0', ...keys.flatMap((k) => ['--key', k])])
    const revokedToo = await cliFailure(publish([keyB, keyA]))
    expect(revokedToo?.code).toBe(3)
    expect(revokedToo?.stdout).toMatch(
      /devices need 2 signatures by distinct maintainer keys the root \(3\) names and 1 of the 2 keys given is one \(not a maintainer there: [0-9a-f]{12}\)/,
    )
    // Refused before the deltas from the earlier releases are built (minutes for a big artifact): the
    // text output names each delta built.
    const asText = await cliFailure(
      run(
        process.execPath,
        [
          BIN,
          '--config',
          configFile,
          'publish',
          art.path,
          '--name',
          'fw',
          '--version',
          '1.5.0',
          '--key',
          keyB,
        ],
        { env: { ...process.env, DELTAPORT_TOKEN: TEST_TOKEN } },
      ),
    )
    expect(asText?.code).toBe(3)
    expect(asText?.stderr).not.toContain('delta from')
    const yankOne = await cliFailure(cli(['yank', 'fw@1.4.0', '--reason', 'test', '--key', keyB]))
    expect(yankOne?.code).toBe(3)
    expect(yankOne?.stdout).toContain('devices would not act on the statement')
    expect((await new EdgeClient(suite.edge.url).index('fw')).versions.map((v) => v.version)).not.toContain(
      '1.5.0',
    )
    const published = JSON.parse((await publish([keyB, keyC])).stdout) as { deltas: { from: string }[] }
    expect(published.deltas.map((d) => d.from)).toContain('1.4.0')
    expect((await installArtifact(config, { name: 'fw', target: '1.5.0' })).version).toBe('1.5.0')
  })
})

describe('config with a root', () => {
  it('refuses keys beside a root, naming why', async () => {
    const file = join(suite.ws.dir, 'both.json')
    await writeFile(
      file,
      JSON.stringify({ edgeUrl: suite.edge.url, root: 'r.json', trustedKeys: suite.ws.config.trustedKeys }),
    )
    const error = await agentFailure(loadConfig(file))
    expect(error.code).toBe('config')
    expect(error.message).toMatch(/a root replaces trustedKeys and indexKeys/)
  })

  it('refuses a shipped root that does not carry its own root keys’ signatures', async () => {
    const unsigned = await signDocumentByAll(rootBody(1, { root: [rootKey], maintainers: [maintainerA] }), [
      maintainerA,
    ])
    const error = await agentFailure(refreshRootTrust(await device('store-g', unsigned)))
    expect(error.code).toBe('config')
    expect(error.message).toMatch(/lacks 1 valid signature/)
  })
})
