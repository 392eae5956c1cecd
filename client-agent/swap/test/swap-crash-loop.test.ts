import { rm } from 'node:fs/promises'
import { afterAll, describe, expect, it } from 'vitest'
import type { SupervisorEvent } from '../supervisor.ts'
import { cleanup, harness, post, waitFor } from './harness.ts'

/**
 * A version swapped in that starts crash-looping only after `healthTimeoutMs` (each copy passes its
 * health check, then dies): restarts back off exponentially, and the loop rolls the update back when the
 * previous version is still on disk. Real sample-service processes, real HTTP on loopback.
 */
afterAll(cleanup)

// v2 exits 3.5 s after each start, well past the 2 s in which an early crash already rolls back.
const settings = {
  healthTimeoutMs: 2000,
  probationMs: 200,
  restartBackoffMs: 100,
  restartBackoffMaxMs: 1000,
  crashLoopExits: 3,
  crashLoopWindowMs: 120_000,
}
const builds = [{ version: '1.0.0' }, { version: '2.0.0', crashAfterMs: 3500 }]

const restarts = (events: SupervisorEvent[]) =>
  events.flatMap((e) => (e.type === 'service-restarted' ? [e.restartInMs] : []))

describe('buffered swap: a crash loop that starts after the early-crash window', () => {
  it('restarts with growing back-off, then rolls back to the previous version (errorClass crash)', async () => {
    const h = await harness(builds, settings)
    expect((await h.swapTo('2.0.0')).outcome).toBe('installed')
    await h.until((e) => e.type === 'swap-done' && e.report.outcome === 'rolled-back', 60_000)
    // Two restarts (100 ms, then 200 ms back-off); the third exit is the loop.
    expect(restarts(h.events)).toEqual([100, 200])
    // The third exit is logged as the rollback it is, not as another restart.
    expect(h.events).toContainEqual(
      expect.objectContaining({ type: 'rolling-back', version: '2.0.0', to: '1.0.0' }),
    )
    expect(h.outcomes).toEqual([
      expect.objectContaining({ version: '2.0.0', outcome: 'installed' }),
      expect.objectContaining({ version: '2.0.0', outcome: 'rolled-back', errorClass: 'crash' }),
    ])
    expect(h.supervisor.version).toBe('1.0.0')
    expect(await (await fetch(`${h.url}/health`)).json()).toEqual({ version: '1.0.0' })
    expect(await (await post(h.port, 'after-loop', 1)).json()).toMatchObject({
      version: '1.0.0',
      applied: true,
    })
    // Not offered again, and no copy of v2 is left running.
    expect(await h.supervisor.checkForUpdate()).toBeNull()
    expect(await h.running()).toEqual(['1.0.0'])
  }, 90_000)

  it('keeps restarting with back-off, and says so, when the previous version is gone from disk', async () => {
    const h = await harness(builds, settings)
    expect((await h.swapTo('2.0.0')).outcome).toBe('installed')
    await rm(h.artifacts.get('1.0.0')!)
    await h.until((e) => e.type === 'error' && /no longer on disk/.test(e.message), 60_000)
    await waitFor(
      () => restarts(h.events).length >= 3,
      20_000,
      () => JSON.stringify(h.events),
    )
    // The loop goes on, each restart waiting twice as long (capped at restartBackoffMaxMs).
    expect(restarts(h.events).slice(0, 3)).toEqual([100, 200, 400])
    expect(h.outcomes).toEqual([expect.objectContaining({ version: '2.0.0', outcome: 'installed' })])
    expect(h.supervisor.version).toBe('2.0.0')
    // Between its crashes it serves (the proxy says 503 while no copy runs).
    let health: unknown = null
    for (let i = 0; i < 200 && health === null; i++) {
      const answer = await fetch(`${h.url}/health`)
      if (answer.status === 200) health = await answer.json()
      else await answer.arrayBuffer().then(() => new Promise((r) => setTimeout(r, 50)))
    }
    expect(health).toEqual({ version: '2.0.0' })
  }, 90_000)
})
