import { readdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import type { AgentConfig } from '../config.ts'
import { runDaemonCycle } from '../daemon/daemon.ts'
import { installArtifact } from '../install.ts'
import { publishArtifact } from '../publish.ts'
import { generateKeyPair } from '../signing.ts'
import { uninstallArtifact } from '../uninstall.ts'
import { agentFailure, makeWorkspace, writeArtifact } from './fixtures.ts'
import { TEST_TOKEN, useEdgeWorkspace } from './local-edge.ts'

/**
 * Nothing is left on the device for an artifact it never installed: not by the daemon staging one
 * (a dependency prefetched before anything installs it), not by a first install that fails, not by
 * uninstalling what was only prefetched. An empty folder in the install root reads as an artifact
 * there to whoever lists it, and every such failure (a cron `update` of a name the edge does not know
 * yet, every few minutes) would add one.
 */

const suite = useEdgeWorkspace()
const idle = () => 0

/** A device of its own (install root), so the tests do not see each other's stores. */
function device(id: string, extra: Partial<AgentConfig> = {}): AgentConfig {
  return { ...suite.ws.config, installRoot: join(suite.ws.dir, `store-${id}`), ...extra }
}

async function publish(name: string, version: string, size = 20_000, deps: Record<string, string> = {}) {
  const art = await writeArtifact(suite.ws.dir, `${name}-${version}.bin`, size)
  const dependencies = Object.entries(deps).map(([dep, range]) => ({ name: dep, range }))
  await suite.publish(art.path, name, version, { dependencies })
}

/** The artifacts' folders in the install root (the agent's own dot-folders aside). */
async function artifactFolders(config: AgentConfig): Promise<string[]> {
  return (await readdir(config.installRoot)).filter((entry) => !entry.startsWith('.')).sort()
}

describe('an artifact never installed leaves no folder', () => {
  it('when the daemon stages it as a dependency of an update, and when it is uninstalled from staging', async () => {
    const config = device('prefetched-dependency')
    await publish('nd-lib', '1.0.0')
    await publish('nd-app', '1.0.0')
    await installArtifact(config, { name: 'nd-app' })
    // The update the queue schedules declares a dependency the device has never had: the edge adds it.
    await publish('nd-app', '1.1.0', 20_000, { 'nd-lib': '^1.0.0' })
    const cycle = await runDaemonCycle(config, { loadSampler: idle })
    expect(cycle.failures).toEqual([])
    expect(cycle.staged.map((s) => `${s.name}@${s.version}`)).toEqual(
      expect.arrayContaining(['nd-app@1.1.0', 'nd-lib@1.0.0']),
    )
    // Staging it took the artifact's lock (the claim, the commit), which made its folder.
    expect(await artifactFolders(config)).toEqual(['nd-app'])

    // Uninstalling what was only prefetched removes the staged copy, and leaves no folder either.
    const removed = await uninstallArtifact(config, { name: 'nd-lib' })
    expect(removed.removed).toEqual([{ name: 'nd-lib', versions: [], staged: ['1.0.0'], unfinished: 0 }])
    expect(await artifactFolders(config)).toEqual(['nd-app'])
    expect((await agentFailure(uninstallArtifact(config, { name: 'nd-lib' }))).code).toBe('not-found')
  })

  it('when a first install fails: edge unreachable, an untrusted signature, bytes that do not verify', async () => {
    const config = device('failed-first')
    await publish('nd-good', '1.0.0')

    const unreachable = await agentFailure(
      installArtifact({ ...config, edgeUrl: 'http://127.0.0.1:9' }, { name: 'nd-good' }),
    )
    expect(unreachable.code).toBe('network')
    expect(await artifactFolders(config)).toEqual([])

    // Signed by a key the device does not trust.
    const stranger = await makeWorkspace(suite.edge.url)
    await writeFile(stranger.keyFile, JSON.stringify(await generateKeyPair()))
    const art = await writeArtifact(suite.ws.dir, 'nd-stranger.bin', 2_000)
    await publishArtifact({
      edgeUrl: suite.edge.url,
      token: TEST_TOKEN,
      keyFile: stranger.keyFile,
      file: art.path,
      name: 'nd-stranger',
      version: '1.0.0',
    })
    expect((await agentFailure(installArtifact(config, { name: 'nd-stranger' }))).code).toBe(
      'untrusted-manifest',
    )
    expect(await artifactFolders(config)).toEqual([])

    // An app whose dependency cannot be installed: neither gets a folder.
    await publish('nd-needs-stranger', '1.0.0', 2_000, { 'nd-stranger': '^1.0.0' })
    expect((await agentFailure(installArtifact(config, { name: 'nd-needs-stranger' }))).code).toBe(
      'untrusted-manifest',
    )
    expect(await artifactFolders(config)).toEqual([])

    // The bytes are damaged on the way (every time): the download fails after the store was prepared.
    const corrupting: typeof fetch = async (input, init) => {
      const response = await fetch(input, init)
      const url = input instanceof Request ? input.url : String(input)
      if (!url.endsWith('/nd-good/1.0.0/blob')) return response
      const bytes = new Uint8Array(await response.arrayBuffer())
      bytes[0] = (bytes[0] ?? 0) ^ 0xff
      return new Response(bytes, { status: response.status, headers: response.headers })
    }
    const damaged = await agentFailure(installArtifact(config, { name: 'nd-good', fetchImpl: corrupting }))
    expect(damaged.code).toBe('integrity-mismatch')
    expect(await artifactFolders(config)).toEqual([])

    // And the artifact installs normally afterwards.
    expect(await installArtifact(config, { name: 'nd-good' })).toMatchObject({ version: '1.0.0' })
    expect(await artifactFolders(config)).toEqual(['nd-good'])
  })
})
