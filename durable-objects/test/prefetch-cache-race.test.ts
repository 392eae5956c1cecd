import { runInDurableObject } from 'cloudflare:test'
import { env } from 'cloudflare:workers'
import { expect, it } from 'vitest'
import type { PrefetchResult } from '../../schemas/aggregation.ts'
import { bytesOf, publishSingle } from '../../workers/test/publish-helpers.ts'
import type { RegionAggregator } from '../region-aggregator.ts'
import { batchOf, postTelemetry } from './helpers.ts'

const REGION = 'pf-race'

const names = (result: PrefetchResult) =>
  result.status === 'planned' ? result.queue.items.map((i) => `${i.name}@${i.version}`) : []

it('a telemetry batch landing while a prefetch plan is made keeps that plan out of the cache', async () => {
  await publishSingle('pf-race-app', '1.0.0', bytesOf(700, 61), 1)
  await publishSingle('pf-race-app', '2.0.0', bytesOf(700, 62), 2)
  expect(
    (await postTelemetry(REGION, batchOf('client-race', 1, [{ artifact: 'pf-race-app', version: '1.0.0' }])))
      .status,
  ).toBe(202)
  const stub = env.REGION_AGGREGATOR.get(env.REGION_AGGREGATOR.idFromName(REGION))
  const request = {
    region: REGION,
    clientId: 'client-race',
    channel: 'stable',
    budgetBytes: 1_000_000,
    plansPerMinute: 100,
  }
  await runInDurableObject(stub, async (instance: RegionAggregator) => {
    // The plan reads the catalog from R2; while it waits, the client reports it runs 2.0.0 now.
    const planning = instance.prefetch(request)
    await instance.ingest({
      region: REGION,
      batch: batchOf('client-race', 2, [{ artifact: 'pf-race-app', version: '2.0.0' }]),
      ratePerMinute: 30,
    })
    // Made from what the client had installed when it began: the update to 2.0.0.
    expect(names(await planning)).toContain('pf-race-app@2.0.0')
    // The next query is planned from the batch, not answered with that plan from the cache.
    expect(names(await instance.prefetch(request))).not.toContain('pf-race-app@2.0.0')
  })
})
