import { env } from 'cloudflare:workers'
import { describe, expect, it } from 'vitest'
import { applyDelta } from '../../delta/index.ts'
import { getRuntimeConfig } from '../config/runtime-config.ts'
import type { StoredDelta } from '../publish/frame-delta.ts'
import { generateLazyDelta } from '../publish/lazy-delta.ts'
import { deltaEtag, deltaTag } from '../routes/deltas.ts'
import { InterceptedBucket } from '../storage/intercepted-bucket.ts'
import { keys } from '../storage/keys.ts'
import { callApp, unframe } from './delta-helpers.ts'
import { bytesOf, expectProblem, publishSingle, sha256, stalledAt } from './publish-helpers.ts'

/**
 * A lazily made delta whose key is written again (remade under another `stream` config) between the
 * head the route reads its framing from and the read of its body: the answer must never pair the new
 * stream's bytes with the old stream's ETag, length and framing headers.
 */

const deltaKey = (name: string) => keys.delta(name, '1.0.0', '1.1.0', 'vcdiff')

async function twoVersions(name: string) {
  const v1 = bytesOf(60_000, 51)
  const v2 = v1.slice()
  v2.set(bytesOf(2000, 52), 30_000)
  await publishSingle(name, '1.0.0', v1, 1)
  await publishSingle(name, '1.1.0', v2, 2)
  return { v1, v2 }
}

/** Makes (or makes again) the pair's lazy delta on the real bucket, framed with `fecM` parity blocks. */
async function remake(name: string, fecM: number): Promise<StoredDelta> {
  const config = await getRuntimeConfig(env)
  return generateLazyDelta(
    env.ARTIFACTS,
    { name, from: '1.0.0', to: '1.1.0', method: 'vcdiff' },
    { ...config, stream: { ...config.stream, fecM } },
  )
}

/** Requests `path` with the delta remade while the request waits just before its body read. */
async function remadeBeforeRead(name: string, path: string) {
  const before = await remake(name, 2)
  const gate = stalledAt('get', deltaKey(name))
  const pending = callApp(path, {}, { ...env, ARTIFACTS: gate.bucket })
  await gate.atGate
  const after = await remake(name, 4)
  expect(deltaTag(after.framing)).not.toBe(deltaTag(before.framing))
  gate.release()
  return { before, after, ...(await pending) }
}

describe('a delta remade while it is being served', () => {
  it('is served whole from the new stream, its headers describing the bytes sent', async () => {
    const { v1, v2 } = await twoVersions('remade')
    const { after, response, bytes } = await remadeBeforeRead('remade', '/v1/deltas/remade/1.0.0/1.1.0')
    expect(response.status, new TextDecoder().decode(bytes)).toBe(200)
    expect(response.headers.get('etag')).toBe(deltaEtag(after.framing))
    expect(response.headers.get('x-deltaport-fec')).toBe('k=16;m=4')
    expect(Number(response.headers.get('content-length'))).toBe(bytes.length)
    expect(Number(response.headers.get('x-deltaport-framed-length'))).toBe(bytes.length)
    expect(await sha256(applyDelta(v1, await unframe(bytes)))).toBe(await sha256(v2))
  })

  it('is a 404 under a plan URL that named the old stream, not the new bytes under the old name', async () => {
    await twoVersions('remadev')
    // The stream a plan named: remadeBeforeRead stores it again (the same framing makes the same bytes).
    const before = await remake('remadev', 2)
    const { response, bytes } = await remadeBeforeRead(
      'remadev',
      `/v1/deltas/remadev/1.0.0/1.1.0?method=vcdiff&v=${deltaTag(before.framing)}`,
    )
    const problem = await expectProblem(new Response(bytes, response), 404, 'not-found')
    expect(problem.detail).toContain('made again since the plan')
  })

  it('answers 503 object-replaced with Retry-After when it is remade again before the retry reads it', async () => {
    await twoVersions('churn')
    await remake('churn', 2)
    let made = 0
    // Remade before every read that checks the object the headers came from: a GET's body read, a
    // HEAD's second head (its check that the object is still stored). Each attempt finds another stream.
    const churning = (op: 'get' | 'head') => {
      let calls = 0
      const bucket = new InterceptedBucket(env.ARTIFACTS, async (called, key, run) => {
        if (called === op && key === deltaKey('churn') && (op === 'get' || ++calls % 2 === 0))
          await remake('churn', 3 + (made++ % 2))
        return run()
      })
      return { ...env, ARTIFACTS: bucket }
    }
    const got = await callApp('/v1/deltas/churn/1.0.0/1.1.0', {}, churning('get'))
    await expectProblem(new Response(got.bytes, got.response), 503, 'object-replaced')
    expect(got.response.headers.get('retry-after')).toBe('1')
    const headed = await callApp('/v1/deltas/churn/1.0.0/1.1.0', { method: 'HEAD' }, churning('head'))
    expect(headed.response.status).toBe(503)
    expect(headed.response.headers.get('retry-after')).toBe('1')
    // Two attempts per request, each meeting a remade stream.
    expect(made).toBe(4)
  })
})
