import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { ArtifactIndex } from '../../schemas/artifact-index.ts'
import { type Fault, type FaultProxy, type SeenRequest, startFaultProxy } from './fault-proxy.ts'
import { jsonCli, writeArtifact } from './fixtures.ts'
import { TEST_TOKEN, useEdgeWorkspace } from './local-edge.ts'

/**
 * The maintainer's commands (`publish`, its deltas, `resign`) against a broken network or proxy between
 * them and the real edge (fault-proxy.ts): an answer cut mid-body is `network` (exit 4); one that is
 * not JSON, not of the expected shape or endless is `edge-rejected` (exit 5), read only up to its cap;
 * never an unexpected failure (exit 70) or memory spent on whatever the other side sends.
 */

// A small single-PUT cap: artifacts above 6 MiB take the multipart path.
const suite = useEdgeWorkspace({ MAX_SINGLE_PUT_BYTES: String(6 * 1024 * 1024) })

let proxy: FaultProxy | undefined
afterEach(async () => {
  await proxy?.close()
  proxy = undefined
})

/** `deltaport --json <args>` with a config whose edge is a fault proxy damaging `fault`'s requests. */
async function behindProxy(id: string, args: string[], fault: (request: SeenRequest) => Fault | undefined) {
  proxy = await startFaultProxy(suite.edge.url, fault)
  const configFile = join(suite.ws.dir, `maintainer-${id}.json`)
  await writeFile(configFile, JSON.stringify({ ...suite.ws.config, edgeUrl: proxy.url }))
  const started = Date.now()
  const run = await jsonCli(configFile, args, { DELTAPORT_TOKEN: TEST_TOKEN })
  const failure = JSON.parse(run.stdout ?? '{}') as {
    error?: { code?: string; message?: string; likelyPublished?: boolean }
  }
  return { ...run, failure: failure.error ?? {}, ms: Date.now() - started, via: proxy }
}

async function publishArgs(name: string, version: string, size: number, deltas: string[] = ['--no-deltas']) {
  const artifact = await writeArtifact(suite.ws.dir, `${name}-${version}.bin`, size)
  return ['publish', artifact.path, '--name', name, '--version', version, ...deltas]
}

/** The versions the edge itself lists for `name`, asked directly (not through the proxy). */
async function publishedVersions(name: string): Promise<string[]> {
  const response = await fetch(`${suite.edge.url}/v1/artifacts/${name}`)
  if (response.status === 404) return []
  return ArtifactIndex.parse(await response.json()).versions.map((v) => v.version)
}

const isStage = (r: SeenRequest, name: string) =>
  r.method === 'POST' && r.path === `/v1/publish/${name}/1.0.0`

