import { describe, expect, it } from 'vitest'
import type { Published } from '../../schemas/publish.ts'
import { EdgeClient } from '../edge-client.ts'
import { AgentError } from '../errors.ts'
import { type PublishRequest, publishArtifact } from '../publish.ts'
import { writeArtifact } from './fixtures.ts'
import { TEST_TOKEN, useEdgeWorkspace } from './local-edge.ts'

/**
 * Two publishes of one artifact at once (two CI jobs releasing different versions): both read the same
 * latest serial and sign the next one, and the edge lets only the first commit have it. The second is
 * signed again with a fresh serial and committed against the bytes it already uploaded.
 */
const suite = useEdgeWorkspace()

/** What one publish asked of the edge, as "METHOD path-after-the-version". */
interface Recorded {
  requests: string[]
}

/**
 * A fetch that records the publish's requests and runs `beforeBlob` before its blob PUT goes out: the
 * test's way to put another publish between this one's index read and its commit. The requests
 * themselves go to the real edge unchanged.
 */
function recordingFetch(recorded: Recorded, beforeBlob: () => Promise<void> = async () => undefined) {
  let blobSeen = false
  const recording: typeof fetch = async (input, init) => {
    const url = new URL(String(input instanceof Request ? input.url : input))
    const method = init?.method ?? 'GET'
    const match = /^\/v1\/publish\/[^/]+\/[^/]+(\/.*)?$/.exec(url.pathname)
    if (match) recorded.requests.push(`${method} ${match[1] ?? '/'}`)
    if (method === 'PUT' && match?.[1] === '/blob' && !blobSeen) {
      blobSeen = true
      await beforeBlob()
    }
    return fetch(input, init)
  }
  return recording
}

function request(
  file: string,
  version: string,
  channels: string[],
  fetchImpl: typeof fetch,
  notices: string[] = [],
): PublishRequest {
  return {
    edgeUrl: suite.edge.url,
    token: TEST_TOKEN,
    keyFile: suite.ws.keyFile,
    file,
    name: 'race',
    version,
    channels,
    fetchImpl,
    onNotice: (line) => notices.push(line),
  }
}

describe('two publishes of different versions at once', () => {
  it('both land, with increasing serials; the one that lost the serial uploads nothing twice', async () => {
    const base = await writeArtifact(suite.ws.dir, 'race-1.0.0.bin', 20_000)
    await suite.publish(base.path, 'race', '1.0.0')
    const lts = await writeArtifact(suite.ws.dir, 'race-1.4.2.bin', 300_000)
    const next = await writeArtifact(suite.ws.dir, 'race-2.1.0.bin', 300_000)

    // Both are staged with serial 2 before either uploads its bytes: a rendezvous at the blob PUT.
    let arrived = 0
    let bothThere: () => void = () => undefined
    const rendezvous = new Promise<void>((resolve) => {
      bothThere = resolve
    })
    const meet = async () => {
      arrived++
      if (arrived === 2) bothThere()
      await rendezvous
    }
    const ltsRecorded: Recorded = { requests: [] }
    const nextRecorded: Recorded = { requests: [] }
    const notices: string[] = []
    const [ltsPublished, nextPublished] = await Promise.all([
      publishArtifact(request(lts.path, '1.4.2', ['lts'], recordingFetch(ltsRecorded, meet), notices)),
      publishArtifact(request(next.path, '2.1.0', ['stable'], recordingFetch(nextRecorded, meet), notices)),
    ])

    const index = await new EdgeClient(suite.edge.url).index('race')
    const serials = Object.fromEntries(index.versions.map((v) => [v.version, v.serial]))
    expect(serials['1.0.0']).toBe(1)
    expect([serials['1.4.2'], serials['2.1.0']].sort()).toEqual([2, 3])
    expect(ltsPublished.serial).toBe(serials['1.4.2'])
    expect(nextPublished.serial).toBe(serials['2.1.0'])
    expect(index.latestSerial).toBe(3)
    expect(index.channels).toEqual({ stable: '2.1.0', lts: '1.4.2' })

    // The loser re-signed (serial 3), staged again and committed what it had uploaded: one blob PUT.
    const loser = ltsPublished.serial === 3 ? ltsRecorded : nextRecorded
    const winner = loser === ltsRecorded ? nextRecorded : ltsRecorded
    expect(loser.requests.filter((r) => r === 'PUT /blob')).toHaveLength(1)
    expect(loser.requests.filter((r) => r === 'POST /')).toHaveLength(2)
    expect(loser.requests).toContain('POST /commit')
    expect(loser.requests.filter((r) => r.startsWith('PUT /chunks'))).toHaveLength(1)
    expect(winner.requests).not.toContain('POST /commit')
    expect(notices.join('\n')).toContain('took serial 2 first; signing')

    // Devices install both: each manifest verifies and matches its bytes.
    const client = new EdgeClient(suite.edge.url)
    for (const [version, published] of [
      ['1.4.2', ltsPublished],
      ['2.1.0', nextPublished],
    ] as [string, Published][]) {
      const manifest = await client.manifest('race', version)
      expect(manifest.signed.serial).toBe(published.serial)
      expect(manifest.signed.sha256).toBe(published.sha256)
    }
  })
})

