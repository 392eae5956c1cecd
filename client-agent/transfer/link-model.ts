/**
 * Deterministic discrete-event model of fetching a file as HTTP Range requests over one bottleneck link,
 * used to benchmark and test range strategies without a network. Fluid model: between events every
 * flowing range moves bytes at a constant rate, so the simulation jumps from event to event.
 *
 * What is modelled, and the choices made (see docs/decisions/0007-adaptive-range-controller.md):
 * - Keep-alive connections, one range at a time each, with a congestion window that persists between
 *   ranges. An idle connection restarts from the initial window after an RTO (Linux slow-start-after-idle);
 *   a new connection pays TCP + TLS 1.3 handshakes (2 RTT) and starts from the initial window.
 * - Each request waits RTT + edge overhead + jitter (exponential) for its first byte.
 * - Flows get max-min fair shares of the bandwidth, each capped at cwnd / RTT; `backgroundFlows` competing
 *   long-lived flows take their fair share too (a shared Wi-Fi).
 * - Window growth is ack-clocked: slow start doubles per round trip of delivered data, congestion avoidance
 *   grows 1/8 per round trip (closer to CUBIC's fast regrowth on random loss than to Reno's +1 MSS).
 * - Random packet loss: fast recovery multiplies cwnd by 0.7; with too few packets in flight for
 *   duplicate ACKs (cwnd <= 4 segments) it is a retransmission timeout instead (stall for the RTO, back to
 *   one segment). SACK and tail-loss probes make RTOs rare otherwise, so they are not drawn at random. The
 *   sum of windows beyond bandwidth-delay product + buffer costs a congestion loss on the largest window.
 * - Range failures: an active range dies at `failuresPerSecond` (a stalled or reset connection); the agent
 *   notices after a stall timeout, drops the connection and re-requests the whole range (partial bytes of a
 *   failed range are not trusted).
 * Not modelled: queueing delay, HTTP/2 multiplexing, the server's pacing, receive windows.
 */

import type { Rng } from '../../predict/random.ts'
import { mulberry32 } from '../../predict/random.ts'
import type { RangeErrorKind, RangePlan, RangeSample } from './controller.ts'

/** What `simulateDownload` drives: RangeController fits, and so does a fixed plan. */
export interface RangeStrategy {
  next(now: number): RangePlan
  onRangeComplete(sample: RangeSample): void
  onRangeError(now: number, kind: RangeErrorKind): void
}

export interface LinkProfile {
  name: string
  bandwidthBitsPerSec: number
  rttMs: number
  /** Per-packet loss probability. */
  lossRate: number
  /** Mean of the exponential extra latency added to each request's first byte. */
  jitterMs: number
  /** Edge time to answer a range request (cache lookup, headers). */
  requestOverheadMs: number
  /** Rate at which an active range dies and must be retried. */
  failuresPerSecond: number
  /** Other long-lived flows sharing the bottleneck. */
  backgroundFlows: number
}

const KiB = 1024

export const PROFILES = {
  lan: {
    name: 'LAN',
    bandwidthBitsPerSec: 1e9,
    rttMs: 1,
    lossRate: 0,
    jitterMs: 0.1,
    requestOverheadMs: 1,
    failuresPerSecond: 0,
    backgroundFlows: 0,
  },
  '4g': {
    name: '4G',
    bandwidthBitsPerSec: 20e6,
    rttMs: 60,
    lossRate: 0.01,
    jitterMs: 15,
    requestOverheadMs: 2,
    failuresPerSecond: 0.01,
    backgroundFlows: 0,
  },
  wifi: {
    name: 'congested Wi-Fi',
    bandwidthBitsPerSec: 5e6,
    rttMs: 30,
    lossRate: 0.03,
    jitterMs: 40,
    requestOverheadMs: 2,
    failuresPerSecond: 0.01,
    backgroundFlows: 2,
  },
  satellite: {
    name: 'satellite',
    bandwidthBitsPerSec: 10e6,
    rttMs: 600,
    lossRate: 0.005,
    jitterMs: 20,
    requestOverheadMs: 2,
    failuresPerSecond: 0.005,
    backgroundFlows: 0,
  },
} as const satisfies Record<string, LinkProfile>

