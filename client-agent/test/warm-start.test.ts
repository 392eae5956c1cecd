import { randomBytes } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { TransferLink } from '../../schemas/transfer-links.ts'
import { installArtifact } from '../install.ts'
import { ArtifactStore } from '../store.ts'
import { LinkMemory, originOf } from '../transfer/link-memory.ts'
import { publishWithDelta } from './delta-update.ts'
import { expectSameBytes } from './fixtures.ts'
import { useEdgeWorkspace } from './local-edge.ts'

const suite = useEdgeWorkspace()

/** A patch release of `previous`: a few places edited and 2 kB inserted (a delta of a few kB). */
function release(previous: Buffer, seed: number): Buffer {
  const next = Buffer.from(previous)
  for (let i = 0; i < 6; i++) randomBytes(300).copy(next, (seed * 7919 + i * 300_007) % (next.length - 300))
  return Buffer.concat([next.subarray(0, 1_000_000), randomBytes(2000), next.subarray(1_000_000)])
}

describe('warm start of the range controller across updates', () => {
  it("starts the next update's controller from the link the last one learnt of the edge", async () => {
    const name = 'warm'
    const config = { ...suite.ws.config, installRoot: join(suite.ws.dir, 'store-warm') }
    const links = new LinkMemory(config.installRoot)
    const origin = originOf(suite.edge.url)
    expect(origin).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/)
    const storedLink = async () => {
      const file = JSON.parse(await readFile(links.path, 'utf8'))
      expect(file.version).toBe(1)
      expect(file.links).toHaveLength(1)
      return TransferLink.parse(file.links[0])
    }
    let bytes: Buffer = randomBytes(2 * 1024 * 1024)
    const publishNext = async (version: string, seed: number) => {
      bytes = release(bytes, seed)
      const file = join(suite.ws.dir, `${name}-${version}.bin`)
      await writeFile(file, bytes)
      await publishWithDelta(suite, name, file, version)
    }
    const update = async (version: string) => {
      const result = await installArtifact(config, { name, target: version })
      expect(result.method).toBe('delta')
      const store = new ArtifactStore(config.installRoot, name)
      expectSameBytes(await readFile(join(store.currentLink, 'blob')), bytes)
      return result
    }

    const v1 = join(suite.ws.dir, `${name}-1.0.0.bin`)
    await writeFile(v1, bytes)
    await suite.publish(v1, name, '1.0.0')
    await installArtifact(config, { name, target: '1.0.0' })
    // A full download uses no controller: nothing is learnt, nothing saved.
    expect(await links.links()).toEqual([])

    // Cold: the first delta stream's controller starts in startup, and its end state is saved.
    await publishNext('1.1.0', 1)
    const first = await update('1.1.0')
    expect(first.transferStart?.phase).toBe('startup')
    const learnt = await storedLink()
    expect(learnt.origin).toBe(origin)
    expect(learnt.bandwidthBytesPerSec).toBeGreaterThan(0)
    expect(Date.now() - learnt.savedAt).toBeLessThan(60_000)

    // Warm: the next update's controller skips startup and starts from the saved estimates (its
    // windows hold them beside what block 0 measured: bandwidth a max, RTT a min).
    await publishNext('1.2.0', 2)
    const second = await update('1.2.0')
    expect(second.transferStart?.phase).toBe('probe')
    expect(second.transferStart?.bandwidthBytesPerSec).toBeGreaterThanOrEqual(learnt.bandwidthBytesPerSec)
    expect(second.transferStart?.minRttMs).toBeLessThanOrEqual(learnt.minRttMs)
    expect((await storedLink()).savedAt).toBeGreaterThanOrEqual(learnt.savedAt)

    // A garbled file is a cold start, not a failed update, and the update writes a valid one again.
    await writeFile(links.path, '{"version":1,"links":[{"origin":')
    await publishNext('1.3.0', 3)
    const third = await update('1.3.0')
    expect(third.transferStart?.phase).toBe('startup')
    expect((await storedLink()).origin).toBe(origin)
  })
})
