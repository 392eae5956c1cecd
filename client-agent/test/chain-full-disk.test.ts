import { randomBytes } from 'node:crypto'
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { AgentConfig } from '../config.ts'
import { installArtifact } from '../install.ts'
import { buildDeltasFromPrevious } from '../publish-deltas.ts'
import { ArtifactStore } from '../store.ts'
import { expectSameBytes } from './fixtures.ts'
import { useEdgeWorkspace } from './local-edge.ts'
import { mountTmpfs } from './tmpfs.ts'

/**
 * A chain holds an intermediate version beside the one it rebuilds: up to twice the target's size on
 * the disk, where the full download needs it once (what the free-space check before the update asks
 * for). A real small disk (tmpfs, root only; skipped otherwise): 1 MiB installed, about 1.6 MiB free.
 */
const { mountPoint, mounted, remove } = await mountTmpfs('deltaport-chain-disk-', '2700k')
const SIZE = 1024 * 1024

describe.skipIf(!mounted)('a chain on a disk with room for the target once', () => {
  const suite = useEdgeWorkspace()
  let device: AgentConfig
  const versions: Buffer[] = []

  beforeAll(async () => {
    versions.push(randomBytes(SIZE))
    for (let i = 1; i < 3; i++) {
      const next = Buffer.from(versions[i - 1]!)
      randomBytes(500).copy(next, 100_000 * i)
      versions.push(next)
    }
    for (const [i, version] of ['1.0.0', '1.1.0', '1.2.0'].entries()) {
      const file = join(suite.ws.dir, `chain-${version}.bin`)
      await writeFile(file, versions[i]!)
      // 1.2.0 has a delta only from 1.1.0: from 1.0.0 the cheapest plan is the chain.
      const deltas = await buildDeltasFromPrevious(suite.edge.url, 'chain', file, 1)
      await suite.publish(file, 'chain', version, { deltas })
    }
    device = { ...suite.ws.config, installRoot: join(mountPoint, 'store'), minFreeBytes: 0 }
    await mkdir(device.installRoot)
    await installArtifact(device, { name: 'chain', target: '1.0.0' })
  })
  afterAll(remove)

  it('falls back to the full download when the disk fills mid-chain, leaving no scratch behind', async () => {
    const result = await installArtifact(device, { name: 'chain', target: '1.2.0' })
    expect(result).toMatchObject({ version: '1.2.0', method: 'full' })
    expect(result.fallbacks).toEqual([
      expect.stringMatching(/^chain: cannot write .*: no space left on device/),
    ])
    const store = new ArtifactStore(device.installRoot, 'chain')
    expectSameBytes(await readFile(join(store.currentLink, 'blob')), versions[2]!)
    // Nothing of the chain is left holding the disk: no intermediate, no payload, no journal.
    expect(await readdir(join(store.dir, 'partial')).catch(() => [])).toEqual([])
  })
})
