import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { sleep } from '../service-process.ts'
import type { Supervisor, SupervisorEvent } from '../supervisor.ts'
import { UpdateChecks } from '../update-checks.ts'
import { cleanup, serviceFile, supervise, tempDir, waitFor } from './harness.ts'

/**
 * When `deltaport run` checks for a new version (update-checks.ts): a swap the running version defers
 * (it refused to prepare) is retried when its back-off ends, without a poll or a SIGHUP, as the
 * deferral's log line promises: with `--interval 0` the operator's SIGHUP asked for the update, and
 * the busy service only postponed it. Real service processes, a real supervisor.
 */
const supervisors: Supervisor[] = []
const checkers: UpdateChecks[] = []
afterAll(async () => {
  for (const c of checkers) c.stop()
  for (const s of supervisors) await s.stop().catch(() => undefined)
  await cleanup()
})

/**
 * A supervisor over a service whose 1.0.0 refuses (503) its first `busy` prepare hooks; its update
 * source offers 2.0.0 (same file) and records when it was asked. The checks numbered in `unreachable`
 * (1: the first) fail as if the edge could not be reached.
 */
async function deferring(busy: number, deferRetryMs: number, unreachable: number[] = [], inDir?: string) {
  const dir = inDir ?? (await tempDir('deltaport-update-checks-'))
  const artifact = await serviceFile(join(dir, 'service.mjs'), {
    setup: 'let asked = 0',
    onEnd: `if (req.url === '/prepare' && process.env.DELTAPORT_VERSION === '1.0.0' && ++asked <= ${busy}) {
      res.statusCode = 503
      return res.end('busy')
    }
    res.end(process.env.DELTAPORT_VERSION)`,
  })
  const events: SupervisorEvent[] = []
  const asked: number[] = []
  const supervisor = await supervise(
    dir,
    artifact,
    { deferRetryMs, deferRetryMaxMs: deferRetryMs * 4 },
    events,
    {
      source: {
        next: async (running) => {
          asked.push(Date.now())
          if (unreachable.includes(asked.length)) throw new Error('edge unreachable')
          return running === '2.0.0' ? null : { version: '2.0.0', artifactPath: artifact }
        },
        restore: async () => undefined,
      },
    },
  )
  supervisors.push(supervisor)
  const errors: string[] = []
  const checks = new UpdateChecks(supervisor, 0, (message) => errors.push(message))
  checkers.push(checks)
  const outcomes = () => events.flatMap((e) => (e.type === 'swap-done' ? [e.report.outcome] : []))
  return { dir, supervisor, asked, checks, outcomes, errors }
}

