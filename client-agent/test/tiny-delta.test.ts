import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { installArtifact } from '../install.ts'
import { ArtifactStore } from '../store.ts'
import { publishWithDelta } from './delta-update.ts'
import { startFaultProxy } from './fault-proxy.ts'
import { expectSameBytes, writeArtifact } from './fixtures.ts'
import { useEdgeWorkspace } from './local-edge.ts'

const suite = useEdgeWorkspace()

describe('a tiny delta on the wire', () => {
  it('a ~50-byte change downloads its delta in a few small blocks, not k blocks of padding and parity', async () => {
    const name = 'tiny'
    const v1 = await writeArtifact(suite.ws.dir, 'tiny-1.bin', 100_000)
    await suite.publish(v1.path, name, '1.0.0')
    const proxy = await startFaultProxy(suite.edge.url, () => undefined)
    try {
      const config = { ...suite.ws.config, edgeUrl: proxy.url, installRoot: join(suite.ws.dir, 'store-tiny') }
      await installArtifact(config, { name })
      const v2Bytes = Buffer.from(v1.bytes)
      for (let i = 0; i < 8; i++) v2Bytes[40_000 + i * 5_000] = (v2Bytes[40_000 + i * 5_000] ?? 0) ^ 0xff
      const v2 = join(suite.ws.dir, 'tiny-2.bin')
      await writeFile(v2, v2Bytes)
      const deltas = await publishWithDelta(suite, name, v2, '1.1.0')
      const delta = deltas[0]
      // The precondition: the delta is tiny (a VCDIFF of 8 flipped bytes is under 100 bytes).
      expect(delta && 'bytes' in delta ? delta.bytes.length : Number.NaN).toBeLessThan(200)
      const before = proxy.bodyBytes()
      const result = await installArtifact(config, { name, target: '1.1.0' })
      expect(result.method).toBe('delta')
      expectSameBytes(
        await readFile(join(new ArtifactStore(config.installRoot, name).currentLink, 'blob')),
        v2Bytes,
      )
      // The stream is its metadata block, one data block and one parity block, each 32 + 512 bytes
      // (512: the format's least block size). It was 4 blocks of 32 + 1024 (4224 bytes; 6336 under
      // fecM 4): the padding of a 1 KiB floor and m parity blocks for a single data block.
      expect(result.bytesDownloaded).toBeLessThanOrEqual(3 * (32 + 512))
      // The rest of the update is the listing, the manifest and the plan (JSON, about 2.1 KB), which
      // the agent does not count as downloaded: it passed the proxy all the same.
      expect(proxy.bodyBytes() - before - result.bytesDownloaded).toBeLessThan(3_000)
    } finally {
      await proxy.close()
    }
  })
})
