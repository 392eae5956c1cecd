import { join } from 'node:path'
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest'
import { sleep } from '../service-process.ts'
import type { Supervisor, SupervisorEvent } from '../supervisor.ts'
import {
  bigAnswerService,
  cleanup,
  harness,
  serviceFile,
  silentClient,
  supervise,
  tempDir,
  waitFor,
  within,
} from './harness.ts'

/**
 * `deltaport run` lives for months, and the wall clock is stepped meanwhile (NTP at boot, a fixed RTC,
 * an operator's `date -s`). The swap's windows (health wait, stalled-reader cut) are durations: they
 * must not end early or stretch by the step. Only `Date` is faked here (stepped an hour); timers,
 * `performance.now()`, sockets and the service processes are real.
 */
const supervisors: Supervisor[] = []
afterEach(() => {
  vi.useRealTimers()
})
afterAll(async () => {
  for (const s of supervisors) await s.stop().catch(() => undefined)
  await cleanup()
})

/** Steps the wall clock by `ms` from now on (it keeps running from there). */
function stepWallClock(ms: number): void {
  const now = Date.now()
  vi.useFakeTimers({ toFake: ['Date'], shouldAdvanceTime: true })
  vi.setSystemTime(now + ms)
}

describe('swap proxy: the wall clock stepped during a long run', () => {
  it('a stalled reader is still cut after answerIdleTimeoutMs when the clock steps back an hour', async () => {
    const dir = await tempDir('deltaport-swap-clock-stall-')
    const artifact = await bigAnswerService(dir)
    const events: SupervisorEvent[] = []
    const supervisor = await supervise(dir, artifact, { answerIdleTimeoutMs: 1000 }, events, {})
    supervisors.push(supervisor)

    const hog = silentClient('127.0.0.1', supervisor.publicPort, 'GET /big HTTP/1.1\r\nhost: service\r\n\r\n')
    // The stall is seen (its answer's bytes wait), then the clock goes back an hour.
    await sleep(500)
    stepWallClock(-3_600_000)
    await sleep(3000)
    // By the wall clock the answer had not been stalled yet (now - since < 0), for an hour.
    const closed = await (await fetch(`http://127.0.0.1:${supervisor.publicPort}/closed`)).text()
    expect(Number(closed)).toBeGreaterThanOrEqual(1)
    hog.destroy()
  }, 60_000)

  it('a new version that becomes healthy in time is installed when the clock steps forward during its health wait', async () => {
    const dir = await tempDir('deltaport-swap-clock-health-')
    // Every process listens 1.5 s after it starts: the new version's health wait lasts that long.
    const artifact = await serviceFile(join(dir, 'service.mjs'), {
      onEnd: `res.end('ok ' + process.env.DELTAPORT_VERSION)`,
      startupDelayMs: 1500,
    })
    const events: SupervisorEvent[] = []
    const supervisor = await supervise(dir, artifact, {}, events, {})
    supervisors.push(supervisor)

    const swap = supervisor.swapTo({ version: '2.0.0', artifactPath: artifact })
    await sleep(600)
    // NTP steps the clock an hour forward while 2.0.0 starts. Before, its health wait (healthTimeoutMs,
    // 15 s) was over by the wall clock: the healthy version was rolled back and recorded as failed.
    stepWallClock(3_600_000)
    expect(await within(swap, 30_000, 'the swap')).toMatchObject({ outcome: 'installed', serving: '2.0.0' })
  }, 60_000)

  it('a restart hold’s Retry-After hints stay seconds long when the clock steps back an hour', async () => {
    // The restart is due 5 s after the crash; one held request at most (the default tier sheds at 0.8).
    const h = await harness([{ version: '1.0.0' }], { restartBackoffMs: 5000, maxBufferedWrites: 1 })
    const pids = await h.recordedPids()
    process.kill(pids[0]!, 'SIGKILL')
    await waitFor(() => h.events.some((e) => e.type === 'service-restarted'), 20_000)
    const get = (client: string, method = 'GET') =>
      fetch(`${h.url}/state`, { method, headers: { 'x-client-id': client } })
    // Refused by admission: the retry gate remembers when this client may come back.
    const first = await get('gated')
    expect(first.status).toBe(503)
    const given = Number(first.headers.get('retry-after'))
    expect(given).toBeLessThanOrEqual(60)
    stepWallClock(-3_600_000)
    // A request that cannot wait is told when the restart is due (5 s), not that plus the step.
    const purge = await get('other', 'PURGE')
    expect(purge.status).toBe(503)
    expect(Number(purge.headers.get('retry-after'))).toBeLessThanOrEqual(5)
    // The gated client's early retry is told what is left of its wait, not that plus an hour.
    const again = await get('gated')
    expect(again.status).toBe(503)
    expect(Number(again.headers.get('retry-after'))).toBeLessThanOrEqual(given)
  }, 60_000)
})
