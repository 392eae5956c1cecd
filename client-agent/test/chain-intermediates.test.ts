import { randomBytes } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { SignedManifest } from '../../schemas/manifest.ts'
import { installArtifact } from '../install.ts'
import { publishArtifact } from '../publish.ts'
import { buildDeltasFromPrevious } from '../publish-deltas.ts'
import { ArtifactStore } from '../store.ts'
import { expectSameBytes, makeWorkspace, type Workspace } from './fixtures.ts'
import { type LocalEdge, startLocalEdge, TEST_TOKEN } from './local-edge.ts'

/**
 * A chain's intermediate versions are older releases: only a means to the target, whose own fresh
 * signed manifest checks the final bytes. Their manifests may have expired since (90 days by default),
 * or an edge may serve one that does not verify; neither may fail an update the full download can do.
 */
let edge: LocalEdge
let ws: Workspace
const versions: Buffer[] = []
const DAY = 86_400_000

function release(previous: Buffer | undefined): Buffer {
  if (!previous) return randomBytes(1024 * 1024)
  const next = Buffer.from(previous)
  randomBytes(300).copy(next, 400_000)
  return Buffer.concat([next.subarray(0, 700_000), randomBytes(2000), next.subarray(700_000)])
}

async function publish(name: string, version: string, bytes: Buffer, expiresInDays: number) {
  const file = join(ws.dir, `${name}-${version}.bin`)
  await writeFile(file, bytes)
  const deltas = await buildDeltasFromPrevious(edge.url, name, file, 1)
  await publishArtifact({
    edgeUrl: edge.url,
    token: TEST_TOKEN,
    keyFile: ws.keyFile,
    file,
    name,
    version,
    deltas,
    expiresInDays,
  })
}

beforeAll(async () => {
  edge = await startLocalEdge()
  ws = await makeWorkspace(edge.url)
  for (let i = 0; i < 3; i++) versions.push(release(versions[i - 1]))
  // 1.1.0's manifest expires after a day; 1.2.0 has a delta only from 1.1.0, so 1.0.0 → 1.2.0 chains.
  for (const name of ['old', 'forged']) {
    await publish(name, '1.0.0', versions[0]!, 90)
    await publish(name, '1.1.0', versions[1]!, 1)
    await publish(name, '1.2.0', versions[2]!, 90)
  }
}, 120_000)
afterAll(async () => {
  await edge?.dispose()
})

async function device() {
  const other = await makeWorkspace(edge.url)
  other.config.trustedKeys = ws.config.trustedKeys
  return other
}

describe('a chain through an older release', () => {
  it('is followed when the intermediate manifest has expired since: the target checks the bytes', async () => {
    const d = await device()
    await installArtifact(d.config, { name: 'old', target: '1.0.0' })
    const later = new Date(Date.now() + 2 * DAY)
    const result = await installArtifact(d.config, { name: 'old', target: '1.2.0', now: later })
    expect(result).toMatchObject({ version: '1.2.0', method: 'chain' })
    expect(result.bytesDownloaded).toBeLessThan(versions[2]!.length / 10)
    const store = new ArtifactStore(d.config.installRoot, 'old')
    expectSameBytes(await readFile(join(store.currentLink, 'blob')), versions[2]!)
    // The target itself expired is still refused: only intermediates are exempt.
    await expect(
      installArtifact(d.config, { name: 'old', target: '1.1.0', now: later, allowDowngrade: true }),
    ).rejects.toMatchObject({ code: 'untrusted-manifest' })
  })

  it('falls back to the full download when the edge serves an intermediate manifest that does not verify', async () => {
    const d = await device()
    await installArtifact(d.config, { name: 'forged', target: '1.0.0' })
    // The edge (or something in between) serves 1.1.0's manifest with a signature that does not verify.
    const forging: typeof fetch = async (input, init) => {
      const response = await fetch(input, init)
      const url = new URL(input instanceof Request ? input.url : String(input))
      if (!/\/forged\/1\.1\.0\/manifest$|\/forged\/versions\/1\.1\.0$/.test(url.pathname)) return response
      if (!response.ok) return response
      const envelope = SignedManifest.parse(await response.json())
      const tampered = { ...envelope, signed: { ...envelope.signed, serial: envelope.signed.serial + 1 } }
      return new Response(JSON.stringify(tampered), { status: 200, headers: response.headers })
    }
    const result = await installArtifact(d.config, { name: 'forged', target: '1.2.0', fetchImpl: forging })
    expect(result).toMatchObject({ version: '1.2.0', method: 'full' })
    expect(result.fallbacks.join('\n')).toMatch(/1\.1\.0/)
    const store = new ArtifactStore(d.config.installRoot, 'forged')
    expectSameBytes(await readFile(join(store.currentLink, 'blob')), versions[2]!)
  })
})