describe('a publish whose serial is taken between its index read and its commit', () => {
  it('is signed again and commits, moving its channel, when the other version is lower', async () => {
    const base = await writeArtifact(suite.ws.dir, 'forced-1.0.0.bin', 10_000)
    await suite.publish(base.path, 'forced', '1.0.0')
    const patch = await writeArtifact(suite.ws.dir, 'forced-1.0.1.bin', 10_000)
    const minor = await writeArtifact(suite.ws.dir, 'forced-1.1.0.bin', 50_000)
    const recorded: Recorded = { requests: [] }
    const fetchImpl = recordingFetch(recorded, async () => {
      await suite.publish(patch.path, 'forced', '1.0.1')
    })
    const published = await publishArtifact({
      ...request(minor.path, '1.1.0', ['stable'], fetchImpl),
      name: 'forced',
    })
    expect(published.serial).toBe(3)
    expect(published.channelsNotMoved).toEqual([])
    expect(recorded.requests.filter((r) => r === 'PUT /blob')).toHaveLength(1)
    expect(recorded.requests).toContain('POST /commit')
    const index = await new EdgeClient(suite.edge.url).index('forced')
    expect(index.versions.map((v) => [v.version, v.serial])).toEqual([
      ['1.0.0', 1],
      ['1.0.1', 2],
      ['1.1.0', 3],
    ])
    expect(index.channels.stable).toBe('1.1.0')
  })

  it('is refused when the other publish moved its channel above it (it would land as a backport)', async () => {
    const base = await writeArtifact(suite.ws.dir, 'back-1.0.0.bin', 10_000)
    await suite.publish(base.path, 'back', '1.0.0')
    const newer = await writeArtifact(suite.ws.dir, 'back-1.2.0.bin', 10_000)
    const mine = await writeArtifact(suite.ws.dir, 'back-1.1.0.bin', 30_000)
    const fetchImpl = recordingFetch({ requests: [] }, async () => {
      await suite.publish(newer.path, 'back', '1.2.0')
    })
    const refused = await publishArtifact({
      ...request(mine.path, '1.1.0', ['stable'], fetchImpl),
      name: 'back',
    })
      .then(() => null)
      .catch((error: unknown) => error)
    expect(refused).toBeInstanceOf(AgentError)
    expect(refused).toMatchObject({ code: 'edge-rejected', details: { reason: 'became-backport' } })
    expect((refused as AgentError).message).toContain('stable is now on 1.2.0')
    const index = await new EdgeClient(suite.edge.url).index('back')
    expect(index.versions.map((v) => v.version)).toEqual(['1.0.0', '1.2.0'])
    expect(index.channels.stable).toBe('1.2.0')

    // Run again, it is the maintainer's backport: published, the channel left where it is, as always.
    const notices: string[] = []
    const again = await publishArtifact({
      ...request(mine.path, '1.1.0', ['stable'], fetch, notices),
      name: 'back',
    })
    expect(again.channelsNotMoved).toEqual([{ channel: 'stable', head: '1.2.0' }])
    expect(notices.join('\n')).toContain('channel stable not moved')
  })
})
