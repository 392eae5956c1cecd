import { env } from 'cloudflare:workers'
import { describe, expect, it, vi } from 'vitest'
import { decodeChunkIndex } from '../../delta/chunking/chunk-index.ts'
import { buildChunkIndex, encodeChunkIndex } from '../../delta/chunking/index.ts'
import { clearRuntimeConfigCache, RUNTIME_CONFIG_KEY } from '../config/runtime-config.ts'
import {
  callApp,
  countingBucket,
  type DeltaUpload,
  deltaRefOf,
  publishWithDeltas,
  putBlob,
  putChunks,
  putDelta,
  unframe,
} from './delta-helpers.ts'
import { FaultyR2 } from './faulty-r2.ts'
import { auth, bytesOf, call, envelopeFor, sha256, startPublish } from './publish-helpers.ts'

const delta = (from: string, seed: number, size = 100_000): DeltaUpload => ({
  from,
  method: 'vcdiff',
  bytes: bytesOf(size, seed),
})

describe('delta and chunk-index upload at publish', () => {
  it('refuses to commit until every listed delta and the chunk index are stored and match', async () => {
    const body = bytesOf(50_000, 7)
    const upload = delta('1.0.0', 8)
    const index = encodeChunkIndex(await buildChunkIndex(body))
    const envelope = await envelopeFor('gate', '1.1.0', body, {
      serial: 2,
      deltas: [await deltaRefOf(upload)],
      chunkIndex: { size: index.length, sha256: await sha256(index), chunkCount: (index.length - 36) / 20 },
    })
    expect((await startPublish(envelope)).status).toBe(201)

    const early = await putBlob('gate', '1.1.0', body)
    expect(early.status).toBe(409)
    expect(await early.text()).toContain('delta 1.0.0 (vcdiff)')

    // Same length, other bytes: the framer's running hash fails and R2 keeps nothing.
    const forged = await putDelta('gate', '1.1.0', upload, bytesOf(upload.bytes.length, 99))
    expect(forged.status).toBe(422)
    expect(await env.ARTIFACTS.head('deltas/gate/1.0.0/1.1.0/vcdiff')).toBeNull()
    expect((await putDelta('gate', '1.1.0', { ...upload, from: '0.9.0' })).status).toBe(404)

    expect((await putDelta('gate', '1.1.0', upload)).status).toBe(201)
    expect((await putBlob('gate', '1.1.0', body)).status).toBe(409)
    const badIndex = index.slice()
    badIndex[40] = (badIndex[40] ?? 0) ^ 1
    expect((await putChunks('gate', '1.1.0', badIndex)).status).toBe(422)
    expect((await putChunks('gate', '1.1.0', index)).status).toBe(201)
    expect((await putBlob('gate', '1.1.0', body)).status).toBe(201)
  })
})

describe('a forged delta upload', () => {
  it('is refused and logged as an integrity mismatch, never as a storage fault, even when its cleanup faults', async () => {
    const body = bytesOf(20_000, 40)
    const upload = delta('1.0.0', 41, 30_000)
    const envelope = await envelopeFor('forged-log', '1.1.0', body, {
      serial: 2,
      deltas: [await deltaRefOf(upload)],
    })
    expect((await startPublish(envelope)).status).toBe(201)
    const path = '/v1/publish/forged-log/1.1.0/deltas/1.0.0/vcdiff'
    const forged = bytesOf(upload.bytes.length, 42)
    const send = (bucket: R2Bucket) =>
      callApp(
        path,
        { method: 'PUT', headers: { ...auth, 'content-length': String(forged.length) }, body: forged },
        { ...env, ARTIFACTS: bucket },
      )
    const log = vi.spyOn(console, 'log')
    try {
      // The second run fails the cleanup delete: nothing was stored, so that (real, and logged) fault
      // changes no answer.
      const runs = [
        { bucket: env.ARTIFACTS, faults: [] },
        { bucket: new FaultyR2(env.ARTIFACTS, { failNth: { delete: [1] } }), faults: ['delete'] },
      ]
      for (const { bucket, faults: expected } of runs) {
        log.mockClear()
        const { response, bytes } = await send(bucket)
        const problem = JSON.parse(new TextDecoder().decode(bytes)) as { type: string; detail: string }
        expect(response.status, problem.detail).toBe(422)
        expect(problem.type).toContain('integrity-mismatch')
        expect(problem.detail).toContain('does not match its sha256')
        const faults = log.mock.calls
          .map((args) => String(args[0]))
          .filter((line) => line.includes('storage fault'))
          .map((line) => (JSON.parse(line) as { op: string }).op)
        expect(faults).toEqual(expected)
      }
    } finally {
      log.mockRestore()
    }
    expect(await env.ARTIFACTS.head('deltas/forged-log/1.0.0/1.1.0/vcdiff')).toBeNull()
  })
})

