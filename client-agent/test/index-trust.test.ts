/**
 * Freeze defence end to end (ADR 0032, 0034): an edge with INDEX_SIGNING_KEY signs every index and
 * rollout answer it serves; a device that pins the key's public half in indexKeys updates from fresh
 * ones and refuses stale, replayed, altered, foreign-signed or unsigned ones, naming why, without
 * touching what it runs.
 */
import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import type { AgentConfig } from '../config.ts'
import { deviceEdgeOptions, EdgeClient } from '../edge-client.ts'
import { installArtifact, rollbackArtifact } from '../install.ts'
import { checkRollout, controlRollout } from '../rollout/client.ts'
import { agentClientId } from '../rollout/client-id.ts'
import { rolloutGate } from '../rollout/update-gate.ts'
import { generateKeyPair, type KeyPairFiles } from '../signing.ts'
import { ArtifactStore } from '../store.ts'
import { EdgeChannelSource } from '../swap/edge-source.ts'
import { agentFailure, writeArtifact } from './fixtures.ts'
import { TEST_TOKEN, useEdgeWorkspace } from './local-edge.ts'

const edgeKey = await generateKeyPair()
const suite = useEdgeWorkspace({ INDEX_SIGNING_KEY: edgeKey.privateKey })
const BIN = join(import.meta.dirname, '..', 'bin', 'deltaport.ts')
const DAY_MS = 24 * 3600 * 1000

function device(store: string, pinned: KeyPairFiles = edgeKey): AgentConfig {
  return {
    ...suite.ws.config,
    installRoot: join(suite.ws.dir, store),
    indexKeys: [{ keyid: pinned.keyid, publicKey: pinned.publicKey }],
  }
}

async function publish(name: string, version: string) {
  const art = await writeArtifact(suite.ws.dir, `${name}-${version}.bin`, 3_000)
  await suite.publish(art.path, name, version)
}

/** The index as the edge serves it right now, statement included. */
async function servedIndex(name: string): Promise<Record<string, unknown>> {
  const response = await fetch(`${suite.edge.url}/v1/artifacts/${name}`)
  expect(response.status).toBe(200)
  return (await response.json()) as Record<string, unknown>
}

/** A fetch that answers `name`'s index with `body` (a cached, replayed or altered copy); the rest passes. */
function answeringIndexWith(name: string, body: unknown): typeof fetch {
  return async (input, init) => {
    const url = new URL(input instanceof Request ? input.url : String(input))
    if (url.pathname === `/v1/artifacts/${name}`) return Response.json(body)
    return fetch(input, init)
  }
}