describe('deltaport publish when the edge’s answers are damaged on the way', () => {
  it('a staging answer cut mid-body: exit 4 (network), nothing published', async () => {
    const args = await publishArgs('mf-stage-cut', '1.0.0', 4_000)
    const run = await behindProxy('stage-cut', args, (r) =>
      isStage(r, 'mf-stage-cut') ? { kind: 'reset' } : undefined,
    )
    expect(run.code, run.stderr ?? run.stdout).toBe(4)
    expect(run.failure.code).toBe('network')
    expect(await publishedVersions('mf-stage-cut')).toEqual([])
  })

  it('a staging answer lost after the edge staged it: the CLI gives the attempt up, a rerun publishes at once', async () => {
    const args = await publishArgs('mf-stage-lost', '1.0.0', 4_000)
    const run = await behindProxy('stage-lost', args, (r) =>
      isStage(r, 'mf-stage-lost') ? { kind: 'reset' } : undefined,
    )
    expect(run.code, run.stderr ?? run.stdout).toBe(4)
    // Given up by the name it never received: the sha256 of the envelope it staged.
    const giveUp = run.via.seen().find((r) => r.method === 'DELETE')
    expect(giveUp?.path).toMatch(/^\/v1\/publish\/mf-stage-lost\/1\.0\.0\/attempts\/[0-9a-f]{64}$/)
    // The rerun signs a new envelope (another createdAt and expires): held for 30 minutes before.
    await new Promise((resolve) => setTimeout(resolve, 5))
    const rerun = await behindProxy('stage-lost-rerun', args, () => undefined)
    expect(rerun.code, rerun.stderr ?? rerun.stdout).toBe(0)
    expect(await publishedVersions('mf-stage-lost')).toEqual(['1.0.0'])
  }, 60_000)

  it('a staging answer of another shape: exit 5 (edge-rejected), naming the answer', async () => {
    const args = await publishArgs('mf-stage-shape', '1.0.0', 4_000)
    const run = await behindProxy('stage-shape', args, (r) =>
      isStage(r, 'mf-stage-shape') ? { kind: 'replace-body', body: '{"ok":true}' } : undefined,
    )
    expect(run.code, run.stderr ?? run.stdout).toBe(5)
    expect(run.failure).toMatchObject({ code: 'edge-rejected' })
    expect(run.failure.message).toContain('the answer to staging mf-stage-shape@1.0.0 that is malformed')
  })

  it('a staging answer naming parts no edge would take: exit 5 before any part is read or sent', async () => {
    // 12 MiB: multipart under this suite's 6 MiB single-PUT cap. A part size of a byte would take
    // 12 million requests (the edge refuses part 10,001 only after 10,000 were sent); one of 2^40 bytes
    // would read the whole artifact into memory as one part, up to the 5 GiB an artifact may have.
    for (const [id, partBytes] of [
      ['tiny', 1],
      ['huge', 2 ** 40],
    ] as const) {
      const name = `mf-parts-${id}`
      const args = await publishArgs(name, '1.0.0', 12 * 1024 * 1024)
      const answer = { name, version: '1.0.0', maxSinglePutBytes: 6 * 1024 * 1024, partBytes }
      const run = await behindProxy(`parts-${id}`, args, (r) =>
        isStage(r, name) ? { kind: 'replace-body', body: JSON.stringify(answer) } : undefined,
      )
      expect(run.code, run.stderr ?? run.stdout).toBe(5)
      expect(run.failure.message).toContain(`the answer to staging ${name}@1.0.0 that is malformed`)
      expect(run.via.seen().filter((r) => r.path.includes('/parts/'))).toEqual([])
      expect(run.ms).toBeLessThan(20_000)
      // Given up (nothing of it staged), so the same publish goes through at once.
      const rerun = await behindProxy(`parts-${id}-rerun`, args, () => undefined)
      expect(rerun.code, rerun.stderr ?? rerun.stdout).toBe(0)
    }
  }, 120_000)

  it('an endless staging answer: exit 5 once past the cap, with little of it read', async () => {
    const args = await publishArgs('mf-stage-endless', '1.0.0', 4_000)
    const run = await behindProxy('stage-endless', args, (r) =>
      isStage(r, 'mf-stage-endless') ? { kind: 'endless-body' } : undefined,
    )
    expect(run.code, run.stderr ?? run.stdout).toBe(5)
    expect(run.failure.message).toContain('more than 262144 bytes')
    // The cap plus what sat in socket buffers when the CLI stopped reading; unbounded before.
    expect(run.via.bodyBytes()).toBeLessThan(32 * 1024 * 1024)
    expect(run.ms).toBeLessThan(20_000)
  }, 30_000)

  it('the publishing answer not JSON: the CLI finds the version published as it signed it, exit 0', async () => {
    const args = await publishArgs('mf-commit-html', '1.0.0', 4_000)
    const run = await behindProxy('commit-html', args, (r) =>
      r.method === 'PUT' && r.path === '/v1/publish/mf-commit-html/1.0.0/blob'
        ? { kind: 'replace-body', body: '<html><body>Bad gateway</body></html>' }
        : undefined,
    )
    expect(run.code, run.stderr ?? run.stdout).toBe(0)
    expect(run.json?.published).toMatchObject({ version: '1.0.0', settled: 'answer-lost' })
    expect(await publishedVersions('mf-commit-html')).toEqual(['1.0.0'])
  })

  it('a 5xx answer to the publishing request after its commit landed: the CLI finds it published, exit 0', async () => {
    const args = await publishArgs('mf-commit-5xx', '1.0.0', 4_000)
    let commits = 0
    const run = await behindProxy('commit-5xx', args, (r) => {
      if (r.method !== 'PUT' || r.path !== '/v1/publish/mf-commit-5xx/1.0.0/blob') return undefined
      commits++
      return { kind: 'fail-after-forward', status: 500 }
    })
    expect(run.code, run.stderr ?? run.stdout).toBe(0)
    expect(run.json?.published).toMatchObject({ version: '1.0.0', settled: 'answer-lost' })
    // The edge committed the first request; the CLI read the result back instead of sending it again.
    expect(commits).toBe(1)
    expect(await publishedVersions('mf-commit-5xx')).toEqual(['1.0.0'])
  })

  it('a 5xx answer to the publishing request that never reached the edge: exit 5, nothing published', async () => {
    const args = await publishArgs('mf-commit-5xx-lost', '1.0.0', 4_000)
    const run = await behindProxy('commit-5xx-lost', args, (r) =>
      r.method === 'PUT' && r.path === '/v1/publish/mf-commit-5xx-lost/1.0.0/blob'
        ? { kind: 'html-error' }
        : undefined,
    )
    expect(run.code, run.stderr ?? run.stdout).toBe(5)
    expect(await publishedVersions('mf-commit-5xx-lost')).toEqual([])
  })

  it('the publishing answer not JSON and the index unreadable: exit 5, saying the version is most likely published', async () => {
    const args = await publishArgs('mf-commit-blind', '1.0.0', 4_000)
    let committed = false
    const run = await behindProxy('commit-blind', args, (r) => {
      if (r.method === 'PUT' && r.path === '/v1/publish/mf-commit-blind/1.0.0/blob') {
        committed = true
        return { kind: 'replace-body', body: '<html><body>Bad gateway</body></html>' }
      }
      return committed && r.method === 'GET' ? { kind: 'unavailable' } : undefined
    })
    expect(run.code, run.stderr ?? run.stdout).toBe(5)
    expect(run.failure).toMatchObject({ code: 'edge-rejected', likelyPublished: true })
    expect(run.failure.message).toContain('not JSON')
    expect(run.failure.message).toContain('most likely published')
    expect(await publishedVersions('mf-commit-blind')).toEqual(['1.0.0'])
  })

  it('a multipart part’s answer cut mid-body: exit 4, the upload given up and nothing published', async () => {
    const args = await publishArgs('mf-part-cut', '1.0.0', 6 * 1024 * 1024 + 100_000)
    const run = await behindProxy('part-cut', args, (r) =>
      r.method === 'PUT' && /^\/v1\/publish\/mf-part-cut\/1\.0\.0\/uploads\/[^/]+\/parts\/1$/.test(r.path)
        ? { kind: 'reset' }
        : undefined,
    )
    expect(run.code, run.stderr ?? run.stdout).toBe(4)
    expect(run.failure.code).toBe('network')
    expect(run.via.seen().some((r) => r.method === 'DELETE' && r.path.includes('/uploads/'))).toBe(true)
    expect(await publishedVersions('mf-part-cut')).toEqual([])
  }, 30_000)
})

