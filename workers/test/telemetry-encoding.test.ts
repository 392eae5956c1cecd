import { describe, expect, it } from 'vitest'
import { call } from './publish-helpers.ts'

const batch = (seq: number) =>
  JSON.stringify({
    clientId: 'gzip-client-1',
    batchSeq: seq,
    sentAt: new Date().toISOString(),
    events: [{ artifact: 'app', version: '1.0.0', at: new Date().toISOString() }],
  })

async function gzip(bytes: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(
    await new Response(new Blob([bytes]).stream().pipeThrough(new CompressionStream('gzip'))).arrayBuffer(),
  )
}

const post = (body: Uint8Array | string, encoding?: string) =>
  call('/v1/telemetry', {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      'x-deltaport-region': 'test',
      ...(encoding ? { 'content-encoding': encoding } : {}),
    },
    body,
  })

describe('telemetry body encodings', () => {
  it('accepts gzip batches as agents send them', async () => {
    const res = await post(await gzip(new TextEncoder().encode(batch(0))), 'gzip')
    expect(res.status).toBe(202)
    expect(await res.json()).toMatchObject({ accepted: 1 })
  })

  it('refuses a decompression bomb, unknown encodings and corrupt gzip', async () => {
    const bomb = await gzip(new Uint8Array(8 * 1024 * 1024))
    expect(bomb.length).toBeLessThan(256 * 1024)
    expect((await post(bomb, 'gzip')).status).toBe(413)
    expect((await post(batch(1), 'br')).status).toBe(415)
    const corrupt = await post(new Uint8Array([0x1f, 0x8b, 1, 2, 3]), 'gzip')
    expect(corrupt.status).toBe(400)
    expect(corrupt.headers.get('content-type')).toBe('application/problem+json')
    expect((await post('{"clientId":')).status).toBe(400)
  })
})
