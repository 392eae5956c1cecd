/**
 * `deltaport publish` against an edge that checks signatures (MAINTAINER_KEYS, ADR 0031): the
 * maintainer whose key the edge lists publishes; anyone else holding the publish token gets a clear
 * refusal and leaves nothing behind.
 */
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { EdgeClient } from '../edge-client.ts'
import { AgentError } from '../errors.ts'
import { publishArtifact } from '../publish.ts'
import { generateKeyPair, type KeyPairFiles } from '../signing.ts'
import { makeWorkspace, type Workspace, writeArtifact } from './fixtures.ts'
import { type LocalEdge, startLocalEdge, TEST_TOKEN } from './local-edge.ts'

let edge: LocalEdge
let ws: Workspace
let maintainer: KeyPairFiles
let maintainerKeyFile: string

beforeAll(async () => {
  maintainer = await generateKeyPair()
  edge = await startLocalEdge({ MAINTAINER_KEYS: maintainer.publicKey })
  // The workspace's own key is not in MAINTAINER_KEYS: a token holder without the maintainer's key.
  ws = await makeWorkspace(edge.url)
  maintainerKeyFile = join(ws.dir, 'maintainer-listed.key.json')
  await writeFile(maintainerKeyFile, JSON.stringify(maintainer))
})
afterAll(async () => {
  await edge?.dispose()
})

describe('publishing to an edge with MAINTAINER_KEYS', () => {
  it('refuses a manifest signed by an unlisted key and accepts the listed maintainer', async () => {
    const art = await writeArtifact(ws.dir, 'gated.bin', 20_000)
    const publish = (keyFile: string) =>
      publishArtifact({
        edgeUrl: edge.url,
        token: TEST_TOKEN,
        keyFile,
        file: art.path,
        name: 'gated',
        version: '1.0.0',
      })

    const refused = await publish(ws.keyFile).then(
      () => null,
      (error: unknown) => error,
    )
    expect(refused).toBeInstanceOf(AgentError)
    expect((refused as AgentError).code).toBe('edge-rejected')
    expect((refused as AgentError).details.status).toBe(422)
    expect((refused as AgentError).message).toContain('MAINTAINER_KEYS')
    // Nothing was staged: the artifact is still unknown, and the listed maintainer's publish of the
    // same version is not blocked by a pending manifest.
    await expect(new EdgeClient(edge.url).index('gated')).rejects.toMatchObject({ code: 'not-found' })

    const published = await publish(maintainerKeyFile)
    expect(published).toMatchObject({ name: 'gated', version: '1.0.0', serial: 1 })
    const index = await new EdgeClient(edge.url).index('gated')
    expect(index?.versions.map((v) => v.version)).toEqual(['1.0.0'])
  })
})