export interface SimulationResult {
  completionMs: number
  requests: number
  retries: number
  /** Bytes delivered by ranges that then failed. */
  wastedBytes: number
  connectionsOpened: number
}

export function fixedStrategy(rangeBytes: number, parallel: number): RangeStrategy {
  return { next: () => ({ rangeBytes, parallel }), onRangeComplete() {}, onRangeError() {} }
}

const MSS = 1460
const INITIAL_CWND = 10 * MSS
/** Fewer packets than this in flight after a loss cannot raise three duplicate ACKs. */
const DUPACK_PACKETS = 3
const FAST_RECOVERY_BETA = 0.7
const AVOIDANCE_GROWTH = 1 / 8
const HANDSHAKE_RTTS = 2
const MIN_RTO_MS = 200
const EPS = 1e-9
/** Byte amounts below this are float residue. */
const BYTE_EPS = 1e-3
const MAX_EVENTS = 5_000_000

interface Connection {
  cwnd: number
  ssthresh: number
  idleSince: number
}

interface Transfer {
  conn: Connection
  offset: number
  bytes: number
  done: number
  startedAt: number
  firstByteAt: number
  state: 'waiting' | 'flowing' | 'stalled' | 'dead'
  /** When a stall ends, or when a dead range is noticed. */
  until: number
  failAt: number
  /** Bytes until the next packet loss on this flow. */
  lossIn: number
  rate: number
}

function exponential(rng: Rng, mean: number): number {
  return -Math.log(1 - rng()) * mean
}

/** Max-min fair shares of `capacity` among flows capped at `caps`, plus `uncapped` greedy flows. */
export function fairShares(capacity: number, caps: readonly number[], uncapped = 0): number[] {
  const order = caps.map((_, i) => i).sort((a, b) => caps[a]! - caps[b]!)
  const shares = new Array<number>(caps.length).fill(0)
  let left = capacity
  let flows = caps.length + uncapped
  for (const i of order) {
    const share = Math.min(caps[i]!, left / flows)
    shares[i] = share
    left -= share
    flows--
  }
  return shares
}

/**
 * Downloads `totalBytes` with `strategy` over `profile`; the same seed gives the same result. Times are
 * milliseconds from the start of the download.
 */
