import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { TelemetryQueue } from '../telemetry/queue.ts'
import { runTelemetryLoop } from '../telemetry/uploader.ts'
import { retryWaitMs } from '../transfer/backoff.ts'
import { type FaultProxy, startFaultProxy } from './fault-proxy.ts'

/**
 * The daemon's telemetry loop backs off with the agent's one back-off (retryWaitMs) on its own scale:
 * 2 × the flush interval after the first failure, doubling up to 30 min, jittered to 50–100 %, and
 * never sooner than the edge's Retry-After.
 */

let proxy: FaultProxy | undefined
afterEach(async () => {
  await proxy?.close()
  proxy = undefined
})

/** A queue holding one event, so every flush posts. */
async function queueWithEvent(): Promise<TelemetryQueue> {
  const queue = new TelemetryQueue(await mkdtemp(join(tmpdir(), 'deltaport-tb-')))
  await queue.record([{ artifact: 'tel', at: new Date().toISOString(), count: 1, kind: 'use' }])
  return queue
}

/** Runs the loop until it failed `failures` times; when each failure was reported (performance.now()). */
async function failuresOf(queue: TelemetryQueue, edgeUrl: string, intervalMs: number, failures: number) {
  const stop = new AbortController()
  const at: number[] = []
  await runTelemetryLoop(queue, edgeUrl, {
    intervalMs,
    signal: stop.signal,
    onError: () => {
      at.push(performance.now())
      if (at.length >= failures) stop.abort()
    },
  })
  return at
}

describe('the telemetry loop against an edge it cannot reach', () => {
  it('waits 2 × the interval after the first failure, doubling, jittered to 50–100 %', async () => {
    const at = await failuresOf(await queueWithEvent(), 'http://127.0.0.1:9', 20, 5)
    const gaps = at.slice(1).map((t, i) => t - at[i]!)
    // 40, 80, 160, 320 ms before jitter; a refused connection (and a busy machine) adds a little. The
    // transfers' scale (500 ms doubling) would be far above, no back-off far below.
    expect(gaps).toHaveLength(4)
    for (const [i, gap] of gaps.entries()) {
      const backoff = 20 * 2 ** (i + 1)
      expect(gap).toBeGreaterThanOrEqual(backoff / 2 - 2)
      expect(gap).toBeLessThan(backoff + 300)
    }
  })

  it("waits at least the edge's Retry-After", async () => {
    // Every post answered 503 with Retry-After: 1 (the edge client tries a 503 three times itself).
    const arrivals: number[] = []
    proxy = await startFaultProxy('http://127.0.0.1:9', () => {
      arrivals.push(performance.now())
      return { kind: 'unavailable', retryAfter: '1' }
    })
    await failuresOf(await queueWithEvent(), proxy.url, 20, 2)
    expect(proxy.seen().map((r) => `${r.method} ${r.path}`)).toEqual(Array(6).fill('POST /v1/telemetry'))
    // Between the loop's two flushes too (the 3rd and 4th post): the interval's back-off alone would
    // be 20–40 ms.
    for (const [i, t] of arrivals.slice(1).entries()) expect(t - arrivals[i]!).toBeGreaterThanOrEqual(990)
  }, 20_000)

  it('sleeps through a Retry-After past what a timer holds (2^31 - 1 ms), instead of asking again at once', async () => {
    // 3,000,000 s (~35 days): Node fires a timer of more than 2^31 - 1 ms after 1 ms, so the loop
    // posted again at once, every time, for as long as the answer came back.
    proxy = await startFaultProxy('http://127.0.0.1:9', () => ({
      kind: 'unavailable',
      retryAfter: '3000000',
    }))
    const stop = new AbortController()
    let failures = 0
    const loop = runTelemetryLoop(await queueWithEvent(), proxy.url, {
      intervalMs: 20,
      signal: stop.signal,
      onError: () => {
        failures++
      },
    })
    await new Promise((resolve) => setTimeout(resolve, 1500))
    stop.abort()
    await loop
    expect(failures).toBe(1)
    // The edge client hands a Retry-After over 5 s back at once: one post.
    expect(proxy.seen()).toHaveLength(1)
  })

  it('stays within 30 min however long the edge stays away, and its Retry-After still wins', () => {
    const scale = { baseMs: 60_000, maxMs: 30 * 60_000, random: () => 0.999_999 }
    expect(retryWaitMs(1, 0, scale)).toBeLessThanOrEqual(120_000)
    expect(retryWaitMs(50, 0, scale)).toBeLessThanOrEqual(30 * 60_000)
    expect(retryWaitMs(50, 0, { ...scale, random: () => 0 })).toBe(15 * 60_000)
    expect(retryWaitMs(50, 3_600_000, scale)).toBe(3_600_000)
  })
})
