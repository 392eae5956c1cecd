import { afterEach, describe, expect, it } from 'vitest'
import { pollBackoffMs, runDaemon } from '../daemon/daemon.ts'
import { TelemetryQueue } from '../telemetry/queue.ts'
import { type Fault, type FaultProxy, startFaultProxy } from './fault-proxy.ts'
import { useEdgeWorkspace } from './local-edge.ts'

/**
 * The long-running daemon in front of the real edge (a loopback fault proxy in between stands in for
 * the network): stopping it while an error answer is being read, and its polls while the edge is away.
 */

const suite = useEdgeWorkspace()

let proxy: FaultProxy | undefined
afterEach(async () => {
  await proxy?.close()
  proxy = undefined
})

const isPoll = (path: string) => path.startsWith('/v1/prefetch')

describe('stopping the daemon while an error answer is read', () => {
  it('stops at once, not when the stall timer of the half-sent error body fires', async () => {
    // The edge refuses a budget over 64 GiB with a 400 problem+json; the proxy passes its headers and
    // half its body on, then says nothing. The daemon reads that body for the error's detail.
    proxy = await startFaultProxy(suite.edge.url, (r): Fault | undefined =>
      isPoll(r.path) ? { kind: 'stall-body' } : undefined,
    )
    const stop = new AbortController()
    const errors: Error[] = []
    const done = runDaemon(
      { ...suite.ws.config, edgeUrl: proxy.url, idleLoadPerCore: 1000, stagingBudgetBytes: 100 * 1024 ** 3 },
      { signal: stop.signal, intervalSeconds: 60, onError: (error) => errors.push(error) },
    )
    const until = Date.now() + 20_000
    // Until the edge's answer (headers and half its body) has gone to the daemon.
    while (proxy.bodyBytes() === 0 && Date.now() < until)
      await new Promise((resolve) => setTimeout(resolve, 20))
    expect(proxy.seen().filter((r) => isPoll(r.path))).toHaveLength(1)
    await new Promise((resolve) => setTimeout(resolve, 200))
    const stopped = performance.now()
    stop.abort()
    await done
    // Before: the body read went on after the abort until its 30 s stall timer.
    expect(performance.now() - stopped).toBeLessThan(3000)
    expect(errors).toEqual([])
  }, 60_000)
})

describe('stopping the daemon while telemetry is posted', () => {
  it('stops at once, not when the header timeout of a post the edge never answers fires', async () => {
    const config = {
      ...suite.ws.config,
      idleLoadPerCore: 1000,
      installRoot: `${suite.ws.dir}/telemetry-stop`,
    }
    await new TelemetryQueue(config.installRoot).record([
      { artifact: 'app', at: new Date().toISOString(), count: 1, kind: 'use' },
    ])
    // The post reaches the proxy and is never answered; the poll goes through to the edge.
    proxy = await startFaultProxy(suite.edge.url, (r): Fault | undefined =>
      r.path === '/v1/telemetry' ? { kind: 'stall-headers' } : undefined,
    )
    const stop = new AbortController()
    const errors: Error[] = []
    const done = runDaemon(
      { ...config, edgeUrl: proxy.url },
      { signal: stop.signal, intervalSeconds: 60, onError: (error) => errors.push(error) },
    )
    const until = Date.now() + 20_000
    while (!proxy.seen().some((r) => r.path === '/v1/telemetry') && Date.now() < until)
      await new Promise((resolve) => setTimeout(resolve, 20))
    await new Promise((resolve) => setTimeout(resolve, 200))
    const stopped = performance.now()
    stop.abort()
    await done
    // Before: the flush took no signal, and the stop waited for the post's 30 s header timeout.
    expect(performance.now() - stopped).toBeLessThan(3000)
    // A stop is no failure to report, and the batch stays queued for the next start.
    expect(errors).toEqual([])
    expect(await new TelemetryQueue(config.installRoot).peekBatch()).not.toBeNull()
  }, 60_000)
})

