import { evictDurableObject, runDurableObjectAlarm, runInDurableObject } from 'cloudflare:test'
import { describe, expect, it } from 'vitest'
import { RolloutStatus } from '../../schemas/rollout.ts'
import { bytesOf, publishSingle } from '../../workers/test/publish-helpers.ts'
import type { RolloutCoordinator } from '../rollout-coordinator.ts'
import { armedAt, coordinatorStub, HOUR, rolloutStatus, startRollout } from './rollout-helpers.ts'

const STAGES = [
  { percent: 1, durationMs: HOUR },
  { percent: 10, durationMs: HOUR },
  { percent: 50, durationMs: HOUR },
  { percent: 100, durationMs: HOUR },
]

describe('RolloutCoordinator alarms', () => {
  it('takes its schedule from storage after eviction', async () => {
    await publishSingle('ro-evict', '1.0.0', bytesOf(100, 21))
    expect((await startRollout('ro-evict', { version: '1.0.0', stages: STAGES })).status).toBe(201)
    await evictDurableObject(coordinatorStub('ro-evict'))
    expect(await runDurableObjectAlarm(coordinatorStub('ro-evict'))).toBe(true)
    await evictDurableObject(coordinatorStub('ro-evict'))
    const s = await rolloutStatus('ro-evict')
    expect(s).toMatchObject({ state: 'running', currentStage: 1, currentPercent: 10 })
    expect(await armedAt('ro-evict')).toBe(Date.parse(s.nextChangeAt ?? ''))
  })

  it('a retried delivery of an alarm whose stage change already landed advances nothing', async () => {
    await publishSingle('ro-retry', '1.0.0', bytesOf(100, 22))
    const first = RolloutStatus.parse(
      await (await startRollout('ro-retry', { version: '1.0.0', stages: STAGES })).json(),
    )
    const firstChange = Date.parse(first.nextChangeAt ?? '')
    expect(await runDurableObjectAlarm(coordinatorStub('ro-retry'))).toBe(true)
    const advanced = await rolloutStatus('ro-retry')
    expect(advanced.currentStage).toBe(1)

    // Alarms are at-least-once: the runtime delivers the same alarm again (a retry, after a failure
    // that came once its writes had landed). It is for the change to stage 1, already made.
    await runInDurableObject(coordinatorStub('ro-retry'), (instance: RolloutCoordinator) =>
      instance.alarm({ isRetry: true, retryCount: 1, scheduledTime: firstChange }),
    )
    const after = await rolloutStatus('ro-retry')
    expect(after).toMatchObject({ state: 'running', currentStage: 1, nextChangeAt: advanced.nextChangeAt })
    expect(after.history.filter((h) => h.event === 'stage')).toHaveLength(2)
    // The pending change stays armed.
    expect(await armedAt('ro-retry')).toBe(Date.parse(advanced.nextChangeAt ?? ''))

    // The delivery for the pending change itself (late or on time) advances as before.
    await runInDurableObject(coordinatorStub('ro-retry'), (instance: RolloutCoordinator) =>
      instance.alarm({
        isRetry: true,
        retryCount: 1,
        scheduledTime: Date.parse(advanced.nextChangeAt ?? ''),
      }),
    )
    expect((await rolloutStatus('ro-retry')).currentStage).toBe(2)
  })
})