describe('update checks with --interval 0', () => {
  it('checks only when triggered, and retries a deferred swap once its back-off ends', async () => {
    const r = await deferring(1, 1500)
    r.checks.start()
    await sleep(300)
    expect(r.asked).toEqual([])

    // The operator's SIGHUP: 1.0.0 is busy, the swap is deferred for 1.5 s.
    r.checks.trigger()
    await waitFor(() => r.outcomes().length === 1, 20_000)
    expect(r.outcomes()).toEqual(['deferred'])
    const retryAt = r.supervisor.deferred[0]!.retryAt

    // No poll and no further SIGHUP: the retry comes when the back-off ends, and goes through.
    await waitFor(
      () => r.outcomes().length === 2,
      10_000,
      () => `not retried: ${JSON.stringify(r.outcomes())}`,
    )
    expect(r.outcomes()).toEqual(['deferred', 'installed'])
    expect(r.supervisor.version).toBe('2.0.0')
    expect(r.asked).toHaveLength(2)
    expect(r.asked[1]!).toBeGreaterThanOrEqual(retryAt)
    expect(r.errors).toEqual([])
    // Nothing deferred is left: no further check comes by itself.
    await sleep(500)
    expect(r.asked).toHaveLength(2)
  }, 60_000)

  it('tries a failed retry check again with back-off until it gets through', async () => {
    // The deferral's retry check (the 2nd) and the next try (the 3rd) find the edge unreachable.
    const r = await deferring(1, 1000, [2, 3])
    r.checks.start()
    r.checks.trigger()
    await waitFor(() => r.outcomes().length === 1, 20_000)
    expect(r.outcomes()).toEqual(['deferred'])

    // No poll and no SIGHUP: tried again after 1 s, then after 2 s (doubling), and then it goes through.
    await waitFor(
      () => r.outcomes().length === 2,
      15_000,
      () => `not retried: ${JSON.stringify(r.outcomes())}, ${r.asked.length} checks, ${r.errors}`,
    )
    expect(r.outcomes()).toEqual(['deferred', 'installed'])
    expect(r.supervisor.version).toBe('2.0.0')
    expect(r.asked).toHaveLength(4)
    expect(r.errors).toEqual([
      'update check failed: edge unreachable',
      'update check failed: edge unreachable',
    ])
    const [, second, third, fourth] = r.asked
    // Node's timers run on a monotonic clock rounded to the millisecond: measured with Date.now() a
    // 1000 ms timer may fire at 999 (seen in CI), so allow a few ms early; the doubling is what counts.
    const early = 5
    expect(third! - second!).toBeGreaterThanOrEqual(1000 - early)
    expect(fourth! - third!).toBeGreaterThanOrEqual(2000 - early)
    // Through, nothing owed: no further check comes by itself.
    await sleep(2500)
    expect(r.asked).toHaveLength(4)
  }, 60_000)

  it('starts no retry once stopped', async () => {
    const r = await deferring(1, 800)
    r.checks.start()
    r.checks.trigger()
    await waitFor(() => r.outcomes().length === 1, 20_000)
    expect(r.outcomes()).toEqual(['deferred'])
    r.checks.stop()
    await sleep(1500)
    expect(r.asked).toHaveLength(1)
    expect(r.supervisor.version).toBe('1.0.0')
  }, 60_000)

  it('keeps a deferral across a restart of the agent: the retry still comes when due, its back-off kept', async () => {
    const first = await deferring(1, 2500)
    first.checks.start()
    first.checks.trigger()
    await waitFor(() => first.outcomes().length === 1, 20_000)
    expect(first.outcomes()).toEqual(['deferred'])
    const [owed] = first.supervisor.deferred
    expect(owed).toMatchObject({ version: '2.0.0', attempt: 1 })
    // The agent is restarted (a unit restart, a reboot) before the retry is due.
    first.checks.stop()
    await first.supervisor.stop()

    // The restarted agent's 1.0.0 is busy once more at its first prepare.
    const second = await deferring(1, 2500, [], first.dir)
    expect(second.supervisor.deferred).toEqual([owed])
    second.checks.start()
    // Not at once (the back-off holds), and without a SIGHUP (--interval 0): when it is due. Before, the
    // deferral was in memory only: the restarted agent knew nothing of it and never checked again.
    await sleep(300)
    expect(second.asked).toEqual([])
    await waitFor(
      () => second.outcomes().length === 1,
      20_000,
      () => `not retried after the restart: ${second.asked.length} checks`,
    )
    expect(second.asked[0]!).toBeGreaterThanOrEqual(owed!.retryAt)
    // Refused again: the back-off goes on from the attempt before the restart, not from the first.
    expect(second.outcomes()).toEqual(['deferred'])
    expect(second.supervisor.deferred).toMatchObject([{ version: '2.0.0', attempt: 2 }])
  }, 60_000)

  it('retries at once, after a restart, a deferral whose time came while the agent was down', async () => {
    const dir = await tempDir('deltaport-update-checks-due-')
    await mkdir(join(dir, 'run'), { recursive: true })
    await writeFile(
      join(dir, 'run', 'deferred.json'),
      JSON.stringify({ deferred: [{ version: '2.0.0', attempt: 3, retryAt: Date.now() - 60_000 }] }),
    )
    const r = await deferring(0, 1000, [], dir)
    r.checks.start()
    await waitFor(
      () => r.outcomes().length === 1,
      10_000,
      () => `not retried: ${r.asked.length} checks`,
    )
    expect(r.outcomes()).toEqual(['installed'])
    expect(r.supervisor.deferred).toEqual([])
    expect(JSON.parse(await readFile(join(dir, 'run', 'deferred.json'), 'utf8'))).toEqual({ deferred: [] })
  }, 60_000)

  it('does not busy-loop on a deferral set under a clock far ahead: it waits deferRetryMaxMs at most', async () => {
    // Written while the wall clock was 30 days ahead (stepped back since, or another machine's file):
    // past 2^31 - 1 ms the retry timer fired after 1 ms, the check refused the still-deferred version,
    // and the next timer fired at once again, asking the edge in a loop.
    const dir = await tempDir('deltaport-update-checks-future-')
    await mkdir(join(dir, 'run'), { recursive: true })
    await writeFile(
      join(dir, 'run', 'deferred.json'),
      JSON.stringify({ deferred: [{ version: '2.0.0', attempt: 2, retryAt: Date.now() + 30 * 86_400_000 }] }),
    )
    // deferRetryMaxMs is 4 × 500 ms: the retry comes within 2 s, not in 30 days, and only once.
    const r = await deferring(0, 500, [], dir)
    const restored = r.supervisor.deferred[0]!.retryAt
    r.checks.start()
    await sleep(300)
    expect(r.asked).toEqual([])
    expect(restored).toBeLessThanOrEqual(Date.now() + 2000)
    await waitFor(
      () => r.outcomes().length === 1,
      10_000,
      () => `not retried: ${r.asked.length} checks`,
    )
    expect(r.outcomes()).toEqual(['installed'])
    expect(r.asked).toHaveLength(1)
  }, 60_000)
})
