import { afterAll, describe, expect, it } from 'vitest'
import { cleanup, harness, within } from './harness.ts'

/**
 * An update check (a poll or SIGHUP) that comes while the supervisor falls back to the previous version
 * (or replays into a restarted one) holds no swap of its own, so `run` does not keep it for later: it
 * must wait for the fall-back and then look, not find the swap lock taken and drop the trigger.
 */
afterAll(cleanup)

describe('buffered swap: update checks during a fall-back', () => {
  it('checks right after the fall-back instead of dropping the trigger', async () => {
    const h = await harness(
      [
        // Slow to start, so the fall-back to it takes a while.
        { version: '1.0.0', startupDelayMs: 1500 },
        // Crashes soon after its probation: the previous version comes back.
        { version: '2.0.0', crashAfterMs: 1500 },
        { version: '3.0.0' },
      ],
      { probationMs: 200 },
    )
    expect(await h.supervisor.checkForUpdate()).toMatchObject({ version: '2.0.0', outcome: 'installed' })
    h.offer('3.0.0')
    await h.until((e) => e.type === 'rolling-back')
    const during = await within(h.supervisor.checkForUpdate(), 30_000, 'the check')
    expect(during).toMatchObject({ version: '3.0.0', outcome: 'installed', serving: '3.0.0' })
    // The fall-back had finished first.
    expect(
      h.events.flatMap((e) => (e.type === 'swap-done' ? [`${e.report.version} ${e.report.outcome}`] : [])),
    ).toEqual(['2.0.0 installed', '2.0.0 rolled-back', '3.0.0 installed'])
  }, 60_000)
})
