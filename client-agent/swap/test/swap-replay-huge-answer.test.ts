import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import type { SupervisorEvent } from '../supervisor.ts'
import { cleanup, serviceFile, supervise, tempDir, waitFor, within } from './harness.ts'

/**
 * A held write's answer is collected whole before its client gets it (its `done` record goes first).
 * A service that answers a replayed write with a body that never ends (a stream) or is huge held a
 * replay lane for as long as bytes came, and the agent's memory grew with them: the swap never ended.
 */
afterAll(cleanup)

describe('buffered swap: a replayed write answered with a body that never ends', () => {
  it('is settled once the answer passes the cap; its client gets 502 saying it was applied, and the swap ends', async () => {
    const dir = await tempDir('deltaport-swap-huge-answer-')
    // POST /feed answers 200 and then streams for ever; /health and anything else answer at once.
    const service = (version: string, startupDelayMs: number) =>
      serviceFile(join(dir, `svc-${version}.mjs`), {
        setup: `const chunk = Buffer.alloc(1024 * 1024, 120)
let feeds = 0`,
        onEnd: `if (req.url === '/feed') {
      feeds += 1
      res.writeHead(200, { 'content-type': 'application/octet-stream' })
      const more = () => { while (res.write(chunk)) {} }
      res.on('drain', more)
      return more()
    }
    if (req.url === '/feeds') return res.end(String(feeds))
    res.end('ok ${version}')`,
        startupDelayMs,
      })
    const events: SupervisorEvent[] = []
    const none = { kind: 'none' } as const
    const supervisor = await supervise(
      dir,
      await service('1.0.0', 0),
      { prepare: none, flush: none, probationMs: 200 },
      events,
    )
    try {
      const swap = supervisor.swapTo({ version: '2.0.0', artifactPath: await service('2.0.0', 800) })
      await waitFor(() => events.some((e) => e.type === 'buffering'), 20_000)
      const held = fetch(`http://127.0.0.1:${supervisor.publicPort}/feed`, {
        method: 'POST',
        headers: { 'x-client-id': 'feeder' },
        body: '{}',
      })
      // The new version took the write (it answered 200) and has done nothing wrong: it is installed.
      expect(await within(swap, 30_000, 'the swap')).toMatchObject({ outcome: 'installed', serving: '2.0.0' })
      const answer = await within(held, 10_000, 'the held write')
      expect(answer.status).toBe(502)
      expect(answer.headers.get('content-type')).toBe('application/problem+json')
      expect(await answer.json()).toMatchObject({
        status: 502,
        detail: expect.stringMatching(/answered 200 .* over 8388608 bytes/),
      })
      // Sent once; the replay is over and nothing stays held.
      const feeds = await fetch(`http://127.0.0.1:${supervisor.publicPort}/feeds`)
      expect(await feeds.text()).toBe('1')
      expect(supervisor.counters.writes).toBe(0)
    } finally {
      await supervisor.stop()
    }
  }, 60_000)
})
