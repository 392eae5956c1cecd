import { afterAll, describe, expect, it } from 'vitest'
import { describeEvent } from '../../commands/run.ts'
import type { SupervisorEvent } from '../supervisor.ts'
import { cleanup, harness, within } from './harness.ts'

/**
 * What `deltaport run` logs when a version dies: a new version that dies during its probation is rolled
 * back to the previous one, and the log (text and --json events) says so; "restarting" is kept for a real
 * restart of the same version. Real sample-service processes, real HTTP on loopback.
 */
afterAll(cleanup)

/** The lines `deltaport run` prints for these events (without the time stamp). */
const lines = (events: readonly SupervisorEvent[]) => events.map(describeEvent)

describe('run log: a version that dies', () => {
  it('says "rolling back to <previous>" (not "restarting") when a new version dies during probation', async () => {
    // v2 passes its health check, then exits 1 s after it started listening: well inside its probation.
    const h = await harness([{ version: '1.0.0' }, { version: '2.0.0', crashAfterMs: 1000 }], {
      probationMs: 5000,
    })
    const report = await within(h.swapTo('2.0.0'), 60_000, 'the swap')
    expect(report).toMatchObject({ outcome: 'rolled-back', errorClass: 'replay', serving: '1.0.0' })
    // The --json log carries the event itself: it names the rollback and its target.
    expect(h.events).toContainEqual(
      expect.objectContaining({ type: 'rolling-back', version: '2.0.0', to: '1.0.0', exitCode: 1 }),
    )
    expect(h.events.map((e) => e.type)).not.toContain('service-restarted')
    const log = lines(h.events)
    expect(log).toContainEqual(
      expect.stringMatching(/^2\.0\.0 exited \(1\) during probation; rolling back to 1\.0\.0$/),
    )
    expect(log.filter((l) => /restart/.test(l))).toEqual([])
  })

  it('still says "restarting" when the serving version crashes and is restarted', async () => {
    const h = await harness([{ version: '1.0.0' }], { restartBackoffMs: 100 })
    const [pid] = await h.recordedPids()
    process.kill(pid!, 'SIGKILL')
    await h.until((e) => e.type === 'service-restarted')
    const log = lines(h.events)
    expect(log).toContainEqual(expect.stringMatching(/^1\.0\.0 exited \(\d+\); restarting in 100 ms\b/))
    expect(log.filter((l) => /rolling back/.test(l))).toEqual([])
  })
})
