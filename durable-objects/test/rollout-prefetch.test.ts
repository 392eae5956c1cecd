import { env } from 'cloudflare:workers'
import { describe, expect, it } from 'vitest'
import { emptySummary } from '../../predict/index.ts'
import { PrefetchQueue } from '../../schemas/prefetch.ts'
import { auth, bytesOf, call, publishSingle } from '../../workers/test/publish-helpers.ts'
import { r2Catalog } from '../catalog.ts'
import { planPrefetch } from '../prefetch-planner.ts'
import { clientsBetween, control, HOUR, startRollout } from './rollout-helpers.ts'

const DAY = 24 * HOUR

async function queueOf(client: string, region: string): Promise<PrefetchQueue> {
  const res = await call(`/v1/prefetch?client=${client}&region=${region}&installed=ro-pf@1.0.0`)
  expect(res.status).toBe(200)
  return PrefetchQueue.parse(await res.json())
}

const staged = (q: PrefetchQueue) => q.items.map((i) => `${i.name}@${i.version}`)

describe('rollouts feed the prefetcher', () => {
  it('stages the target for clients in or in the next stage (with their time), not for later cohorts', async () => {
    await publishSingle('ro-pf', '1.0.0', bytesOf(4000, 11), 1)
    await publishSingle('ro-pf', '2.0.0', bytesOf(4000, 12), 2)
    // Without a rollout every client with 1.0.0 gets the new channel head queued.
    const [inside] = clientsBetween('ro-pf', '2.0.0', 0, 0.1)
    const [next] = clientsBetween('ro-pf', '2.0.0', 0.1, 0.5)
    const [later] = clientsBetween('ro-pf', '2.0.0', 0.5, 1)
    expect(staged(await queueOf(later ?? '', 'ro-pf-0'))).toEqual(['ro-pf@2.0.0'])

    const started = await startRollout('ro-pf', {
      version: '2.0.0',
      stages: [
        { percent: 10, durationMs: 2 * DAY },
        { percent: 50, durationMs: 2 * DAY },
        { percent: 100, durationMs: 2 * DAY },
      ],
    })
    expect(started.status).toBe(201)
    const now = Date.now()

    // In already: queued, installable now (no scheduledAt).
    const a = await queueOf(inside ?? '', 'ro-pf-1')
    expect(staged(a)).toEqual(['ro-pf@2.0.0'])
    expect(a.items[0]?.scheduledAt).toBeUndefined()
    expect(a.items[0]?.probability).toBe(1)

    // The next stage admits it in two days (beyond the 24 h horizon): staged now, scheduled for then.
    const b = await queueOf(next ?? '', 'ro-pf-1')
    expect(staged(b)).toEqual(['ro-pf@2.0.0'])
    const at = Date.parse(b.items[0]?.scheduledAt ?? '')
    expect(Math.abs(at - (now + 2 * DAY))).toBeLessThan(60_000)

    // Admitted only by the stage after next: nothing staged, not even from the channel head.
    expect(staged(await queueOf(later ?? '', 'ro-pf-1'))).toEqual([])

    // An aborted rollout holds everyone back.
    expect((await control('ro-pf', 'abort')).status).toBe(200)
    expect(staged(await queueOf(inside ?? '', 'ro-pf-2'))).toEqual([])
  })

  it('stages the channel head for a held client whose installed version is yanked', async () => {
    await publishSingle('ro-yk', '1.0.0', bytesOf(4000, 31), 1)
    await publishSingle('ro-yk', '2.0.0', bytesOf(4000, 32), 2)
    const [later] = clientsBetween('ro-yk', '2.0.0', 0.5, 1)
    const stages = [
      { percent: 10, durationMs: 2 * DAY },
      { percent: 50, durationMs: 2 * DAY },
      { percent: 100, durationMs: 2 * DAY },
    ]
    expect((await startRollout('ro-yk', { version: '2.0.0', stages })).status).toBe(201)
    const queue = async (region: string) => {
      const res = await call(`/v1/prefetch?client=${later}&region=${region}&installed=ro-yk@1.0.0`)
      expect(res.status).toBe(200)
      return staged(PrefetchQueue.parse(await res.json()))
    }
    // Held back by the rollout: nothing staged.
    expect(await queue('ro-yk-0')).toEqual([])
    // 1.0.0 yanked: the rollout no longer holds this client on it (ADR 0024), so the head is staged.
    const yank = await call('/v1/publish/ro-yk/1.0.0/yank', {
      method: 'PUT',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify({ reason: 'data loss' }),
    })
    expect(yank.status).toBe(200)
    expect(await queue('ro-yk-1')).toEqual(['ro-yk@2.0.0'])
  })

  it('holds only the artifact whose rollout coordinator cannot be asked, and serves the rest of the queue', async () => {
    await publishSingle('ro-down', '1.0.0', bytesOf(3000, 21), 1)
    await publishSingle('ro-down', '2.0.0', bytesOf(3000, 22), 2)
    await publishSingle('ro-up', '1.0.0', bytesOf(3000, 23), 1)
    await publishSingle('ro-up', '1.1.0', bytesOf(3000, 24), 2)
    const unreachable = async (name: string) => {
      if (name === 'ro-down') throw new Error('Durable Object is overloaded')
      return null
    }
    const queue = await planPrefetch({
      clientId: 'client-coordinator-down',
      now: Date.now(),
      validForMs: HOUR,
      summary: emptySummary('test-region', Date.now()),
      population: 1,
      recent: [],
      installed: [
        { artifact: 'ro-down', version: '1.0.0' },
        { artifact: 'ro-up', version: '1.0.0' },
      ],
      channel: 'stable',
      budgetBytes: 1_000_000,
      catalog: r2Catalog(env.ARTIFACTS),
      rollouts: unreachable,
    })
    expect(staged(queue)).toEqual(['ro-up@1.1.0'])
  })
})
