import { evictDurableObject, runInDurableObject } from 'cloudflare:test'
import { describe, expect, it } from 'vitest'
import { RolloutStatus } from '../../schemas/rollout.ts'
import { bytesOf, publishSingle } from '../../workers/test/publish-helpers.ts'
import type { RolloutCoordinator } from '../rollout-coordinator.ts'
import {
  armedAt,
  checkClient,
  control,
  coordinatorStub,
  HOUR,
  rolloutStatus,
  startRollout,
} from './rollout-helpers.ts'

/**
 * A rollout whose record was committed without its alarm (a fault between the two writes) must not sit
 * in a stage for ever: the coordinator re-arms the alarm from the record at its next call or wake
 * (ADR 0010, amended 2026-11-26). Real workerd storage and alarms throughout.
 */

const STAGES = [
  { percent: 1, durationMs: HOUR },
  { percent: 100, durationMs: HOUR },
]

describe('a committed rollout whose alarm was lost', () => {
  it('is re-armed when the object wakes again (after an eviction or a reset)', async () => {
    await publishSingle('ro-lost1', '1.0.0', bytesOf(100, 41))
    const started = RolloutStatus.parse(
      await (await startRollout('ro-lost1', { version: '1.0.0', stages: STAGES })).json(),
    )
    // What a fault between the record's write and setAlarm leaves in storage: the record, no alarm.
    await runInDurableObject(coordinatorStub('ro-lost1'), (_instance, state) => state.storage.deleteAlarm())
    await evictDurableObject(coordinatorStub('ro-lost1'))
    expect((await checkClient('ro-lost1', 'client-a')).status).toBe(200)
    expect(await armedAt('ro-lost1')).toBe(Date.parse(started.nextChangeAt ?? ''))
  })

  it('is re-armed by the next call when setAlarm failed after the record was written', async () => {
    await publishSingle('ro-lost2', '1.0.0', bytesOf(100, 42))
    expect((await startRollout('ro-lost2', { version: '1.0.0', stages: STAGES })).status).toBe(201)
    expect((await control('ro-lost2', 'pause')).status).toBe(200)
    expect(await armedAt('ro-lost2')).toBeNull()
    // The resume writes its record, then its setAlarm fails (a storage fault injected at that one call).
    await runInDurableObject(coordinatorStub('ro-lost2'), async (instance: RolloutCoordinator, state) => {
      const storage = state.storage
      const setAlarm = storage.setAlarm
      storage.setAlarm = () => Promise.reject(new Error('injected storage fault'))
      try {
        await expect(instance.resume()).rejects.toThrow('injected storage fault')
      } finally {
        storage.setAlarm = setAlarm
      }
    })
    expect(await armedAt('ro-lost2')).toBeNull()
    // Running with a pending change and no alarm: the next call of any kind re-arms it.
    const s = await rolloutStatus('ro-lost2')
    expect(s.state).toBe('running')
    expect(await armedAt('ro-lost2')).toBe(Date.parse(s.nextChangeAt ?? ''))
  })
})
