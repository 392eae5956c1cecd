import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { EdgeClient } from '../edge-client.ts'
import { publishArtifact } from '../publish.ts'
import { generateKeyPair } from '../signing.ts'
import { agentFailure, writeArtifact } from './fixtures.ts'
import { TEST_TOKEN, useEdgeWorkspace } from './local-edge.ts'

/**
 * `deltaport publish` signs the edge's latest serial + 1. An edge that lies about the latest serial (a
 * compromised Worker, a man in the middle) must not get the maintainer to sign a serial near 2^53: no
 * later release could get above it, and every device that installed it would refuse them all (a
 * fast-forward with no stolen key). The latest serial must be vouched for by a manifest a trusted key
 * signed, or lie within the edge's own step bound (2^32) of one.
 */

const suite = useEdgeWorkspace()

/**
 * A fetch that answers the artifact's index with `latestSerial` raised, and with `forgeEntry` its newest
 * entry claiming that serial too (its manifest, genuine, still says otherwise).
 */
function inflatingIndex(name: string, latestSerial: number, forgeEntry = false) {
  const sent: string[] = []
  const fetchImpl: typeof fetch = async (input, init) => {
    const url = new URL(input instanceof Request ? input.url : String(input))
    if ((init?.method ?? 'GET') !== 'GET') sent.push(`${init?.method} ${url.pathname}`)
    const response = await fetch(input, init)
    if (url.pathname !== `/v1/artifacts/${name}` || !response.ok) return response
    const index = (await response.json()) as { latestSerial: number; versions: Array<{ serial: number }> }
    const newest = index.versions.at(-1)
    if (newest && forgeEntry) newest.serial = latestSerial
    index.latestSerial = latestSerial
    return new Response(JSON.stringify(index), { headers: { 'content-type': 'application/json' } })
  }
  return { fetchImpl, sent }
}

async function publishWith(
  name: string,
  version: string,
  extra: Partial<Parameters<typeof publishArtifact>[0]>,
) {
  const artifact = await writeArtifact(suite.ws.dir, `${name}-${version}.bin`, 3_000)
  return publishArtifact({
    edgeUrl: suite.edge.url,
    token: TEST_TOKEN,
    keyFile: suite.ws.keyFile,
    file: artifact.path,
    name,
    version,
    ...extra,
  })
}

describe('publish against an edge lying about the latest serial', () => {
  for (const forgeEntry of [false, true])
    it(`refuses to sign a serial near 2^53 no signed manifest vouches for, sending nothing${forgeEntry ? ' (an entry forged to carry it)' : ''}`, async () => {
      const name = forgeEntry ? 'ff-forged' : 'ff-lie'
      await publishWith(name, '1.0.0', {})
      const hostile = inflatingIndex(name, 2 ** 53 - 2, forgeEntry)
      const error = await agentFailure(publishWith(name, '1.1.0', { fetchImpl: hostile.fetchImpl }))
      expect(error.code).toBe('untrusted-index')
      expect(error.message).toContain(`the edge says the latest serial of ${name} is ${2 ** 53 - 2}`)
      expect(error.details).toMatchObject({ latestSerial: 2 ** 53 - 2, vouchedSerial: 0 })
      // Nothing signed left the machine: no staged manifest, no upload.
      expect(hostile.sent).toEqual([])
      // The honest edge still publishes it with the next serial.
      expect(await publishWith(name, '1.1.0', {})).toMatchObject({ version: '1.1.0', serial: 2 })
    })

  it('takes a lie within the edge’s own step bound (2^32) above the newest signed serial', async () => {
    await publishWith('ff-step', '1.0.0', {})
    // 1.0.0 (serial 1) vouches for a latest up to 1 + 2^32, which the edge's own bound also takes.
    const hostile = inflatingIndex('ff-step', 2 ** 32)
    const published = await publishWith('ff-step', '1.1.0', { fetchImpl: hostile.fetchImpl })
    expect(published).toMatchObject({ version: '1.1.0', serial: 2 ** 32 + 1 })
  })

  it('still publishes after the latest release’s key was rotated out (serials far below the bound)', async () => {
    const formerKey = join(suite.ws.dir, 'ff-former.key.json')
    await writeFile(formerKey, JSON.stringify(await generateKeyPair()))
    await publishWith('ff-rotated', '1.0.0', { keyFile: formerKey })
    const published = await publishWith('ff-rotated', '1.1.0', {})
    expect(published).toMatchObject({ version: '1.1.0', serial: 2 })
    expect((await new EdgeClient(suite.edge.url).index('ff-rotated')).latestSerial).toBe(2)
  })
})