describe('polls while the edge is away', () => {
  it('back off (2 × the interval, doubling, jittered, capped at 8 intervals) and reset once a poll succeeds', async () => {
    // The edge goes away: every connection is reset before any answer (fetch fails as it does on an
    // edge that is down) while `down`; otherwise requests reach the real edge.
    let down = true
    const polls: { at: number; down: boolean }[] = []
    proxy = await startFaultProxy(suite.edge.url, (r): Fault | undefined => {
      if (isPoll(r.path)) polls.push({ at: performance.now(), down })
      return down ? { kind: 'cut-before-answer' } : undefined
    })
    const intervalMs = 250
    const stop = new AbortController()
    const errors: Error[] = []
    let upAt = 0
    const done = runDaemon(
      { ...suite.ws.config, edgeUrl: proxy.url, idleLoadPerCore: 1000 },
      {
        signal: stop.signal,
        intervalSeconds: intervalMs / 1000,
        onError: (error) => {
          errors.push(error)
          // Five failed polls, then the edge is back; two more once it went away again.
          if (errors.length === 5) {
            down = false
            upAt = performance.now()
          }
          if (errors.length === 7) stop.abort()
        },
        // One poll gets through; then the edge goes away again (the next poll comes after the queue's
        // validUntil, 30 s on the local edge).
        onCycle: () => {
          down = true
        },
      },
    )
    const guard = setTimeout(() => stop.abort(), 80_000)
    await done
    clearTimeout(guard)
    expect(errors.map((e) => e.message)).toEqual(
      Array(7).fill(expect.stringContaining('cannot reach the edge')),
    )
    expect(polls.map((p) => p.down)).toEqual([true, true, true, true, true, false, true, true])
    const gaps = polls.slice(1).map((p, i) => p.at - (polls[i]?.at ?? 0))
    // After the k-th failure in a row: 2^k intervals before jitter (50–100 %), at most 8 intervals, at
    // least one. A cycle's own work and a busy machine add a little on top; the fixed interval it was
    // (250 ms every time) fails the lower bounds from the second gap on.
    for (const [i, gap] of gaps.slice(0, 4).entries()) {
      const backoff = Math.min(8 * intervalMs, intervalMs * 2 ** (i + 1))
      expect(gap).toBeGreaterThanOrEqual(Math.max(intervalMs, backoff / 2) - 5)
      expect(gap).toBeLessThan(backoff + 400)
    }
    // The edge back: noticed within the cap (8 intervals) of its return.
    expect((polls[5]?.at ?? 0) - upAt).toBeLessThan(8 * intervalMs + 400)
    // The success reset the count: the first failure after it waits 1–2 intervals again, not the
    // 4–8 intervals the seventh failure in a row would.
    const afterReset = gaps[6] ?? 0
    expect(afterReset).toBeGreaterThanOrEqual(intervalMs - 5)
    expect(afterReset).toBeLessThan(2 * intervalMs + 400)
  }, 120_000)

  it('stays within an hour (or one interval, if longer) however long the edge is away; its Retry-After still wins', () => {
    const highest = () => 0.999_999
    const minute = 60_000
    // The default 15 min interval: 30 min, then at most an hour.
    expect(pollBackoffMs(1, 15 * minute, 0, highest)).toBeLessThanOrEqual(30 * minute)
    expect(pollBackoffMs(50, 15 * minute, 0, highest)).toBeLessThanOrEqual(60 * minute)
    expect(pollBackoffMs(50, 15 * minute, 0, () => 0)).toBe(30 * minute)
    // A 5 s interval backs off to 40 s at most, never below 5 s.
    expect(pollBackoffMs(50, 5000, 0, highest)).toBeLessThanOrEqual(40_000)
    expect(pollBackoffMs(1, 5000, 0, () => 0)).toBe(5000)
    // A week's interval is never shortened.
    expect(pollBackoffMs(3, 7 * 24 * 60 * minute, 0, () => 0)).toBe(7 * 24 * 60 * minute)
    // The edge's Retry-After (up to an hour) over the back-off.
    expect(pollBackoffMs(1, 5000, 20 * minute)).toBe(20 * minute)
    expect(pollBackoffMs(1, 5000, 10 * 60 * minute)).toBe(60 * minute)
  })
})
