import { beforeAll, describe, expect, it } from 'vitest'
import { auth, bytesOf, call, envelopeFor, publishSingle, startPublish } from './publish-helpers.ts'

const body = bytesOf(4096, 11)
let etag = ''

beforeAll(async () => {
  const envelope = await publishSingle('ranged', '1.0.0', body)
  etag = `"${envelope.signed.sha256}"`
})

const get = (headers: Record<string, string>) => call('/v1/artifacts/ranged/1.0.0/blob', { headers })

describe('blob conditional and range requests', () => {
  it('serves a single range as 206 with Content-Range', async () => {
    const res = await get({ range: 'bytes=100-199' })
    expect(res.status).toBe(206)
    expect(res.headers.get('content-range')).toBe('bytes 100-199/4096')
    expect(new Uint8Array(await res.arrayBuffer())).toEqual(body.subarray(100, 200))
  })

  it('serves suffix and open-ended ranges, clamping the end', async () => {
    const suffix = await get({ range: 'bytes=-96' })
    expect(suffix.headers.get('content-range')).toBe('bytes 4000-4095/4096')
    expect(new Uint8Array(await suffix.arrayBuffer())).toEqual(body.subarray(4000))
    const open = await get({ range: 'bytes=4000-99999' })
    expect(open.status).toBe(206)
    expect((await open.arrayBuffer()).byteLength).toBe(96)
  })

  it('answers 416 with the size for unsatisfiable ranges', async () => {
    for (const range of ['bytes=4096-', 'bytes=-0', 'bytes=99999-100000']) {
      const res = await get({ range })
      expect(res.status).toBe(416)
      expect(res.headers.get('content-range')).toBe('bytes */4096')
      expect(res.headers.get('content-type')).toBe('application/problem+json')
    }
  })

  it('ignores malformed and multi-range headers with a full 200', async () => {
    for (const range of ['bytes=0-1,5-6', 'items=0-5', 'bytes=9-2', 'bytes=abc']) {
      const res = await get({ range })
      expect(res.status).toBe(200)
      expect((await res.arrayBuffer()).byteLength).toBe(4096)
    }
  })

  it('honours If-Range only while the validator still matches', async () => {
    const same = await get({ range: 'bytes=0-9', 'if-range': etag })
    expect(same.status).toBe(206)
    await same.arrayBuffer()
    const stale = await get({ range: 'bytes=0-9', 'if-range': '"0000"' })
    expect(stale.status).toBe(200)
    expect((await stale.arrayBuffer()).byteLength).toBe(4096)
  })

  it('serves an empty artifact whole to a suffix range, and 416s the ranges that select nothing', async () => {
    // RFC 9110 §14.1.1: of a zero-length representation a suffix range (bytes=-N, N > 0) is satisfiable,
    // the "last N bytes" being all of it; no 206 can say so (there is no byte position), so the whole,
    // empty representation is the answer. A first-pos range starts at or past its end: 416. (A HEAD
    // ignores Range, RFC 9110 §14.2: workers/test/http-semantics.test.ts.)
    await publishSingle('ranged-empty', '1.0.0', new Uint8Array(0))
    const path = '/v1/artifacts/ranged-empty/1.0.0/blob'
    const suffix = await call(path, { headers: { range: 'bytes=-512' } })
    expect(suffix.status).toBe(200)
    expect(suffix.headers.get('content-length')).toBe('0')
    expect(suffix.headers.get('content-range')).toBeNull()
    expect((await suffix.arrayBuffer()).byteLength).toBe(0)
    for (const range of ['bytes=0-', 'bytes=0-0', 'bytes=-0']) {
      const none = await call(path, { headers: { range } })
      expect(none.status, range).toBe(416)
      expect(none.headers.get('content-range')).toBe('bytes */0')
      await none.arrayBuffer()
    }
  })

  it('answers 304 to a matching If-None-Match', async () => {
    const res = await get({ 'if-none-match': `"other", ${etag}` })
    expect(res.status).toBe(304)
    expect(res.headers.get('etag')).toBe(etag)
    const miss = await get({ 'if-none-match': '"other"' })
    expect(miss.status).toBe(200)
    await miss.arrayBuffer()
  })

  it('answers 412 when If-Match does not name the object (strong comparison), from the cache too', async () => {
    // A range already in the edge cache, and one that is not: both paths evaluate If-Match.
    const cached = await get({ range: 'bytes=200-299' })
    await cached.arrayBuffer()
    expect((await get({ range: 'bytes=200-299' })).headers.get('x-deltaport-cache')).toBe('hit')
    for (const range of ['bytes=200-299', 'bytes=300-399']) {
      for (const ifMatch of ['"other"', `W/${etag}`]) {
        for (const method of ['GET', 'HEAD']) {
          const refused = await call('/v1/artifacts/ranged/1.0.0/blob', {
            method,
            headers: { range, 'if-match': ifMatch },
          })
          expect(refused.status, `${method} ${range} ${ifMatch}`).toBe(412)
          expect(refused.headers.get('content-type')).toBe('application/problem+json')
          await refused.arrayBuffer()
        }
      }
      for (const ifMatch of [etag, `"other", ${etag}`, '*']) {
        const served = await get({ range, 'if-match': ifMatch })
        expect(served.status, `${range} ${ifMatch}`).toBe(206)
        expect((await served.arrayBuffer()).byteLength).toBe(100)
      }
    }
  })

  it('answers HEAD with length and no body', async () => {
    const res = await call('/v1/artifacts/ranged/1.0.0/blob', { method: 'HEAD' })
    expect(res.status).toBe(200)
    expect(res.headers.get('content-length')).toBe('4096')
  })

  it('404s as problem+json for unknown versions', async () => {
    const res = await call('/v1/artifacts/ranged/9.9.9/blob')
    expect(res.status).toBe(404)
    expect(res.headers.get('content-type')).toBe('application/problem+json')
  })
})

describe('stored objects are downloads, never pages', () => {
  it('serves a blob labelled text/html as an attachment browsers may not sniff or run', async () => {
    const page = new TextEncoder().encode('<script>alert(1)</script>')
    const envelope = await envelopeFor('htmlish', '1.0.0', page, { mediaType: 'text/html' })
    expect((await startPublish(envelope)).status).toBe(201)
    const put = await call('/v1/publish/htmlish/1.0.0/blob', {
      method: 'PUT',
      headers: { ...auth, 'content-length': String(page.length) },
      body: page,
    })
    expect(put.status).toBe(201)
    const res = await call('/v1/artifacts/htmlish/1.0.0/blob')
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toBe('text/html')
    expect(res.headers.get('content-disposition')).toBe('attachment')
    expect(res.headers.get('x-content-type-options')).toBe('nosniff')
    expect(res.headers.get('content-security-policy')).toContain('sandbox')
    await res.arrayBuffer()
  })
})