describe('manifests whose attachments could never be stored', () => {
  it('are refused at staging, so they cannot hold the version for the abandonment period', async () => {
    const body = bytesOf(6_000, 30)
    const small = delta('1.0.0', 31, 100)
    const other = delta('1.0.0', 32, 120)
    // Two different vcdiff deltas from 1.0.0 share one R2 key: at most one of them can ever be stored, so
    // the blob (which commits) would be refused as "missing a delta" for good.
    const twice = await envelopeFor('wedge', '1.1.0', body, {
      serial: 2,
      deltas: [await deltaRefOf(small), await deltaRefOf(other)],
    })
    const refused = await startPublish(twice)
    expect(refused.status, await refused.clone().text()).toBe(422)
    expect((await refused.json()) as { detail: string }).toMatchObject({
      detail: expect.stringContaining('1.0.0'),
    })
    // A chunk index whose size does not fit its chunk count is refused by its own upload, for good.
    const index = await envelopeFor('wedge', '1.1.0', body, {
      serial: 2,
      chunkIndex: { size: 56, sha256: 'a'.repeat(64), chunkCount: 5 },
    })
    expect((await startPublish(index)).status).toBe(422)
    // A delta whose framed stream is beyond what one R2 put stores (5 GiB) can never be uploaded either.
    const huge = await envelopeFor('wedge', '1.1.0', body, {
      serial: 2,
      deltas: [{ from: '1.0.0', method: 'vcdiff', size: 6 * 1024 ** 3, sha256: 'b'.repeat(64) }],
    })
    expect((await startPublish(huge)).status).toBe(422)

    // Nothing was staged: the corrected manifest is taken at once.
    const fixed = await envelopeFor('wedge', '1.1.0', body, { serial: 2, deltas: [await deltaRefOf(small)] })
    expect((await startPublish(fixed)).status).toBe(201)
  })
})

describe('tiny deltas on the wire', () => {
  it('frames a 50-byte delta as metadata, one data and one parity block of 512 bytes under fecM 4; a real delta keeps its m', async () => {
    await env.CONFIG.put(RUNTIME_CONFIG_KEY, JSON.stringify({ stream: { fecM: 4 } }))
    clearRuntimeConfigCache()
    try {
      const tiny = delta('1.0.0', 41, 50)
      const real = delta('1.5.0', 42, 300_000)
      await publishWithDeltas('tiny-wire', '2.0.0', bytesOf(6_000, 40), 2, [tiny, real])

      // 3 blocks of 32 + 512 (the format's least block): was 1 + 1 + 4 blocks of 32 + 1024 (6336 bytes).
      const served = await call('/v1/deltas/tiny-wire/1.0.0/2.0.0')
      const framed = new Uint8Array(await served.arrayBuffer())
      expect(framed.length).toBe(3 * (32 + 512))
      expect(served.headers.get('x-deltaport-block-size')).toBe('512')
      expect(served.headers.get('x-deltaport-fec')).toBe('k=16;m=1')
      expect(await sha256(await unframe(framed))).toBe(await sha256(tiny.bytes))
      // Integrity and FEC stay: the damaged data block is an erasure, rebuilt from the parity block.
      const damaged = framed.slice()
      damaged[544 + 40] = (damaged[544 + 40] ?? 0) ^ 0xff
      expect(await sha256(await unframe(damaged))).toBe(await sha256(tiny.bytes))

      // A delta of at least m data blocks keeps every parity block the operator configured.
      const kept = await call('/v1/deltas/tiny-wire/1.5.0/2.0.0', { method: 'HEAD' })
      expect(kept.headers.get('x-deltaport-fec')).toBe('k=16;m=4')
    } finally {
      await env.CONFIG.delete(RUNTIME_CONFIG_KEY)
      clearRuntimeConfigCache()
    }
  })
})

