import { afterAll, describe, expect, it } from 'vitest'
import type { SwapSettingsInput } from '../../../schemas/swap.ts'
import { cleanup, harness, post, within } from './harness.ts'

/**
 * A new version on probation has `replayTimeoutMs` to answer each replayed write, not the health
 * check's `healthTimeoutMs`: a service whose writes legitimately take longer than a health check must
 * not be rolled back for it, while one slower than the replay bound still fails its probation.
 */
afterAll(cleanup)

/** Swaps 1.0.0 to a 2.0.0 that takes 3 s per write, with one write held; its report and answer. */
async function swapWithSlowWrite(settings: SwapSettingsInput) {
  const h = await harness(
    [{ version: '1.0.0' }, { version: '2.0.0', writeDelayMs: 3000, startupDelayMs: 300 }],
    settings,
  )
  const swap = h.swapTo('2.0.0')
  await h.until((e) => e.type === 'buffering')
  const answer = post(h.port, 'slow', 1)
  const report = await within(swap, 30_000, 'the swap')
  const held = await within(answer, 10_000, 'the held write')
  return { report, status: held.status, body: await held.json() }
}

describe('buffered swap: how long a new version has for each replayed write', () => {
  it('keeps a new version whose write takes 3 s with a 1 s health timeout (default replayTimeoutMs)', async () => {
    const { report, status, body } = await swapWithSlowWrite({ healthTimeoutMs: 1000 })
    expect(report).toMatchObject({ outcome: 'installed', serving: '2.0.0', replayed: 1 })
    expect(status).toBe(200)
    expect(body).toMatchObject({ version: '2.0.0', applied: true })
  }, 60_000)

  it('rolls back a new version slower than replayTimeoutMs; the old one answers the write', async () => {
    // A health timeout the write would fit in: only the replay bound can fail it.
    const { report, status, body } = await swapWithSlowWrite({ healthTimeoutMs: 5000, replayTimeoutMs: 1500 })
    expect(report).toMatchObject({ outcome: 'rolled-back', errorClass: 'replay', serving: '1.0.0' })
    expect(status).toBe(200)
    expect(body).toMatchObject({ version: '1.0.0' })
  }, 60_000)
})
