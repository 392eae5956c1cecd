import { setTimeout as sleep } from 'node:timers/promises'
import { gzipSync } from 'node:zlib'
import { TelemetryReceipt } from '../../schemas/aggregation.ts'
import type { TelemetryBatch } from '../../schemas/telemetry.ts'
import { EdgeClient } from '../edge-client.ts'
import { AgentError } from '../errors.ts'
import { retryWaitMs } from '../transfer/backoff.ts'
import { errorFromResponse, retryAfterMs } from '../transfer/error-response.ts'
import { JSON_LIMITS, readJsonBounded } from '../transfer/read-json.ts'
import type { TelemetryQueue } from './queue.ts'

export interface FlushResult {
  batches: number
  events: number
  remaining: boolean
}

/**
 * Sends queued events in gzip-compressed batches until the queue is empty. A batch leaves the queue
 * only once the edge accepted it; a 429 or a network error stops this flush (the caller retries later,
 * with backoff) and the events stay queued.
 */
export async function flushTelemetry(
  queue: TelemetryQueue,
  edgeUrl: string,
  options: {
    fetchImpl?: typeof fetch
    now?: () => Date
    maxBatches?: number
    /**
     * Stops the flush where it is (the daemon stopping): a batch whose answer was not read stays queued,
     * and if the edge took it, its next post is recognised as a replay.
     */
    signal?: AbortSignal
  } = {},
): Promise<FlushResult> {
  const edge = new EdgeClient(edgeUrl, options.fetchImpl)
  let batches = 0
  let events = 0
  for (let i = 0; i < (options.maxBatches ?? 100); i++) {
    const next = await queue.peekBatch()
    if (!next) return { batches, events, remaining: false }
    const batch: TelemetryBatch = { ...next, sentAt: (options.now?.() ?? new Date()).toISOString() }
    const response = await edge.request('/v1/telemetry', {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' },
      body: gzipSync(JSON.stringify(batch)),
      ...(options.signal ? { signal: options.signal } : {}),
    })
    if (response.status === 202 || response.status === 200) {
      const behind = await numberedBehind(response, next.batchSeq, options.signal)
      if (behind !== null) {
        // Not these events: the edge has later numbers from this client than the spool (it went back).
        await queue.renumberAfter(behind)
        continue
      }
    }
    // 409 = a replay of a batch the edge already has: it is safe to drop it here too.
    if (response.status === 202 || response.status === 200 || response.status === 409) {
      await response.body?.cancel().catch(() => undefined)
      await queue.acknowledge(next.events.length)
      batches++
      events += next.events.length
      continue
    }
    throw await errorFromResponse(response, 'posting telemetry')
  }
  return { batches, events, remaining: true }
}

/**
 * The edge's last sequence number from this client when its receipt calls the batch a duplicate of a
 * *later* one, else null. A batch numbered like the last one taken is a true replay (sent, then the agent
 * died before noting the acknowledgement); one numbered below it never came from this spool's history.
 * A receipt that cannot be read (an older edge, a proxy's body) is taken as an acknowledgement.
 */
async function numberedBehind(
  response: Response,
  batchSeq: number,
  signal: AbortSignal | undefined,
): Promise<number | null> {
  const json = await readJsonBounded(
    response,
    JSON_LIMITS.receipt,
    'the telemetry receipt',
    signal ? { signal } : {},
  ).catch(() => null)
  // Stopped while the receipt was read: the batch stays queued (its next post is a replay if it was taken).
  signal?.throwIfAborted()
  const receipt = TelemetryReceipt.safeParse(json)
  if (!receipt.success || !receipt.data.duplicate) return null
  const lastSeq = receipt.data.lastSeq
  if (lastSeq === undefined || lastSeq <= batchSeq || lastSeq >= Number.MAX_SAFE_INTEGER) return null
  return lastSeq
}

/** The longest wait between two failed flushes (before jitter). */
const MAX_BACKOFF_MS = 30 * 60_000

/**
 * The longest Retry-After the loop honours: a day. Past 2^31 - 1 ms (~24.8 days; a Retry-After takes up
 * to nine digits of seconds) Node fires a timer after 1 ms, and the loop posted again at once, every
 * time, for as long as the answer (the edge's, or a portal's in the path) said so.
 */
const MAX_RETRY_AFTER_MS = 24 * 3_600_000

/**
 * Flushes every `intervalMs`, backing off while the edge is unreachable or refusing (the agent's
 * retryWaitMs on this loop's scale: 2 × `intervalMs` after the first failure, doubling up to 30 min,
 * jittered to 50–100 %, at least the edge's Retry-After up to a day), until `signal` aborts, which also
 * stops a flush under way (its batch stays queued). Used by the daemon.
 */
export async function runTelemetryLoop(
  queue: TelemetryQueue,
  edgeUrl: string,
  options: {
    intervalMs: number
    signal: AbortSignal
    onError?: (error: Error) => void
    fetchImpl?: typeof fetch
  },
): Promise<void> {
  let failures = 0
  while (!options.signal.aborted) {
    let waitMs = options.intervalMs
    try {
      await flushTelemetry(queue, edgeUrl, {
        signal: options.signal,
        ...(options.fetchImpl ? { fetchImpl: options.fetchImpl } : {}),
      })
      failures = 0
    } catch (error) {
      // Stopped (the daemon stopping, or its config reloaded): no failure, nothing to report.
      if (options.signal.aborted) break
      failures++
      waitMs = retryWaitMs(failures, Math.min(retryAfterMs(error), MAX_RETRY_AFTER_MS), {
        baseMs: options.intervalMs,
        maxMs: MAX_BACKOFF_MS,
      })
      options.onError?.(error instanceof Error ? error : new AgentError('network', String(error)))
    }
    await sleep(waitMs, undefined, { signal: options.signal }).catch(() => undefined)
  }
}