describe('deltaport publish building deltas from damaged answers', () => {
  it('a runtime config answer of another shape: exit 5 before any delta is built', async () => {
    const args = await publishArgs('mf-config', '1.0.0', 4_000, [])
    const run = await behindProxy('config', args, (r) =>
      r.path === '/v1/config'
        ? { kind: 'replace-body', body: '{"inForce":{"delta":{"fromLastN":"many"}}}' }
        : undefined,
    )
    expect(run.code, run.stderr ?? run.stdout).toBe(5)
    expect(run.failure.message).toContain('the answer to reading the runtime config that is malformed')
    expect(await publishedVersions('mf-config')).toEqual([])
  })

  it('a previous version’s blob cut mid-body: exit 4 (network), nothing published', async () => {
    const first = await writeArtifact(suite.ws.dir, 'mf-source-cut-1.bin', 200_000)
    await suite.publish(first.path, 'mf-source-cut', '1.0.0')
    const args = await publishArgs('mf-source-cut', '1.1.0', 200_000, ['--deltas-from', '1'])
    const run = await behindProxy('source-cut', args, (r) =>
      r.method === 'GET' && r.path === '/v1/artifacts/mf-source-cut/1.0.0/blob'
        ? { kind: 'reset' }
        : undefined,
    )
    expect(run.code, run.stderr ?? run.stdout).toBe(4)
    expect(run.failure.code).toBe('network')
    expect(await publishedVersions('mf-source-cut')).toEqual(['1.0.0'])
  })

  it('a previous version’s blob that never ends: exit 8 once past its listed size, not unbounded memory', async () => {
    const first = await writeArtifact(suite.ws.dir, 'mf-source-endless-1.bin', 100_000)
    await suite.publish(first.path, 'mf-source-endless', '1.0.0')
    const args = await publishArgs('mf-source-endless', '1.1.0', 100_000, ['--deltas-from', '1'])
    const run = await behindProxy('source-endless', args, (r) =>
      r.method === 'GET' && r.path === '/v1/artifacts/mf-source-endless/1.0.0/blob'
        ? { kind: 'endless-body' }
        : undefined,
    )
    expect(run.code, run.stderr ?? run.stdout).toBe(8)
    expect(run.failure.message).toContain('longer than the 100000 bytes its index lists')
    expect(run.via.bodyBytes()).toBeLessThan(32 * 1024 * 1024)
    expect(await publishedVersions('mf-source-endless')).toEqual(['1.0.0'])
  }, 30_000)
})