describe('signed index statements on the device', () => {
  it('updates from fresh indexes; refuses an old copy replayed after the update, and any copy past its lifetime', async () => {
    await publish('fz', '1.0.0')
    const beforeRelease = await servedIndex('fz')
    await publish('fz', '1.1.0')
    const config = device('store-fresh')
    expect(await installArtifact(config, { name: 'fz' })).toMatchObject({ version: '1.1.0' })

    // Signed and unexpired, but from before 1.1.0: a cache or mirror holding the device back.
    const replayed = await agentFailure(
      installArtifact(config, { name: 'fz', fetchImpl: answeringIndexWith('fz', beforeRelease) }),
    )
    expect(replayed.code).toBe('untrusted-index')
    expect(replayed.message).toContain('older than what this device installed (serial 1 < 2)')
    expect((await new ArtifactStore(config.installRoot, 'fz').state()).current).toBe('1.1.0')

    // A device that never saw 1.1.0 cannot tell by serial, so the lifetime bounds it: a day later the
    // same copy (and any answer signed before then) is refused as stale.
    const late = await agentFailure(
      installArtifact(device('store-late'), {
        name: 'fz',
        fetchImpl: answeringIndexWith('fz', beforeRelease),
        now: new Date(Date.now() + DAY_MS + 60_000),
      }),
    )
    expect(late.code).toBe('untrusted-index')
    expect(late.message).toContain('is stale: its statement expired at')

    // A clock far behind (a board that booted at 1970) would take every statement as fresh: refused.
    const behind = await agentFailure(
      installArtifact(device('store-behind'), { name: 'fz', now: new Date(Date.now() - 2 * 3600_000) }),
    )
    expect(behind.message).toContain("ahead of this device's clock; check the clock")
  })

  it('refuses an index older than one it already verified, before installing what that one offered', async () => {
    await publish('fv', '1.0.0')
    const config = device('store-seen')
    await installArtifact(config, { name: 'fv' })
    const beforeRelease = await servedIndex('fv')
    await publish('fv', '1.1.0')
    const store = new ArtifactStore(config.installRoot, 'fv')
    // The device reads the new index (a poll, a prefetch) without installing 1.1.0 yet.
    const edge = new EdgeClient(config.edgeUrl, fetch, deviceEdgeOptions(config))
    expect((await edge.index('fv')).latestSerial).toBe(2)
    expect(await store.indexSerialSeen(config.indexKeys)).toBe(2)

    // The copy from before 1.1.0 is signed, unexpired and not below what is installed (serial 1).
    const replayed = await agentFailure(
      installArtifact(config, { name: 'fv', fetchImpl: answeringIndexWith('fv', beforeRelease) }),
    )
    expect(replayed.code).toBe('untrusted-index')
    expect(replayed.message).toContain('older than an index this device already verified (serial 1 < 2)')
    expect((await store.state()).current).toBe('1.0.0')
    expect(await installArtifact(config, { name: 'fv' })).toMatchObject({ version: '1.1.0' })

    // Reading an index records nothing for an artifact the device has no store of.
    const fresh = device('store-seen-none')
    await new EdgeClient(fresh.edgeUrl, fetch, deviceEdgeOptions(fresh)).index('fv')
    expect(existsSync(new ArtifactStore(fresh.installRoot, 'fv').dir)).toBe(false)
    // A damaged record reads as nothing seen; the installed serial still holds.
    await writeFile(join(store.dir, 'index-seen.json'), '{"latestSerial": -')
    expect(await store.indexSerialSeen(config.indexKeys)).toBe(0)
  })

  it('keeps no record of an index a failed first install verified, nor a folder for that artifact', async () => {
    await publish('ffirst', '1.0.0')
    await publish('ffirst', '1.1.0')
    const config = device('store-first-failed')
    const store = new ArtifactStore(config.installRoot, 'ffirst')
    // The index verifies (serial 2); the bytes that follow do not.
    const corrupting: typeof fetch = async (input, init) => {
      const response = await fetch(input, init)
      const url = input instanceof Request ? input.url : String(input)
      if (!url.endsWith('/ffirst/1.1.0/blob')) return response
      const bytes = new Uint8Array(await response.arrayBuffer())
      bytes[0] = (bytes[0] ?? 0) ^ 0xff
      return new Response(bytes, { status: response.status, headers: response.headers })
    }
    const failed = await agentFailure(installArtifact(config, { name: 'ffirst', fetchImpl: corrupting }))
    expect(failed.code).toBe('integrity-mismatch')
    // Like a device that only read the index: it never had ffirst, so it keeps nothing of it (a record
    // left here kept a folder no command removes, and held a later first install to this edge's serial).
    expect(existsSync(store.dir)).toBe(false)
    expect(await store.indexSerialSeen(config.indexKeys)).toBe(0)
    // Installed, the artifact records what it saw as before.
    expect(await installArtifact(config, { name: 'ffirst' })).toMatchObject({ version: '1.1.0' })
    expect(await store.indexSerialSeen(config.indexKeys)).toBe(2)
  })

  it('refuses an index altered after signing, one signed by another key, and an unsigned one', async () => {
    await publish('fy', '1.0.0')
    await publish('fy', '2.0.0')
    const served = await servedIndex('fy')
    const refusal = async (config: AgentConfig, body: unknown) =>
      agentFailure(installArtifact(config, { name: 'fy', fetchImpl: answeringIndexWith('fy', body) }))

    const altered = await refusal(device('store-altered'), {
      ...served,
      channels: { stable: '1.0.0' },
    })
    expect(altered.message).toContain('differs from what its statement covers')
    const foreign = await refusal(device('store-foreign', await generateKeyPair()), served)
    expect(foreign.message).toContain('no valid signature by a key in indexKeys')
    const { statement: _, ...unsigned } = served
    const bare = await refusal(device('store-bare'), unsigned)
    expect(bare.message).toContain('carries no signed statement')
    for (const error of [altered, foreign, bare]) expect(error.code).toBe('untrusted-index')

    // Without indexKeys a device takes indexes as before, signed or not.
    const unpinned: AgentConfig = { ...device('store-unpinned'), indexKeys: [] }
    expect(
      await installArtifact(unpinned, { name: 'fy', fetchImpl: answeringIndexWith('fy', unsigned) }),
    ).toMatchObject({ version: '2.0.0' })
  })

  it("holds `deltaport run`'s updates and dependency resolution to the same statements", async () => {
    await publish('fw', '1.0.0')
    const run = new EdgeChannelSource(device('store-run', await generateKeyPair()), 'fw')
    expect((await agentFailure(run.initial())).code).toBe('untrusted-index')
    expect((await agentFailure(run.next('0.9.0', new Set()))).code).toBe('untrusted-index')

    const lib = await writeArtifact(suite.ws.dir, 'fw-lib-1.0.0.bin', 3_000)
    await suite.publish(lib.path, 'fw-lib', '1.0.0')
    const app = await writeArtifact(suite.ws.dir, 'fw-app-1.0.0.bin', 3_000)
    await suite.publish(app.path, 'fw-app', '1.0.0', { dependencies: [{ name: 'fw-lib', range: '^1.0.0' }] })
    const { statement: _, ...unsignedLib } = await servedIndex('fw-lib')
    const config = device('store-deps')
    const refused = await agentFailure(
      installArtifact(config, { name: 'fw-app', fetchImpl: answeringIndexWith('fw-lib', unsignedLib) }),
    )
    expect(refused.message).toContain('the index of fw-lib carries no signed statement')
    expect((await new ArtifactStore(config.installRoot, 'fw-app').state()).current).toBeNull()

    // A dependency's index from before a release the device has is refused as well: here the device
    // installed fw-lib 1.1.0, went back to 1.0.0, and fw-app 2.0.0 needs ^1.1.0.
    const before = await servedIndex('fw-lib')
    const lib11 = await writeArtifact(suite.ws.dir, 'fw-lib-1.1.0.bin', 3_000)
    await suite.publish(lib11.path, 'fw-lib', '1.1.0')
    const app2 = await writeArtifact(suite.ws.dir, 'fw-app-2.0.0.bin', 3_000)
    await suite.publish(app2.path, 'fw-app', '2.0.0', { dependencies: [{ name: 'fw-lib', range: '^1.1.0' }] })
    await installArtifact(config, { name: 'fw-lib', target: '1.0.0' })
    await installArtifact(config, { name: 'fw-lib' })
    await rollbackArtifact(config, 'fw-lib')
    const replayed = await agentFailure(
      installArtifact(config, { name: 'fw-app', fetchImpl: answeringIndexWith('fw-lib', before) }),
    )
    expect(replayed.message).toContain('the index of fw-lib is older than what this device installed')
  })

  it('exits 15 from the CLI when the index is not signed by a pinned key', async () => {
    await publish('fx', '1.0.0')
    const configFile = join(suite.ws.dir, 'index-trust-cli.json')
    await writeFile(configFile, JSON.stringify(device('store-cli', await generateKeyPair())))
    const refused = await promisify(execFile)(process.execPath, [BIN, '--config', configFile, 'update', 'fx'])
      .then(() => ({ code: 0, stderr: '' }))
      .catch((e: { code: number; stderr: string }) => e)
    expect(refused.code).toBe(15)
    expect(refused.stderr).toContain('no valid signature by a key in indexKeys')
  })
})