describe('serving delta streams and chunk indexes', () => {
  it('serves the framed stream with its layout, ranges, validators and the chunk index', async () => {
    const upload = delta('1.0.0', 11, 300_000)
    const body = bytesOf(80_000, 12)
    const envelope = await publishWithDeltas('serve', '2.0.0', body, 2, [upload])

    const full = await call('/v1/deltas/serve/1.0.0/2.0.0')
    expect(full.status).toBe(200)
    const framed = new Uint8Array(await full.arrayBuffer())
    const blockSize = Number(full.headers.get('x-deltaport-block-size'))
    expect(blockSize).toBe(32_768)
    expect(full.headers.get('x-deltaport-fec')).toBe('k=16;m=2')
    expect(Number(full.headers.get('x-deltaport-framed-length'))).toBe(framed.length)
    expect(full.headers.get('content-type')).toBe('application/vnd.deltaport.stream')
    const etag = full.headers.get('etag') ?? ''
    expect(etag).toBe(`"${await sha256(upload.bytes)}.32768.16.2"`)
    expect(await sha256(await unframe(framed))).toBe(await sha256(upload.bytes))

    // Block-aligned range: blocks 1..2.
    const F = 32 + blockSize
    const range = await call('/v1/deltas/serve/1.0.0/2.0.0?method=vcdiff', {
      headers: { range: `bytes=${F}-${3 * F - 1}` },
    })
    expect(range.status).toBe(206)
    expect(range.headers.get('content-range')).toBe(`bytes ${F}-${3 * F - 1}/${framed.length}`)
    expect(await sha256(new Uint8Array(await range.arrayBuffer()))).toBe(await sha256(framed.slice(F, 3 * F)))

    const stale = await call('/v1/deltas/serve/1.0.0/2.0.0', {
      headers: { range: 'bytes=0-9', 'if-range': '"old"' },
    })
    expect(stale.status).toBe(200)
    await stale.body?.cancel()
    expect((await call('/v1/deltas/serve/1.0.0/2.0.0', { headers: { 'if-none-match': etag } })).status).toBe(
      304,
    )
    const past = await call('/v1/deltas/serve/1.0.0/2.0.0', { headers: { range: `bytes=${framed.length}-` } })
    expect(past.status).toBe(416)
    expect(past.headers.get('content-range')).toBe(`bytes */${framed.length}`)
    const head = await call('/v1/deltas/serve/1.0.0/2.0.0', { method: 'HEAD' })
    expect(head.headers.get('content-length')).toBe(String(framed.length))
    expect((await call('/v1/deltas/serve/1.5.0/2.0.0')).status).toBe(404)
    expect((await call('/v1/deltas/serve/1.0.0/2.0.0?method=approx')).status).toBe(404)

    const chunks = await call('/v1/artifacts/serve/2.0.0/chunks')
    expect(chunks.status).toBe(200)
    const decoded = decodeChunkIndex(new Uint8Array(await chunks.arrayBuffer()))
    expect(decoded.totalLength).toBe(body.length)
    expect(decoded.chunks.length).toBe(envelope.signed.chunkIndex?.chunkCount)
  })

  it('answers repeat range reads from the Workers cache without touching R2', async () => {
    await publishWithDeltas('cached', '1.1.0', bytesOf(40_000, 21), 2, [delta('1.0.0', 22, 50_000)])
    const counted = countingBucket(env.ARTIFACTS)
    const bindings = { ...env, ARTIFACTS: counted.bucket }
    const read = (path: string) => callApp(path, { headers: { range: 'bytes=0-4095' } }, bindings)

    for (const path of [
      '/v1/deltas/cached/1.0.0/1.1.0',
      '/v1/artifacts/cached/1.1.0/blob',
      '/v1/artifacts/cached/1.1.0/chunks',
    ]) {
      const before = counted.reads()
      const first = await read(path)
      expect(first.response.status).toBe(206)
      expect(first.response.headers.get('x-deltaport-cache')).toBe('miss')
      expect(counted.reads()).toBeGreaterThan(before)

      const after = counted.reads()
      const second = await read(path)
      expect(second.response.status).toBe(206)
      expect(second.response.headers.get('x-deltaport-cache')).toBe('hit')
      expect(second.response.headers.get('content-range')).toBe(first.response.headers.get('content-range'))
      expect(await sha256(second.bytes)).toBe(await sha256(first.bytes))
      expect(counted.reads()).toBe(after)
    }
    // Another range is another cache entry: it reaches R2 once.
    const other = await callApp(
      '/v1/artifacts/cached/1.1.0/blob',
      { headers: { range: 'bytes=4096-8191' } },
      bindings,
    )
    expect(other.response.headers.get('x-deltaport-cache')).toBe('miss')
  })

  it("answers the agent's ranges (Range + If-Range) from the cache, and a stale If-Range whole from the origin", async () => {
    // Agents send If-Range with the validator of their first range on every later one (and on every
    // resumed download): those are the reads the cache is for.
    await publishWithDeltas('ifrange', '1.1.0', bytesOf(40_000, 23), 2, [delta('1.0.0', 24, 50_000)])
    const counted = countingBucket(env.ARTIFACTS)
    const bindings = { ...env, ARTIFACTS: counted.bucket }
    const read = (path: string, headers: Record<string, string>) => callApp(path, { headers }, bindings)

    for (const path of ['/v1/deltas/ifrange/1.0.0/1.1.0', '/v1/artifacts/ifrange/1.1.0/blob']) {
      const first = await read(path, { range: 'bytes=0-4095' })
      const etag = first.response.headers.get('etag') ?? ''
      const size = Number(first.response.headers.get('content-range')?.split('/')[1])
      // A range another device fetched is a hit with the validator that names it...
      const before = counted.reads()
      const same = await read(path, { range: 'bytes=0-4095', 'if-range': etag })
      expect(same.response.status).toBe(206)
      expect(same.response.headers.get('x-deltaport-cache')).toBe('hit')
      expect(await sha256(same.bytes)).toBe(await sha256(first.bytes))
      expect(counted.reads()).toBe(before)
      // ...and a range first asked with If-Range is stored for the next device.
      const miss = await read(path, { range: 'bytes=4096-8191', 'if-range': etag })
      expect(miss.response.status).toBe(206)
      expect(miss.response.headers.get('x-deltaport-cache')).toBe('miss')
      const again = counted.reads()
      const hit = await read(path, { range: 'bytes=4096-8191', 'if-range': etag })
      expect(hit.response.headers.get('x-deltaport-cache')).toBe('hit')
      expect(await sha256(hit.bytes)).toBe(await sha256(miss.bytes))
      expect(counted.reads()).toBe(again)

      // A validator that no longer names the object: the whole of it, cached range or not...
      for (const range of ['bytes=0-4095', 'bytes=8192-12287']) {
        const stale = await read(path, { range, 'if-range': '"stale"' })
        expect(stale.response.status).toBe(200)
        expect(stale.bytes.length).toBe(size)
      }
      // ...which is not stored as the answer to that range.
      const plain = await read(path, { range: 'bytes=8192-12287' })
      expect(plain.response.status).toBe(206)
      expect(plain.bytes.length).toBe(4096)
    }
  })
})
