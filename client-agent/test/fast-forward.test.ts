/**
 * Recovering from a fast-forward attack on the device (ADR 0037). Someone who stole a trusted key and
 * stands between the edge and a device can hand it one release with a huge serial (the edge refuses
 * such a jump, MAX_SERIAL_STEP, so the device is reached around it). The device then refuses every
 * honest release as a rollback, and every honest index as older than what it saw. Rotating the stolen
 * key out must be enough to bring it back: serial floors count only under the keys that raised them.
 */
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import type { AgentConfig } from '../config.ts'
import { runDaemonCycle } from '../daemon/daemon.ts'
import { hashFile } from '../download.ts'
import { installArtifact } from '../install.ts'
import { publishArtifact } from '../publish.ts'
import { generateKeyPair, type KeyPairFiles, signManifest } from '../signing.ts'
import { ArtifactStore } from '../store.ts'
import { agentFailure, manifestFor, writeArtifact } from './fixtures.ts'
import { TEST_TOKEN, useEdgeWorkspace } from './local-edge.ts'

const indexKey = await generateKeyPair()
const suite = useEdgeWorkspace({ INDEX_SIGNING_KEY: indexKey.privateKey })
const [stolen, successor, stolenIndexKey] = await Promise.all([
  generateKeyPair(),
  generateKeyPair(),
  generateKeyPair(),
])
const HUGE_SERIAL = 2 ** 40

const trusting = (...keys: KeyPairFiles[]) => keys.map((k) => ({ keyid: k.keyid, publicKey: k.publicKey }))

function device(store: string, maintainers: KeyPairFiles[]): AgentConfig {
  return {
    ...suite.ws.config,
    installRoot: join(suite.ws.dir, store),
    trustedKeys: trusting(...maintainers),
    indexKeys: trusting(indexKey),
  }
}

async function publishSignedBy(name: string, version: string, signers: KeyPairFiles[]): Promise<void> {
  const art = await writeArtifact(suite.ws.dir, `${name}-${version}.bin`, 2_000)
  const keyFile = await Promise.all(
    signers.map(async (key) => {
      const path = join(suite.ws.dir, `${key.keyid.slice(0, 12)}.key.json`)
      await writeFile(path, JSON.stringify(key))
      return path
    }),
  )
  await publishArtifact({
    edgeUrl: suite.edge.url,
    token: TEST_TOKEN,
    keyFile,
    file: art.path,
    name,
    version,
  })
}

/**
 * What the attack leaves on the device: a release (1.0.1, posing as a patch) signed by the stolen key,
 * with a serial far above anything published, verified (the key was trusted then), installed and
 * running. Done as install does it (commit the verified blob, switch under the keys it was verified
 * with), minus the network.
 */
async function fastForwarded(config: AgentConfig, name: string): Promise<void> {
  const store = new ArtifactStore(config.installRoot, name)
  const blob = await writeArtifact(suite.ws.dir, `${name}-planted.bin`, 500)
  const manifest = manifestFor({
    name,
    version: '1.0.1',
    size: 500,
    sha256: await hashFile(blob.path),
    serial: HUGE_SERIAL,
  })
  await store.withLock({ timeoutMs: 1_000 }, async () => {
    await store.prepare()
    await store.commitVersion(blob.path, await signManifest(manifest, stolen))
    await store.activate(manifest, { trust: config })
  })
}

describe('fast-forward recovery', () => {
  it('takes honest releases again once the stolen key is rotated out, and not before', async () => {
    await publishSignedBy('ff', '1.0.0', [stolen])
    const before = device('store-ff', [stolen])
    await installArtifact(before, { name: 'ff' })
    await fastForwarded(before, 'ff')
    // The maintainers notice, and sign the next release with both keys while devices move over.
    await publishSignedBy('ff', '1.1.0', [stolen, successor])

    // Still trusting the stolen key, the device cannot tell the planted serial from an honest one.
    const stuck = await agentFailure(installArtifact(before, { name: 'ff' }))
    expect(stuck.code).toBe('untrusted-index')
    expect(stuck.message).toContain(`older than what this device installed (serial 2 < ${HUGE_SERIAL})`)
    const refused = await agentFailure(installArtifact(before, { name: 'ff', target: '1.1.0' }))
    expect(refused.message).toContain(`below the last seen ${HUGE_SERIAL} (rollback refused)`)

    const stuckCycle = await runDaemonCycle(before, { loadSampler: () => 0 })
    expect(stuckCycle.staged).toEqual([])
    // The daemon reads the index as install does (it checks each item's yank there first), so it is
    // held back by the same word.
    expect(stuckCycle.failures.map((f) => f.message)).toEqual([
      expect.stringContaining(`older than what this device installed (serial 2 < ${HUGE_SERIAL})`),
    ])

    // The stolen key is rotated out (a config edit here; a root does the same, ADR 0035). The daemon
    // stages the release at once; the next update installs it.
    const after = device('store-ff', [successor])
    const cycle = await runDaemonCycle(after, { loadSampler: () => 0 })
    expect(cycle.staged.map((item) => `${item.name}@${item.version}`)).toEqual(['ff@1.1.0'])
    expect(await installArtifact(after, { name: 'ff' })).toMatchObject({
      version: '1.1.0',
      previous: '1.0.1',
      method: 'staged',
    })
    const store = new ArtifactStore(after.installRoot, 'ff')
    // The floor is now what the new key vouched for, kept under its fingerprint.
    expect((await store.state()).lastSerial).toBe(2)
    expect(await store.serialFloor(after)).toBe(2)
    // …and it protects again: once 1.2.0 is in, 1.1.0 (signed by the new key too) is a rollback.
    await publishSignedBy('ff', '1.2.0', [successor])
    await installArtifact(after, { name: 'ff' })
    expect(await store.serialFloor(after)).toBe(3)
    const replay = await agentFailure(installArtifact(after, { name: 'ff', target: '1.1.0' }))
    expect(replay.message).toContain('serial 2 is below the last seen 3 (rollback refused)')
  })

  it('forgets an index serial seen under index keys it no longer trusts', async () => {
    await publishSignedBy('fi', '1.0.0', [suite.ws.key])
    const config = device('store-fi', [suite.ws.key])
    await installArtifact(config, { name: 'fi' })
    await publishSignedBy('fi', '1.1.0', [suite.ws.key])
    const store = new ArtifactStore(config.installRoot, 'fi')

    // A huge index serial seen under the device's current index key holds it back (ADR 0032)…
    await store.recordIndexSerial(HUGE_SERIAL, config.indexKeys)
    const held = await agentFailure(installArtifact(config, { name: 'fi' }))
    expect(held.message).toContain(
      `older than an index this device already verified (serial 2 < ${HUGE_SERIAL})`,
    )

    // …one seen under a key it has since stopped pinning does not.
    await store.recordIndexSerial(HUGE_SERIAL, trusting(stolenIndexKey))
    expect(await store.indexSerialSeen(config.indexKeys)).toBe(0)
    expect(await installArtifact(config, { name: 'fi' })).toMatchObject({ version: '1.1.0' })
    expect(await store.indexSerialSeen(config.indexKeys)).toBe(2)
  })
})
