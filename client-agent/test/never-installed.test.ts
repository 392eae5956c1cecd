import { readdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import type { AgentConfig } from '../config.ts'
import { runDaemonCycle } from '../daemon/daemon.ts'
import { StagingArea } from '../daemon/staging.ts'
import { installArtifact } from '../install.ts'
import { publishArtifact } from '../publish.ts'
import { generateKeyPair } from '../signing.ts'
import { ArtifactStore } from '../store.ts'
import { type UninstallResult, uninstallArtifact } from '../uninstall.ts'
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

describe('uninstall while the daemon downloads the artifact', () => {
  /** name@1.0.0 installed, name@1.1.0 the channel head the daemon's queue suggests. */
  async function installedWithNewerHead(config: AgentConfig, name: string) {
    await publish(name, '1.0.0', 200_000)
    await installArtifact(config, { name })
    await publish(name, '1.1.0', 200_000)
  }

  /**
   * A fetch whose answer for `name@1.1.0`'s blob runs `deltaport uninstall name` to its end after the
   * first part of the body has been written, then (`then`) goes on with the rest, or drops the
   * connection there (the daemon then retries the download from the start).
   */
  function uninstallMidDownload(config: AgentConfig, name: string, then: 'continue' | 'drop') {
    const done: { result: UninstallResult | null } = { result: null }
    const fetchImpl: typeof fetch = async (input, init) => {
      const response = await fetch(input, init)
      const url = input instanceof Request ? input.url : String(input)
      if (done.result !== null || !url.endsWith(`/${name}/1.1.0/blob`) || response.body === null)
        return response
      const reader = response.body.getReader()
      let chunks = 0
      const body = new ReadableStream<Uint8Array>({
        async pull(controller) {
          if (chunks === 1 && done.result === null) {
            done.result = await uninstallArtifact(config, { name })
            if (then === 'drop') {
              controller.error(new Error('connection reset'))
              return
            }
          }
          const next = await reader.read()
          if (next.done) controller.close()
          else {
            chunks++
            controller.enqueue(next.value)
          }
        },
      })
      return new Response(body, { status: response.status, headers: response.headers })
    }
    return { fetchImpl, done }
  }

  for (const then of ['continue', 'drop'] as const) {
    it(`drops the item quietly and leaves nothing of it (the connection ${then === 'drop' ? 'drops' : 'goes on'} after the uninstall)`, async () => {
      const name = `nd-mid-${then}`
      const config = device(`mid-${then}`)
      await installedWithNewerHead(config, name)
      const { fetchImpl, done } = uninstallMidDownload(config, name, then)
      const cycle = await runDaemonCycle(config, { loadSampler: idle, fetchImpl })
      // The uninstall ran while the download was under way, and won.
      expect(done.result).toMatchObject({ removed: [{ name, versions: ['1.0.0'] }] })
      expect(cycle.failures).toEqual([])
      expect(cycle.staged.filter((s) => s.name === name)).toEqual([])
      expect(cycle.dropped).toContainEqual({ name, version: '1.1.0' })
      const staging = new StagingArea(config.installRoot)
      expect(await staging.holds(name)).toBe(false)
      expect((await readdir(staging.partialDir)).filter((file) => file.startsWith(name))).toEqual([])
      expect(await new ArtifactStore(config.installRoot, name).installedVersions()).toEqual([])
    })
  }
})
