import { execFile } from 'node:child_process'
import { copyFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import { EdgeClient } from '../edge-client.ts'
import { publishArtifact } from '../publish.ts'
import { buildDeltasFromPrevious } from '../publish-deltas.ts'
import { ArtifactStore } from '../store.ts'
import { errorFromResponse } from '../transfer/error-response.ts'
import { agentFailure, writeArtifact } from './fixtures.ts'
import { TEST_TOKEN, useEdgeWorkspace } from './local-edge.ts'

const run = promisify(execFile)
const BIN = join(import.meta.dirname, '..', 'bin', 'deltaport.ts')
const suite = useEdgeWorkspace()

async function cli(args: string[]) {
  try {
    const { stdout, stderr } = await run(process.execPath, [BIN, '--config', suite.ws.configFile, ...args], {
      env: { ...process.env, DELTAPORT_TOKEN: TEST_TOKEN },
    })
    return { code: 0, stdout, stderr }
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string }
    return { code: e.code, stdout: e.stdout, stderr: e.stderr }
  }
}

describe('publishing an older version', () => {
  it('publishes it but leaves the channel on the higher head, says so, and update does not downgrade', async () => {
    const v20 = await writeArtifact(suite.ws.dir, 'lodash-4.17.20.tgz', 40_000)
    const v21 = await writeArtifact(suite.ws.dir, 'lodash-4.17.21.tgz', 40_000)
    const v15 = await writeArtifact(suite.ws.dir, 'lodash-4.17.15.tgz', 40_000)
    expect((await cli(['publish', v20.path, '--name', 'lodash', '--version', '4.17.20'])).code).toBe(0)
    expect((await cli(['publish', v21.path, '--name', 'lodash', '--version', '4.17.21'])).code).toBe(0)
    expect((await cli(['install', 'lodash'])).code).toBe(0)

    const older = await cli(['publish', v15.path, '--name', 'lodash', '--version', '4.17.15'])
    expect(older.code).toBe(0)
    expect(older.stderr).toContain(
      'channel stable not moved: it stays on 4.17.21, a higher version than 4.17.15',
    )
    const index = await new EdgeClient(suite.edge.url).index('lodash')
    expect(index.channels.stable).toBe('4.17.21')
    expect(index.versions.map((v) => v.version)).toContain('4.17.15')

    const updated = await cli(['--json', 'update', 'lodash'])
    expect(updated.code, updated.stdout).toBe(0)
    expect((await new ArtifactStore(suite.ws.config.installRoot, 'lodash').state()).current).toBe('4.17.21')
    // Still installable by version, explicitly.
    expect((await cli(['install', 'lodash@4.17.15', '--allow-downgrade'])).code).toBe(0)
  })
})

describe('republishing a published version', () => {
  it("builds no delta; the same bytes are done at once, other bytes refused with the edge's error", async () => {
    const base = { edgeUrl: suite.edge.url, token: TEST_TOKEN, keyFile: suite.ws.keyFile, name: 'again' }
    const v1 = await writeArtifact(suite.ws.dir, 'again-1.bin', 30_000)
    const v2 = await writeArtifact(suite.ws.dir, 'again-2.bin', 30_000)
    await publishArtifact({ ...base, file: v1.path, version: '1.0.0' })
    await publishArtifact({ ...base, file: v2.path, version: '1.1.0' })

    // What the edge answers to the staged manifest of a published version, as the agent reports it.
    const signed = await new EdgeClient(suite.edge.url).manifest('again', '1.1.0')
    const edgeAnswer = await fetch(`${suite.edge.url}/v1/publish/again/1.1.0`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TEST_TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ ...signed, signed: { ...signed.signed, serial: 3 } }),
    })
    const expected = await errorFromResponse(edgeAnswer, 'starting publish of again@1.1.0')
    expect(expected.message).toContain('already published')

    // The same file again: a delta from 1.1.0 to itself would be tiny and listed, so it would be built.
    const same = join(suite.ws.dir, 'again-2-copy.bin')
    await copyFile(v2.path, same)
    const requested: string[] = []
    const recording: typeof fetch = (input, init) => {
      requested.push(String(input instanceof Request ? input.url : input))
      return fetch(input, init)
    }
    const building = buildDeltasFromPrevious(suite.edge.url, 'again', same, 5, {
      version: '1.1.0',
      fetchImpl: recording,
    })
    await expect(building).resolves.toEqual([])
    expect(requested.filter((url) => url.endsWith('/blob'))).toEqual([])

    // The same bytes: a rerun of a publish that is done (publish-idempotent.test.ts has the details).
    await expect(publishArtifact({ ...base, file: same, version: '1.1.0' })).resolves.toMatchObject({
      version: '1.1.0',
      serial: 2,
      settled: 'already-published',
    })
    const viaCli = await cli(['--json', 'publish', same, '--name', 'again', '--version', '1.1.0'])
    expect(viaCli.code, viaCli.stdout).toBe(0)
    expect(JSON.parse(viaCli.stdout).published).toMatchObject({ serial: 2, settled: 'already-published' })
    expect(viaCli.stderr).not.toContain('delta from')

    // Other bytes: the edge's refusal, saying what differs.
    const other = await agentFailure(publishArtifact({ ...base, file: v1.path, version: '1.1.0' }))
    expect(other.code).toBe('edge-rejected')
    expect(other.message.startsWith(expected.message)).toBe(true)
    expect(other.message).toContain('other bytes')
    const otherViaCli = await cli(['--json', 'publish', v1.path, '--name', 'again', '--version', '1.1.0'])
    expect(otherViaCli.code).toBe(5)
    expect(JSON.parse(otherViaCli.stdout).error.message).toBe(other.message)
    expect(otherViaCli.stderr).not.toContain('delta from')
  })
})
