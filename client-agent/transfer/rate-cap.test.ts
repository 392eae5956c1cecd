import { describe, expect, it } from 'vitest'
import { RateCap } from './rate-cap.ts'

describe('RateCap', () => {
  it('holds a transfer to its rate, however the bytes arrive', async () => {
    const cap = new RateCap(1_000_000)
    const began = Date.now()
    // Two "parallel ranges" reporting into the same cap share it: 400 kB at 1 MB/s is at least 0.4 s.
    await Promise.all(
      [0, 1].map(async () => {
        for (let i = 0; i < 4; i++) await cap.received(50_000)
      }),
    )
    expect(Date.now() - began).toBeGreaterThanOrEqual(380)
  })

  it('does not wait without a cap, and stops waiting when aborted', async () => {
    const began = Date.now()
    await new RateCap(0).received(1e12)
    expect(Date.now() - began).toBeLessThan(50)
    const abort = new AbortController()
    const waiting = new RateCap(1).received(1e6, abort.signal)
    abort.abort()
    await expect(waiting).rejects.toMatchObject({ name: 'AbortError' })
  })
})