describe('signed rollout answers on the device (ADR 0034)', () => {
  /** A fetch that answers `name`'s rollout check with `body` (a cached, replayed or altered copy). */
  function answeringRolloutWith(name: string, body: unknown): typeof fetch {
    return async (input, init) => {
      const url = new URL(input instanceof Request ? input.url : String(input))
      if (url.pathname === `/v1/rollouts/${name}/stable`) return Response.json(body)
      return fetch(input, init)
    }
  }

  it('takes a fresh answer signed for this device; refuses one for another device, altered, stale or unsigned', async () => {
    await publish('fr', '1.0.0')
    await controlRollout(new EdgeClient(suite.edge.url), TEST_TOKEN, 'fr', 'stable', 'start', {
      version: '1.0.0',
      stages: [{ percent: 100, durationMs: DAY_MS }],
    })
    const config = device('store-rollout')
    const gate = await rolloutGate(config, 'fr', undefined)
    expect(gate).toMatchObject({ kind: 'in', version: '1.0.0' })

    const asked = async (client: string) =>
      (await (await fetch(`${suite.edge.url}/v1/rollouts/fr/stable?client=${client}`)).json()) as Record<
        string,
        unknown
      >
    const mine = await asked(await agentClientId(config))
    const refusal = async (body: unknown, at?: Date) =>
      (
        await agentFailure(
          at
            ? checkRollout(
                new EdgeClient(suite.edge.url, answeringRolloutWith('fr', body)),
                'fr',
                'stable',
                await agentClientId(config),
                { keys: config.indexKeys, now: () => at },
              )
            : rolloutGate(config, 'fr', undefined, answeringRolloutWith('fr', body)),
        )
      ).message
    expect(await refusal(await asked('some-other-device'))).toContain('made for another client')
    // "Not yet" under this device's signature: the holding-back a freeze attack would want.
    expect(await refusal({ ...mine, in: false, version: null })).toContain(
      'differs from what its statement covers',
    )
    const { statement: _, ...unsigned } = mine
    expect(await refusal(unsigned)).toContain('carries no signed statement')
    expect(await refusal(mine, new Date(Date.now() + 2 * DAY_MS))).toContain('is stale')
    // Signed by a key this device does not pin.
    const foreign = await agentFailure(
      rolloutGate(device('store-rollout-foreign', await generateKeyPair()), 'fr', undefined),
    )
    expect(foreign).toMatchObject({ code: 'untrusted-index' })
    expect(foreign.message).toContain('no valid signature by a key in indexKeys')
    // A device that pins no key takes the answer as sent (the local default).
    const unpinned: AgentConfig = { ...device('store-rollout-unpinned'), indexKeys: [] }
    expect(await rolloutGate(unpinned, 'fr', undefined, answeringRolloutWith('fr', unsigned))).toMatchObject({
      kind: 'in',
    })
  })
})
