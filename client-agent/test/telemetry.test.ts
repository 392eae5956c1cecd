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

  it('keeps events queued while the edge is unreachable', async () => {
    const queue = new TelemetryQueue(suite.ws.config.installRoot)
    await queue.record([{ artifact: 'tel', at: new Date().toISOString(), count: 1, kind: 'use' }])
    await expect(flushTelemetry(queue, 'http://127.0.0.1:9')).rejects.toThrow()
    expect((await queue.load()).events).toHaveLength(1)
  })
})
