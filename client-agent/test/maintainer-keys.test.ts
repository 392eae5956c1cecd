/**
 * `deltaport publish` against an edge that checks signatures (MAINTAINER_KEYS, ADR 0031): the
 * maintainer whose key the edge lists publishes; anyone else holding the publish token gets a clear
 * refusal and leaves nothing behind. Rollout control signed the same way (ADR 0038).
 */
import { execFile } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { EdgeClient } from '../edge-client.ts'
import { AgentError } from '../errors.ts'
import { publishArtifact } from '../publish.ts'
import { controlRollout } from '../rollout/client.ts'
import { generateKeyPair, type KeyPairFiles } from '../signing.ts'
import { agentFailure, cliFailure, makeWorkspace, type Workspace, writeArtifact } from './fixtures.ts'
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

describe('rollout control signed for an edge with MAINTAINER_KEYS', () => {
  it('signs with the configured key, --key or not at all (--unsigned), and the edge tells them apart', async () => {
    for (const version of ['1.0.0', '2.0.0']) {
      const art = await writeArtifact(ws.dir, `steered-${version}.bin`, 5_000)
      await publishArtifact({
        edgeUrl: edge.url,
        token: TEST_TOKEN,
        keyFile: maintainerKeyFile,
        file: art.path,
        name: 'steered',
        version,
      })
    }
    const cli = (...args: string[]) =>
      promisify(execFile)(
        process.execPath,
        [
          join(import.meta.dirname, '..', 'bin', 'deltaport.ts'),
          '--config',
          ws.configFile,
          '--json',
          ...args,
        ],
        { env: { ...process.env, DELTAPORT_TOKEN: TEST_TOKEN } },
      )
    // The config's signingKey is not a maintainer's: the start is refused by the edge, nothing starts.
    const refused = await cliFailure(cli('rollout', 'start', 'steered', '--version', '2.0.0'))
    expect(refused?.code).toBe(5)
    expect(refused?.stdout).toContain('the start statement for the stable rollout of steered')
    const edgeClient = new EdgeClient(edge.url)
    const status = () => controlRollout(edgeClient, TEST_TOKEN, 'steered', 'stable', 'status')
    expect((await agentFailure(status())).code).toBe('not-found')

    const started = await cli('rollout', 'start', 'steered', '--version', '2.0.0', '--key', maintainerKeyFile)
    const history = () => status().then((s) => s.history)
    expect((await history())[0]).toMatchObject({ event: 'scheduled', signedAt: expect.any(String) })
    expect(JSON.parse(started.stdout).rollout.state).toBe('running')
    // Token alone (the edge does not require statements here): done, and recorded as unsigned.
    await cli('rollout', 'pause', 'steered', '--unsigned', '--reason', 'token only')
    expect((await history()).at(-1)).toEqual(expect.not.objectContaining({ signedAt: expect.anything() }))
    const resumed = await controlRollout(edgeClient, TEST_TOKEN, 'steered', 'stable', 'resume', undefined, [
      maintainerKeyFile,
    ])
    expect(resumed.state).toBe('running')
    expect(resumed.history.at(-1)).toMatchObject({ event: 'resumed', signedAt: expect.any(String) })
  })
})
