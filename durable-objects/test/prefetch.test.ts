import { env } from 'cloudflare:workers'
import { describe, expect, it } from 'vitest'
import { PrefetchQueue } from '../../schemas/prefetch.ts'
import { ProblemDetails } from '../../schemas/problem.ts'
import { clearRuntimeConfigCache } from '../../workers/config/runtime-config.ts'
import {
  auth,
  bytesOf,
  call,
  envelopeFor,
  publishSingle,
  startPublish,
} from '../../workers/test/publish-helpers.ts'
import { batchOf, postTelemetry } from './helpers.ts'

const REGION = 'pf-graph'

async function queueFor(query: string): Promise<PrefetchQueue> {
  const res = await call(`/v1/prefetch?${query}`)
  expect(res.status).toBe(200)
  return PrefetchQueue.parse(await res.json())
}

describe('GET /v1/prefetch', () => {
  it('orders a small known graph and plans real full downloads', async () => {
    const a = await publishSingle('pf-a', '1.0.0', bytesOf(3000, 1))
    const b = await publishSingle('pf-b', '1.0.0', bytesOf(2000, 2))
    // The region has learnt "pf-b follows pf-a" from five clients.
    for (let i = 0; i < 5; i++) {
      expect((await postTelemetry(REGION, batchOf(`client-g00${i}`, 1, ['pf-a', 'pf-b']))).status).toBe(202)
    }
    // The asking client just used pf-a (and has it, at the head version): pf-b should be staged.
    await postTelemetry(REGION, batchOf('client-asker', 1, [{ artifact: 'pf-a', version: '1.0.0' }]))
    const queue = await queueFor(`client=client-asker&region=${REGION}`)
    expect(queue.clientId).toBe('client-asker')
    expect(Date.parse(queue.validUntil)).toBeGreaterThan(Date.parse(queue.generatedAt))
    expect(queue.items.map((i) => `${i.name}@${i.version}`)).toEqual(['pf-b@1.0.0'])
    const [item] = queue.items
    expect(item?.plan).toEqual({
      kind: 'full',
      url: '/v1/artifacts/pf-b/1.0.0/blob',
      size: b.signed.size,
      sha256: b.signed.sha256,
    })
    expect(item?.probability).toBeGreaterThan(0.5)
    const blob = await call(item?.plan.url ?? '')
    expect(blob.status).toBe(200)
    await blob.arrayBuffer()

    // An older installed pf-a makes the channel head a scheduled update (probability 1): it leads.
    const updating = await queueFor(`client=client-other&region=${REGION}&installed=pf-a@0.9.0`)
    expect(updating.items.map((i) => `${i.name}@${i.version}`)[0]).toBe('pf-a@1.0.0')
    expect(updating.items[0]?.probability).toBe(1)
    expect(updating.items[0]?.plan.sha256).toBe(a.signed.sha256)
    const scores = updating.items.map((i) => i.expectedValue)
    expect([...scores].sort((x, y) => y - x)).toEqual(scores)

    // A budget smaller than any artifact stages nothing.
    expect((await queueFor(`client=client-third&region=${REGION}&budget=100`)).items).toEqual([])
  })

  it('says which request headers select the queue, for anonymous clients too', async () => {
    // The queue depends on the device credential (it names the client counted) and on the region
    // header (it picks the aggregator); a cache that stored an anonymous answer without Vary would hand
    // it to the same URL asked with a credential or for another region.
    const res = await call('/v1/prefetch?client=client-vary-1', { headers: { 'x-deltaport-region': REGION } })
    expect(res.status).toBe(200)
    const vary = (res.headers.get('vary') ?? '').toLowerCase().split(/\s*,\s*/)
    expect(vary).toEqual(expect.arrayContaining(['authorization', 'x-deltaport-region']))
  })

  it('adds declared manifest dependencies of a scheduled update, and caches the queue briefly', async () => {
    await publishSingle('pf-lib', '2.0.0', bytesOf(500, 3))
    const body = bytesOf(800, 4)
    const envelope = await envelopeFor('pf-app', '2.0.0', body, {
      dependencies: [{ name: 'pf-lib', range: '^2.0.0' }],
    })
    expect((await startPublish(envelope)).status).toBe(201)
    const put = await call('/v1/publish/pf-app/2.0.0/blob', {
      method: 'PUT',
      headers: { ...auth, 'content-length': String(body.length) },
      body,
    })
    expect(put.status).toBe(201)

    const query = 'client=client-deps&region=pf-deps&installed=pf-app@1.0.0'
    const queue = await queueFor(query)
    expect(queue.items.map((i) => `${i.name}@${i.version}`).sort()).toEqual(['pf-app@2.0.0', 'pf-lib@2.0.0'])
    expect(queue.items.every((i) => i.probability === 1)).toBe(true)
    // Equal probability: the smaller download goes first (same value per byte, cheaper to stage).
    expect(queue.items[0]?.name).toBe('pf-lib')
    expect((await queueFor(query)).generatedAt).toBe(queue.generatedAt)
  })

  it('validates the query as problem+json', async () => {
    const res = await call('/v1/prefetch?client=client-asker&installed=not-a-pair')
    expect(res.status).toBe(400)
    expect(ProblemDetails.parse(await res.json()).errors?.[0]?.path).toBe('installed')
    expect((await call('/v1/prefetch')).status).toBe(400)
  })

  it('rate-limits new plans per client with 429 + Retry-After; cached repeats stay free', async () => {
    await publishSingle('pf-limited', '1.0.0', bytesOf(700, 5))
    clearRuntimeConfigCache()
    await env.CONFIG.put('runtime', JSON.stringify({ limits: { prefetchPlansPerClientPerMinute: 3 } }))
    try {
      const base = 'client=client-varying&region=pf-limit&installed=pf-limited@0.9.0'
      // A varying budget misses the aggregator's cache every time: each one is a new plan.
      const statuses: number[] = []
      let limited: Response | null = null
      for (let budget = 1_000_000; budget < 1_000_006; budget++) {
        const res = await call(`/v1/prefetch?${base}&budget=${budget}`)
        statuses.push(res.status)
        if (res.status === 429) limited ??= res
        else await res.body?.cancel()
      }
      expect(statuses).toEqual([200, 200, 200, 429, 429, 429])
      // 3 per minute: the next plan is at most 20 s away.
      const retryAfter = Number(limited?.headers.get('retry-after'))
      expect(retryAfter).toBeGreaterThanOrEqual(1)
      expect(retryAfter).toBeLessThanOrEqual(20)
      expect(limited?.headers.get('content-type')).toBe('application/problem+json')
      expect(ProblemDetails.parse(await limited?.json()).type).toContain('too-many-requests')
      // A repeat of an answered query comes from the cache and costs nothing, even now.
      const repeat = await queueFor(`${base}&budget=1000000`)
      expect(repeat.items.map((i) => `${i.name}@${i.version}`)).toEqual(['pf-limited@1.0.0'])
      // Another client of the region has its own budget of plans.
      await queueFor('client=client-steady&region=pf-limit&budget=1000000')
    } finally {
      await env.CONFIG.delete('runtime')
      clearRuntimeConfigCache()
    }
  })
})
