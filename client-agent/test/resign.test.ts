import { execFile } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import { EdgeClient } from '../edge-client.ts'
import { AgentError } from '../errors.ts'
import { installArtifact } from '../install.ts'
import { publishArtifact } from '../publish.ts'
import { resignManifests } from '../resign.ts'
import { generateKeyPair } from '../signing.ts'
import { writeArtifact } from './fixtures.ts'
import { TEST_TOKEN, useEdgeWorkspace } from './local-edge.ts'

const suite = useEdgeWorkspace()
const inDays = (days: number) => new Date(Date.now() + days * 86_400_000)
const BIN = join(import.meta.dirname, '..', 'bin', 'deltaport.ts')

async function publish(name: string, version: string, expiresInDays: number) {
  const art = await writeArtifact(suite.ws.dir, `${name}-${version}.bin`, 2_000)
  await suite.publish(art.path, name, version, { expiresInDays })
}

describe('re-signing published manifests', () => {
  it('keeps an expiring version installable: re-signs what expires soon, after checking its signature', async () => {
    await publish('aging', '1.0.0', 1)
    await publish('aging', '1.1.0', 365)
    const expired = await installArtifact(suite.ws.config, { name: 'aging', target: '1.0.0', now: inDays(2) })
      .then(() => null)
      .catch((e: unknown) => e)
    expect(expired).toBeInstanceOf(AgentError)
    expect((expired as AgentError).code).toBe('untrusted-manifest')

    // Another maintainer's key refuses to vouch for what it cannot verify, unless the config trusts it.
    const otherKey = join(suite.ws.dir, 'other.key.json')
    await writeFile(otherKey, JSON.stringify(await generateKeyPair()))
    const base = {
      edgeUrl: suite.edge.url,
      token: TEST_TOKEN,
      name: 'aging',
      withinDays: 30,
      expiresInDays: 90,
    }
    await expect(resignManifests({ ...base, keyFile: otherKey, trustedKeys: [] })).rejects.toMatchObject({
      code: 'untrusted-manifest',
    })

    // Asked for one version, it names who signed it and how to vouch for them (a key revoked since).
    const signer = suite.ws.config.trustedKeys[0]?.keyid ?? ''
    await expect(
      resignManifests({ ...base, version: '1.0.0', keyFile: otherKey, trustedKeys: [] }),
    ).rejects.toMatchObject({
      code: 'untrusted-manifest',
      message: expect.stringContaining(
        `It names the signers ${signer}: if they are maintainer keys since revoked or dropped and these bytes are good, re-sign with a config that lists them in trustedKeys`,
      ),
    })

    const done = await resignManifests({ ...base, keyFile: suite.ws.keyFile, trustedKeys: [] })
    expect(done.map((r) => r.version)).toEqual(['1.0.0'])
    const installed = await installArtifact(suite.ws.config, {
      name: 'aging',
      target: '1.0.0',
      now: inDays(2),
    })
    expect(installed).toMatchObject({ version: '1.0.0', method: 'full' })

    // Key rotation: the new key re-signs manifests the old (still trusted) key signed.
    const rotated = await resignManifests({
      ...base,
      version: '1.1.0',
      keyFile: otherKey,
      trustedKeys: suite.ws.config.trustedKeys,
    })
    expect(rotated).toMatchObject([{ version: '1.1.0' }])
  })

  it('runs from the CLI, re-signing nothing when nothing expires soon', async () => {
    await publish('fresh', '1.0.0', 365)
    const { stdout } = await promisify(execFile)(
      process.execPath,
      [BIN, '--config', suite.ws.configFile, '--json', 'resign', 'fresh', '--within', '30'],
      { env: { ...process.env, DELTAPORT_TOKEN: TEST_TOKEN } },
    )
    expect(JSON.parse(stdout)).toMatchObject({ ok: true, resigned: [] })
    const one = await promisify(execFile)(
      process.execPath,
      [BIN, '--config', suite.ws.configFile, '--json', 'resign', 'fresh@1.0.0', '--expires-days', '500'],
      { env: { ...process.env, DELTAPORT_TOKEN: TEST_TOKEN } },
    )
    const [resigned] = JSON.parse(one.stdout).resigned as Array<{ expires: string }>
    expect(Date.parse(resigned?.expires ?? '')).toBeGreaterThan(inDays(499).getTime())
  })

  it('in the batch form, a version it may not vouch for does not stop the others being re-signed', async () => {
    // 1.0.0 was signed by a former maintainer no longer trusted; 1.1.0 expires as soon and is ours.
    const formerKey = join(suite.ws.dir, 'former.key.json')
    await writeFile(formerKey, JSON.stringify(await generateKeyPair()))
    const old = await writeArtifact(suite.ws.dir, 'mixed-1.0.0.bin', 2_000)
    await publishArtifact({
      edgeUrl: suite.edge.url,
      token: TEST_TOKEN,
      keyFile: formerKey,
      file: old.path,
      name: 'mixed',
      version: '1.0.0',
      expiresInDays: 5,
    })
    await publish('mixed', '1.1.0', 5)
    const base = { edgeUrl: suite.edge.url, token: TEST_TOKEN, name: 'mixed', trustedKeys: [] }
    const refused = await resignManifests({
      ...base,
      keyFile: suite.ws.keyFile,
      withinDays: 30,
      expiresInDays: 90,
    }).catch((e: unknown) => e)
    // Still a failure (a cron job must notice), naming what was refused and what was done.
    expect(refused).toBeInstanceOf(AgentError)
    expect((refused as AgentError).code).toBe('untrusted-manifest')
    expect((refused as AgentError).message).toContain('mixed@1.0.0')
    expect((refused as AgentError).details).toMatchObject({
      refused: ['1.0.0'],
      resigned: [{ version: '1.1.0' }],
    })
    const edge = new EdgeClient(suite.edge.url)
    expect(Date.parse((await edge.manifest('mixed', '1.1.0')).signed.expires)).toBeGreaterThan(
      inDays(89).getTime(),
    )
    expect(Date.parse((await edge.manifest('mixed', '1.0.0')).signed.expires)).toBeLessThan(
      inDays(6).getTime(),
    )
  })

  it('in the batch form, never moves an expiry earlier (--expires-days below --within)', async () => {
    await publish('short', '1.0.0', 3)
    await publish('short', '1.1.0', 25)
    const done = await resignManifests({
      edgeUrl: suite.edge.url,
      token: TEST_TOKEN,
      name: 'short',
      keyFile: suite.ws.keyFile,
      trustedKeys: [],
      withinDays: 30,
      expiresInDays: 10,
    })
    expect(done.map((r) => r.version)).toEqual(['1.0.0'])
    const edge = new EdgeClient(suite.edge.url)
    expect(Date.parse((await edge.manifest('short', '1.1.0')).signed.expires)).toBeGreaterThan(
      inDays(24).getTime(),
    )
  })
  it("refuses to re-sign another version's manifest an edge serves in its place (no fresh expiry for it)", async () => {
    // 1.0.0 expired on purpose (superseded); a hostile edge answers the request for 1.1.0's manifest
    // with 1.0.0's genuine one, and keeps whatever the maintainer then signs.
    await publish('swapped', '1.0.0', 1)
    await publish('swapped', '1.1.0', 2)
    const genuineOld = await new EdgeClient(suite.edge.url).manifest('swapped', '1.0.0')
    const puts: Array<{ path: string; body: string }> = []
    const hostile: typeof fetch = async (input, init) => {
      const url = new URL(input instanceof Request ? input.url : String(input))
      if (init?.method === 'PUT') puts.push({ path: url.pathname, body: String(init.body) })
      if (url.pathname === '/v1/artifacts/swapped/1.1.0/manifest')
        return new Response(JSON.stringify(genuineOld), { headers: { 'content-type': 'application/json' } })
      return fetch(input, init)
    }
    const base = {
      edgeUrl: suite.edge.url,
      token: TEST_TOKEN,
      name: 'swapped',
      keyFile: suite.ws.keyFile,
      trustedKeys: [],
      withinDays: 30,
      expiresInDays: 365,
      fetchImpl: hostile,
    }
    const refusal = {
      code: 'untrusted-manifest',
      message: expect.stringContaining('but it describes swapped@1.0.0; refusing to re-sign it'),
    }
    // Asked for one version: nothing signed, nothing sent for the edge to keep.
    await expect(resignManifests({ ...base, version: '1.1.0' })).rejects.toMatchObject(refusal)
    expect(puts).toEqual([])
    // The batch form (cron): 1.0.0 itself is re-signed as asked, but never under 1.1.0's name.
    await expect(resignManifests(base)).rejects.toMatchObject(refusal)
    expect(puts.map((p) => p.path)).toEqual(['/v1/publish/swapped/1.0.0/manifest'])
  })
})