describe('deltaport resign when the edge’s answer is damaged on the way', () => {
  it('a re-sign answer that is not JSON: exit 5 (edge-rejected), not a bug', async () => {
    const artifact = await writeArtifact(suite.ws.dir, 'mf-resign.bin', 2_000)
    await suite.publish(artifact.path, 'mf-resign', '1.0.0')
    const run = await behindProxy('resign', ['resign', 'mf-resign@1.0.0'], (r) =>
      r.method === 'PUT' && r.path === '/v1/publish/mf-resign/1.0.0/manifest'
        ? { kind: 'replace-body', body: 'Service temporarily unavailable' }
        : undefined,
    )
    expect(run.code, run.stderr ?? run.stdout).toBe(5)
    expect(run.failure.message).toContain('the answer to re-signing mf-resign@1.0.0 that is not JSON')
  })

  it('reads the index once for each use of it, reading every answer it asks for', async () => {
    const first = await writeArtifact(suite.ws.dir, 'mf-index-reads-1.bin', 20_000)
    await suite.publish(first.path, 'mf-index-reads', '1.0.0')
    const args = await publishArgs('mf-index-reads', '1.1.0', 20_000, ['--deltas-from', '1'])
    const run = await behindProxy('index-reads', args, () => undefined)
    expect(run.code, run.stderr ?? run.stdout).toBe(0)
    const indexReads = run.via
      .seen()
      .filter((r) => r.method === 'GET' && r.path === '/v1/artifacts/mf-index-reads')
    // Once to sign the publish (is the version free, which serial follows) and once to pick the versions
    // the deltas start from; each used to be asked for twice, the status alone first.
    expect(indexReads.length).toBe(2)
  })
})
