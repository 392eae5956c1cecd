import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { installArtifact } from '../install.ts'
import { publishArtifact } from '../publish.ts'
import { TelemetryQueue } from '../telemetry/queue.ts'
import { flushTelemetry } from '../telemetry/uploader.ts'
import { makeWorkspace, type Workspace, writeArtifact } from './fixtures.ts'
import { type LocalEdge, startLocalEdge, TEST_TOKEN } from './local-edge.ts'

let edge: LocalEdge
let ws: Workspace

beforeAll(async () => {
  edge = await startLocalEdge()
  ws = await makeWorkspace(edge.url)
})
afterAll(async () => {
  await edge?.dispose()
})

describe('agent telemetry against the real edge', () => {
  it('records installs and posts them gzip-compressed; the region aggregator counts them', async () => {
    const art = await writeArtifact(ws.dir, 'tel.bin', 1000)
    await publishArtifact({
      edgeUrl: edge.url,
      token: TEST_TOKEN,
      keyFile: ws.keyFile,
      file: art.path,
      name: 'tel',
      version: '1.0.0',
    })
    await installArtifact(ws.config, { name: 'tel' })
    const queue = new TelemetryQueue(ws.config.installRoot)
    expect((await queue.load()).events).toHaveLength(1)
    const flushed = await flushTelemetry(queue, edge.url)
    expect(flushed).toEqual({ batches: 1, events: 1, remaining: false })
    expect(await queue.peekBatch()).toBeNull()
    const prefetch = await fetch(
      `${edge.url}/v1/prefetch?client=${await queue.clientId()}&installed=tel@1.0.0`,
    )
    expect(prefetch.status).toBe(200)
  })

  it('keeps events queued while the edge is unreachable', async () => {
    const queue = new TelemetryQueue(ws.config.installRoot)
    await queue.record([{ artifact: 'tel', at: new Date().toISOString(), count: 1, kind: 'use' }])
    await expect(flushTelemetry(queue, 'http://127.0.0.1:9')).rejects.toThrow()
    expect((await queue.load()).events).toHaveLength(1)
  })
})
