import { writeFile } from 'node:fs/promises'
import { describe, expect, it } from 'vitest'
import { installArtifact } from '../install.ts'
import { publishArtifact } from '../publish.ts'
import { TelemetryQueue } from '../telemetry/queue.ts'
import { flushTelemetry } from '../telemetry/uploader.ts'
import { writeArtifact } from './fixtures.ts'
import { TEST_TOKEN, useEdgeWorkspace } from './local-edge.ts'

const suite = useEdgeWorkspace()

describe('agent telemetry against the real edge', () => {
  it('records installs and posts them gzip-compressed; the region aggregator counts them', async () => {
    const art = await writeArtifact(suite.ws.dir, 'tel.bin', 1000)
    await publishArtifact({
      edgeUrl: suite.edge.url,
      token: TEST_TOKEN,
      keyFile: suite.ws.keyFile,
      file: art.path,
      name: 'tel',
      version: '1.0.0',
    })
    await installArtifact(suite.ws.config, { name: 'tel' })
    const queue = new TelemetryQueue(suite.ws.config.installRoot)
    expect((await queue.load()).events).toHaveLength(1)
    const flushed = await flushTelemetry(queue, suite.edge.url)
    expect(flushed).toEqual({ batches: 1, events: 1, remaining: false })
    expect(await queue.peekBatch()).toBeNull()
    const prefetch = await fetch(
      `${suite.edge.url}/v1/prefetch?client=${await queue.clientId()}&installed=tel@1.0.0`,
    )
    expect(prefetch.status).toBe(200)
  })

  it('renumbers and resends, instead of dropping, events of a spool that went back', async () => {
    const queue = new TelemetryQueue(suite.ws.config.installRoot)
    const event = (i: number) => ({
      artifact: 'tel',
      at: new Date(Date.now() - 60_000 + i).toISOString(),
      count: 1,
      kind: 'use' as const,
    })
    for (let i = 0; i < 3; i++) {
      await queue.record([event(i)])
      expect(await flushTelemetry(queue, suite.edge.url)).toMatchObject({ batches: 1 })
    }
    const { clientId, nextBatchSeq } = await queue.load()
    // Restored from a backup: the same client id, an earlier sequence number, a new event.
    await writeFile(
      queue.path,
      JSON.stringify({ clientId, nextBatchSeq: 0, events: [event(10)], dropped: 0 }),
    )
    expect(await flushTelemetry(queue, suite.edge.url)).toEqual({ batches: 1, events: 1, remaining: false })
    expect(await queue.load()).toMatchObject({ events: [], nextBatchSeq: nextBatchSeq + 1 })
    // The edge took the event under the next number: that number is now a replay.
    const post = (batchSeq: number) =>
      fetch(`${suite.edge.url}/v1/telemetry`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ clientId, batchSeq, sentAt: new Date().toISOString(), events: [event(20)] }),
      }).then((response) => response.json())
    expect(await post(nextBatchSeq)).toMatchObject({ duplicate: true, lastSeq: nextBatchSeq })
  })

  it('keeps events queued while the edge is unreachable', async () => {
    const queue = new TelemetryQueue(suite.ws.config.installRoot)
    await queue.record([{ artifact: 'tel', at: new Date().toISOString(), count: 1, kind: 'use' }])
    await expect(flushTelemetry(queue, 'http://127.0.0.1:9')).rejects.toThrow()
    expect((await queue.load()).events).toHaveLength(1)
  })
})