export function simulateDownload(
  totalBytes: number,
  strategy: RangeStrategy,
  profile: LinkProfile,
  seed: number,
): SimulationResult {
  const rng = mulberry32(seed)
  const capacity = profile.bandwidthBitsPerSec / 8 / 1000 // bytes per ms
  const rtt = profile.rttMs
  const rto = Math.max(MIN_RTO_MS, 2 * rtt)
  const stallTimeout = Math.max(2000, 4 * rtt)
  const bdp = capacity * rtt
  const cwndCeiling = 2 * bdp + 64 * KiB
  const tick = rtt / 2
  const lossMean = profile.lossRate > 0 ? MSS / profile.lossRate : Number.POSITIVE_INFINITY

  const pending: { offset: number; bytes: number }[] = [{ offset: 0, bytes: totalBytes }]
  const idle: Connection[] = []
  const active: Transfer[] = []
  let now = 0
  let nextTick = tick
  let completed = 0
  let requests = 0
  let retries = 0
  let wastedBytes = 0
  let connectionsOpened = 0

  const sampleFailure = (from: number) =>
    profile.failuresPerSecond > 0 ? from + exponential(rng, 1000 / profile.failuresPerSecond) : Infinity

  const issue = (rangeBytes: number) => {
    const span = pending[0]!
    const bytes = Math.min(span.bytes, rangeBytes)
    const offset = span.offset
    span.offset += bytes
    span.bytes -= bytes
    if (span.bytes === 0) pending.shift()

    // Reuse the warmest idle connection; otherwise open one.
    let handshake = 0
    let conn = idle.sort((a, b) => a.cwnd - b.cwnd).pop()
    if (conn === undefined) {
      conn = { cwnd: INITIAL_CWND, ssthresh: Number.POSITIVE_INFINITY, idleSince: now }
      handshake = HANDSHAKE_RTTS * rtt
      connectionsOpened++
    } else if (now - conn.idleSince > rto) {
      conn.cwnd = Math.min(conn.cwnd, INITIAL_CWND)
    }
    requests++
    active.push({
      conn,
      offset,
      bytes,
      done: 0,
      startedAt: now,
      firstByteAt: now + handshake + rtt + profile.requestOverheadMs + exponential(rng, profile.jitterMs),
      state: 'waiting',
      until: 0,
      failAt: sampleFailure(now),
      lossIn: exponential(rng, lossMean),
      rate: 0,
    })
  }

  const fill = () => {
    const plan = strategy.next(now)
    const parallel = Math.max(1, Math.floor(plan.parallel))
    const rangeBytes = Math.max(1, Math.floor(plan.rangeBytes))
    while (active.length < parallel && pending.length > 0) issue(rangeBytes)
  }

  const onLoss = (t: Transfer) => {
    const c = t.conn
    c.ssthresh = Math.max(c.cwnd * FAST_RECOVERY_BETA, 2 * MSS)
    if (c.cwnd <= (DUPACK_PACKETS + 1) * MSS) {
      c.cwnd = MSS
      t.state = 'stalled'
      t.until = now + rto
    } else {
      c.cwnd = c.ssthresh
    }
    t.lossIn = exponential(rng, lossMean)
  }

  fill()
  for (let events = 0; completed < totalBytes; events++) {
    if (events > MAX_EVENTS) throw new Error(`simulation did not finish within ${MAX_EVENTS} events`)

    const flowing = active.filter((t) => t.state === 'flowing')
    const shares = fairShares(
      capacity,
      flowing.map((t) => t.conn.cwnd / rtt),
      profile.backgroundFlows,
    )
    flowing.forEach((t, i) => {
      t.rate = shares[i]!
    })

    let next = nextTick
    for (const t of active) {
      if (t.state !== 'dead') next = Math.min(next, t.failAt)
      if (t.state === 'waiting') next = Math.min(next, t.firstByteAt)
      else if (t.state === 'stalled' || t.state === 'dead') next = Math.min(next, t.until)
      else if (t.rate > 0) next = Math.min(next, now + (t.bytes - t.done) / t.rate, now + t.lossIn / t.rate)
    }

    const dt = next - now
    for (const t of flowing) {
      const moved = Math.min(t.rate * dt, t.bytes - t.done)
      t.done += moved
      t.lossIn -= moved
      const c = t.conn
      c.cwnd = Math.min(cwndCeiling, c.cwnd + (c.cwnd < c.ssthresh ? moved : moved * AVOIDANCE_GROWTH))
    }
    now = next

    if (now >= nextTick - EPS) {
      nextTick = now + tick
      // Windows that together overflow the bottleneck's buffer lose a packet on the largest one.
      const sum = flowing.reduce((s, t) => s + t.conn.cwnd, 0)
      if (flowing.length > 0 && sum > cwndCeiling) {
        const largest = flowing.reduce((a, b) => (b.conn.cwnd > a.conn.cwnd ? b : a))
        onLoss(largest)
      }
    }

    let changed = false
    for (let i = active.length - 1; i >= 0; i--) {
      const t = active[i]!
      if (t.state !== 'dead' && t.failAt <= now + EPS) {
        t.state = 'dead'
        t.until = now + stallTimeout
      } else if (t.state === 'waiting' && t.firstByteAt <= now + EPS) {
        t.state = 'flowing'
      } else if (t.state === 'stalled' && t.until <= now + EPS) {
        t.state = 'flowing'
      } else if (t.state === 'dead' && t.until <= now + EPS) {
        active.splice(i, 1)
        pending.unshift({ offset: t.offset, bytes: t.bytes })
        retries++
        wastedBytes += t.done
        changed = true
        strategy.onRangeError(now, 'timeout')
      } else if (t.state === 'flowing' && t.done >= t.bytes - BYTE_EPS) {
        active.splice(i, 1)
        completed += t.bytes
        t.conn.idleSince = now
        idle.push(t.conn)
        changed = true
        strategy.onRangeComplete({
          bytes: t.bytes,
          startedAt: t.startedAt,
          firstByteAt: t.firstByteAt,
          finishedAt: now,
        })
      } else if (t.state === 'flowing' && t.lossIn <= BYTE_EPS) {
        onLoss(t)
      }
    }
    if (changed) fill()
  }

  return { completionMs: now, requests, retries, wastedBytes, connectionsOpened }
}
