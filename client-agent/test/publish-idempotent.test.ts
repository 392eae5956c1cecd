import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { EdgeClient } from '../edge-client.ts'
import { ArtifactStore } from '../store.ts'
import { type FaultProxy, type SeenRequest, startFaultProxy } from './fault-proxy.ts'
import { writeArtifact } from './fixtures.ts'
import { TEST_TOKEN, useEdgeWorkspace } from './local-edge.ts'

const run = promisify(execFile)
const BIN = join(import.meta.dirname, '..', 'bin', 'deltaport.ts')
const suite = useEdgeWorkspace()

/** The answer to the request that commits a single-PUT publish (its bytes) is dropped when set. */
let dropCommitAnswer = false
const COMMIT = /^\/v1\/publish\/[^/]+\/[^/]+\/blob$/
let proxy: FaultProxy
let proxyConfig = ''

beforeAll(async () => {
  proxy = await startFaultProxy(suite.edge.url, (request) =>
    dropCommitAnswer && request.method === 'PUT' && COMMIT.test(request.path)
      ? { kind: 'drop-answer' }
      : undefined,
  )
  proxyConfig = join(suite.ws.dir, 'through-proxy.json')
  await writeFile(proxyConfig, JSON.stringify({ ...suite.ws.config, edgeUrl: proxy.url }))
})
afterAll(() => proxy?.close())

/** `deltaport [--json] publish …` through the proxy, as CI runs it. */
async function publishCli(file: string, name: string, extra: string[] = [], json = false) {
  const args = [BIN, '--config', proxyConfig, ...(json ? ['--json'] : []), 'publish', file]
  try {
    const { stdout, stderr } = await run(
      process.execPath,
      [...args, '--name', name, '--version', '1.0.0', '--no-deltas', ...extra],
      { env: { ...process.env, DELTAPORT_TOKEN: TEST_TOKEN } },
    )
    return { code: 0, stdout, stderr }
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string }
    return { code: e.code, stdout: e.stdout, stderr: e.stderr }
  }
}

/** What the proxy saw sent to the publish endpoints (staging, uploads, commits) after `from`. */
function publishRequestsAfter(from: number): SeenRequest[] {
  return proxy.seen().filter((r) => r.number > from && r.path.startsWith('/v1/publish/'))
}

describe('a publish whose commit landed but whose answer was lost', () => {
  it('finds the version in the index, exits 0, and the version installs', async () => {
    const artifact = await writeArtifact(suite.ws.dir, 'lost-1.0.0.bin', 50_000)
    dropCommitAnswer = true
    const result = await publishCli(artifact.path, 'lost', [], true).finally(() => {
      dropCommitAnswer = false
    })
    expect(result.code, result.stdout + result.stderr).toBe(0)
    const doc = JSON.parse(result.stdout) as { ok: boolean; published: Record<string, unknown> }
    expect(doc.ok).toBe(true)
    expect(doc.published).toMatchObject({
      name: 'lost',
      version: '1.0.0',
      serial: 1,
      size: 50_000,
      sha256: createHash('sha256').update(artifact.bytes).digest('hex'),
      settled: 'answer-lost',
    })
    // The commit's answer really was dropped: the proxy saw the blob PUT.
    expect(proxy.seen().some((r) => r.method === 'PUT' && COMMIT.test(r.path))).toBe(true)

    const install = await run(process.execPath, [BIN, '--config', suite.ws.configFile, 'install', 'lost'])
    expect(install.stdout).toContain('lost@1.0.0')
    expect((await new ArtifactStore(suite.ws.config.installRoot, 'lost').state()).current).toBe('1.0.0')
  })
})

describe('publishing a published version again', () => {
  it('with the same bytes and dependencies: exit 0, "already published", nothing uploaded or staged', async () => {
    const artifact = await writeArtifact(suite.ws.dir, 'again-1.0.0.bin', 40_000)
    const first = await publishCli(artifact.path, 'again', ['--deps', 'lost@^1.0.0'])
    expect(first.code, first.stderr).toBe(0)
    const before = proxy.seen().length

    const rerun = await publishCli(artifact.path, 'again', [
      '--deps',
      'lost@^1.0.0',
      '--channel',
      'stable',
      'beta',
    ])
    expect(rerun.code, rerun.stderr).toBe(0)
    expect(rerun.stdout).toContain('again@1.0.0')
    expect(rerun.stdout).toContain('already published with these bytes; nothing uploaded')
    // A channel the rerun names that the version does not head is said, not moved.
    expect(rerun.stderr).toContain('channel beta not moved: it has no head')
    expect(publishRequestsAfter(before)).toEqual([])
    const index = await new EdgeClient(suite.edge.url).index('again')
    expect(index.latestSerial).toBe(1)
    expect(index.channels.beta).toBeUndefined()
  })

  it('with other bytes: exit 5 naming both sha256', async () => {
    const artifact = await writeArtifact(suite.ws.dir, 'other-1.0.0.bin', 40_000)
    expect((await publishCli(artifact.path, 'other')).code).toBe(0)
    const changed = await writeArtifact(suite.ws.dir, 'other-1.0.0-rebuilt.bin', 40_000)
    const before = proxy.seen().length

    const rerun = await publishCli(changed.path, 'other')
    expect(rerun.code, rerun.stderr).toBe(5)
    expect(rerun.stderr).toContain('already published; versions are immutable')
    expect(rerun.stderr).toContain(
      `published sha256 ${createHash('sha256').update(artifact.bytes).digest('hex')}`,
    )
    expect(rerun.stderr).toContain(
      `this file's sha256 ${createHash('sha256').update(changed.bytes).digest('hex')}`,
    )
    expect(publishRequestsAfter(before)).toEqual([])
  })

  it('with the same bytes but other dependencies: exit 5 naming them', async () => {
    const artifact = await writeArtifact(suite.ws.dir, 'deps-1.0.0.bin', 40_000)
    expect((await publishCli(artifact.path, 'deps', ['--deps', 'lost@^1.0.0'])).code).toBe(0)
    const before = proxy.seen().length

    const rerun = await publishCli(artifact.path, 'deps', ['--deps', 'lost@^2.0.0'])
    expect(rerun.code, rerun.stderr).toBe(5)
    expect(rerun.stderr).toContain('already published; versions are immutable')
    expect(rerun.stderr).toContain('other dependencies (published: lost@^1.0.0; asked: lost@^2.0.0)')
    expect(rerun.stderr).not.toContain('other bytes')
    expect(publishRequestsAfter(before)).toEqual([])
  })
})
