import { randomBytes } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { decodeChunkIndex } from '../../delta/chunking/index.ts'
import { collectingSink } from '../../delta/io.ts'
import { StreamReassembler } from '../../delta/stream/index.ts'
import { PlanResponse } from '../../schemas/plan.ts'
import { EdgeClient } from '../edge-client.ts'
import { AgentError } from '../errors.ts'
import { publishArtifact } from '../publish.ts'
import { expectSameBytes, writeArtifact } from './fixtures.ts'
import { TEST_TOKEN, useEdgeWorkspace } from './local-edge.ts'

const suite = useEdgeWorkspace()

describe('publishArtifact with deltas and a chunk index', () => {
  it('lists them in the signed manifest, uploads them before the blob, and the edge serves them', async () => {
    const base = { edgeUrl: suite.edge.url, token: TEST_TOKEN, keyFile: suite.ws.keyFile, name: 'pd' }
    const v1 = await writeArtifact(suite.ws.dir, 'pd-1.bin', 100_000)
    const v2 = await writeArtifact(suite.ws.dir, 'pd-2.bin', 100_000)
    await publishArtifact({ ...base, file: v1.path, version: '1.0.0' })

    // The edge does not interpret delta bytes, so any payload shows the transport; one from memory,
    // one from a file.
    const vcdiff = new Uint8Array(randomBytes(30_000))
    const approxPath = join(suite.ws.dir, 'pd.approx')
    const approx = randomBytes(20_000)
    await writeFile(approxPath, approx)
    await publishArtifact({
      ...base,
      file: v2.path,
      version: '1.1.0',
      deltas: [
        { from: '1.0.0', method: 'vcdiff', bytes: vcdiff },
        { from: '1.0.0', method: 'approx', path: approxPath },
      ],
    })

    const client = new EdgeClient(suite.edge.url)
    const manifest = (await client.manifest('pd', '1.1.0')).signed
    expect(manifest.deltas.map((d) => [d.method, d.size])).toEqual([
      ['vcdiff', 30_000],
      ['approx', 20_000],
    ])
    expect(manifest.chunkIndex?.chunkCount).toBeGreaterThan(0)

    const stream = await fetch(`${suite.edge.url}/v1/deltas/pd/1.0.0/1.1.0?method=approx`)
    expect(stream.headers.get('x-deltaport-fec')).toBe('k=16;m=2')
    const sink = collectingSink()
    const reassembler = new StreamReassembler(sink)
    await reassembler.push(0, new Uint8Array(await stream.arrayBuffer()))
    expect((await reassembler.report()).payloadVerified).toBe(true)
    expectSameBytes(sink.bytes(), approx)

    const chunks = await fetch(`${suite.edge.url}/v1/artifacts/pd/1.1.0/chunks`)
    expect(decodeChunkIndex(new Uint8Array(await chunks.arrayBuffer())).totalLength).toBe(v2.bytes.length)

    const plan = await fetch(`${suite.edge.url}/v1/plan`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        name: 'pd',
        installed: '1.0.0',
        target: 'stable',
        capabilities: { methods: ['vcdiff', 'approx'], chunkSync: true },
      }),
    })
    const planned = PlanResponse.parse(await plan.json())
    expect(planned.strategy).toBe('delta')
    expect(planned.steps[0]).toMatchObject({ kind: 'delta', method: 'approx', size: 20_000 })
  })

  it('fails with a typed error and publishes nothing when the edge refuses an upload', async () => {
    const v3 = await writeArtifact(suite.ws.dir, 'pd-3.bin', 50_000)
    const deltaPath = join(suite.ws.dir, 'pd-3.vcdiff')
    await writeFile(deltaPath, randomBytes(1000))
    const publishing = publishArtifact({
      edgeUrl: suite.edge.url,
      token: 'wrong-token',
      keyFile: suite.ws.keyFile,
      file: v3.path,
      name: 'pd',
      version: '1.2.0',
      deltas: [{ from: '1.1.0', method: 'vcdiff', path: deltaPath }],
    })
    await expect(publishing).rejects.toBeInstanceOf(AgentError)
    expect((await fetch(`${suite.edge.url}/v1/artifacts/pd/1.2.0/manifest`)).status).toBe(404)
  })
})
