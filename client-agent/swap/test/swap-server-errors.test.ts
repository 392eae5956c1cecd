import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import type { SupervisorEvent } from '../supervisor.ts'
import {
  cleanup,
  harness,
  journalWith,
  post,
  serviceFile,
  supervise,
  tempDir,
  waitFor,
  within,
} from './harness.ts'

/**
 * A held write the serving version itself answers with 5xx (a request that breaks every version of the
 * service), or answers slowly. Without a swap its client would simply get that answer; with one it must
 * get it too, and the swap, the journal and the agent's start must not wait for a better answer that
 * never comes, nor send the write again and again.
 */
afterAll(cleanup)

describe('buffered swap: a write that every version answers with 5xx', () => {
  it('answers the held client with the old version’s 5xx after the rollback, and the swap ends', async () => {
    // Both builds answer every write with 500; 2.0.0 starts slowly so the write is surely held.
    const h = await harness([
      { version: '1.0.0', fail: 'writes' },
      { version: '2.0.0', fail: 'writes', startupDelayMs: 800 },
    ])
    const swap = h.swapTo('2.0.0')
    await h.until((e) => e.type === 'buffering')
    const answer = await within(post(h.port, 'broken', 1), 20_000, 'the held write')
    // What 1.0.0 says about it, as a live request would have got: not a hang, not a retry loop.
    expect(answer.status).toBe(500)
    expect(await answer.json()).toEqual({ error: 'this build fails every write' })
    const report = await within(swap, 20_000, 'the swap')
    expect(report).toMatchObject({ outcome: 'rolled-back', errorClass: 'replay', serving: '1.0.0' })
    expect(h.supervisor.counters.writes).toBe(0)
  })

  it('after a crash, retries a journaled write its 5xx for healthTimeoutMs, then serves anyway', async () => {
    const dir = await tempDir('deltaport-swap-5xx-journal-')
    await journalWith(dir, [
      { id: 1, client: 'c1', path: '/warming' },
      { id: 2, client: 'c2', path: '/broken' },
    ])
    // The first write to /warming gets 503 (the service is still warming up), later ones are applied;
    // /broken gets 500 every time.
    const artifact = await serviceFile(join(dir, 'service.mjs'), {
      imports: `import { appendFileSync } from 'node:fs'`,
      setup: 'let warm = false',
      onEnd: `if (req.url === '/health') return res.end('ok')
    if (req.url === '/broken') return res.writeHead(500).end()
    if (!warm) {
      warm = true
      return res.writeHead(503).end()
    }
    appendFileSync(process.env.DELTAPORT_DATA_DIR + '/applied.log', req.url + '\\n')
    res.end('applied')`,
    })
    const events: SupervisorEvent[] = []
    const supervisor = await within(
      supervise(dir, artifact, { healthTimeoutMs: 2000 }, events),
      15_000,
      'the start',
    )
    try {
      expect(events).toContainEqual(expect.objectContaining({ type: 'started', recovered: 2 }))
      // The one that only needed a retry was applied; the broken one no longer holds the start.
      expect(await readFile(join(dir, 'data', 'applied.log'), 'utf8')).toBe('/warming\n')
      expect(supervisor.counters.writes).toBe(0)
      const health = await fetch(`http://127.0.0.1:${supervisor.publicPort}/health`)
      expect(health.status).toBe(200)
    } finally {
      await supervisor.stop()
    }
  })
})

describe('buffered swap: a write the serving version answers slowly', () => {
  it('waits for the old version’s answer like a live request does, instead of sending it again', async () => {
    // Every write takes 1.5 s, longer than replayTimeoutMs: live that is no problem.
    const h = await harness(
      [
        { version: '1.0.0', writeDelayMs: 1500 },
        { version: '2.0.0', writeDelayMs: 1500, startupDelayMs: 300 },
      ],
      { healthTimeoutMs: 1000, replayTimeoutMs: 1000 },
    )
    expect((await post(h.port, 'live', 1)).status).toBe(200)
    const swap = h.swapTo('2.0.0')
    await h.until((e) => e.type === 'buffering')
    const answer = post(h.port, 'slow', 1)
    // The new version's replay still has replayTimeoutMs to answer (a hung new version is failed), so
    // this one is rolled back; the old version then takes the write and is waited for.
    const report = await within(swap, 20_000, 'the swap')
    expect(report).toMatchObject({ outcome: 'rolled-back', errorClass: 'replay', serving: '1.0.0' })
    const held = await within(answer, 10_000, 'the held write')
    expect(held.status).toBe(200)
    // Sent to 1.0.0 once: a second send would be acknowledged as a duplicate.
    expect(await held.json()).toMatchObject({ version: '1.0.0', applied: true })
    expect(h.events.filter((e) => e.type === 'error')).toEqual([])
  }, 60_000)

  it('stops within its stop timeouts while the old version is still working on a replayed write', async () => {
    // 1.0.0 takes 30 s per write; 2.0.0 says it is unhealthy, so the held write goes back to 1.0.0.
    const h = await harness(
      [
        { version: '1.0.0', writeDelayMs: 30_000 },
        { version: '2.0.0', fail: 'health' },
      ],
      { healthTimeoutMs: 20_000, unhealthyGraceMs: 200, stopTimeoutMs: 1000 },
    )
    const swap = h.swapTo('2.0.0')
    await h.until((e) => e.type === 'buffering')
    const answer = post(h.port, 'slow', 1).catch(() => null)
    await h.until((e) => e.type === 'swap-done' || h.supervisor.counters.held === 1)
    await waitFor(() => h.supervisor.mode === 'pass', 20_000)
    const stopping = Date.now()
    await h.supervisor.stop()
    // The replay had stopTimeoutMs after the stop began, the held client as long again: not 30 s.
    expect(Date.now() - stopping).toBeLessThan(6000)
    // Never acknowledged, so still owed: the next start replays it.
    expect(await answer).toBeNull()
    void swap.catch(() => undefined)
  }, 60_000)
})
