import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import type { Supervisor, SupervisorEvent } from '../supervisor.ts'
import { cleanup, rawConnection, serviceFile, supervise, tempDir, waitFor, within } from './harness.ts'

/**
 * A body forwarded live (no swap holds writes) that sends a byte just within every
 * `bodyIdleTimeoutMs` never went idle, and live bodies had no `bodyMinRate`: such a write stayed in
 * flight for as long as its client liked. A swap drains the writes in flight before its flush, so one
 * trickling client deferred every swap (errorClass `drain`), again at each retry: the update never came.
 */
const supervisors: Supervisor[] = []
afterAll(async () => {
  for (const s of supervisors) await s.stop().catch(() => undefined)
  await cleanup()
})

describe('swap proxy: a body forwarded live that trickles', () => {
  it('gets 408 below bodyMinRate, and the swap it held up goes ahead', async () => {
    const dir = await tempDir('deltaport-swap-live-trickle-')
    const artifact = await serviceFile(join(dir, 'service.mjs'), {
      onEnd: `res.end('ok ' + process.env.DELTAPORT_VERSION)`,
    })
    const events: SupervisorEvent[] = []
    const none = { kind: 'none' } as const
    const supervisor = await supervise(
      dir,
      artifact,
      {
        prepare: none,
        flush: none,
        bodyIdleTimeoutMs: 5000,
        bodyMinRate: { bytesPerSecond: 100, windowMs: 1000 },
        stopTimeoutMs: 6000,
      },
      events,
    )
    supervisors.push(supervisor)
    const upload = rawConnection(supervisor.publicPort)
    upload.send('POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-length: 100000\r\n\r\nx')
    // One byte every 300 ms: never idle, far below 100 bytes/s.
    const trickle = setInterval(() => {
      if (!upload.ended) upload.send('x')
    }, 300)
    try {
      await waitFor(() => supervisor.counters.forwarded >= 1, 10_000)
      const swap = supervisor.swapTo({ version: '2.0.0', artifactPath: artifact })
      expect(await within(swap, 30_000, 'the swap')).toMatchObject({ outcome: 'installed', serving: '2.0.0' })
      const answer = await upload.receive(/^HTTP\/1\.1 408 /, 5000)
      expect(answer).toContain('the body arrived slower than 100 bytes/s over 1000 ms')
      await waitFor(() => upload.ended, 5000)
    } finally {
      clearInterval(trickle)
    }
  }, 60_000)
})
