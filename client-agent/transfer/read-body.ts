import { AgentError } from '../errors.ts'

/**
 * The slowest a body may keep arriving. Judged on the time spent waiting for the sender only: what
 * the caller spends in `onChunk` (disk writes, the agent's own bandwidth cap) is not the sender's.
 */
export interface MinimumRate {
  /** 0 turns the check off. */
  bytesPerSecond: number
  /** How much waiting each judgement covers; the first comes only after this much. */
  windowMs: number
}

/**
 * 1 KiB/s over each minute of waiting. Below a congested mobile link (GPRS moves several KB/s), far
 * above a trickle of a byte every few seconds, which the stall timer alone never catches (TUF's slow
 * retrieval). A real link that dips below it loses nothing: downloads resume and delta ranges retry.
 */
export const DEFAULT_MIN_RATE: MinimumRate = { bytesPerSecond: 1024, windowMs: 60_000 }

/** Options every body read takes; `stallMs` and `minRate` default to 30 s of silence and DEFAULT_MIN_RATE. */
export interface ReadBodyOptions {
  signal?: AbortSignal
  stallMs?: number
  minRate?: MinimumRate
  /**
   * Hand `onChunk` at most this many bytes: the chunk that goes past it is cut there and the rest of
   * the body is cancelled unread. For an answer whose length the caller asked for (a range): a server
   * that sends more must not make the agent read, buffer or write what it never asked for.
   */
  limitBytes?: number
}

/**
 * Reads a response body chunk by chunk, racing every read against the abort signal and a stall timer,
 * and ending a body that keeps arriving slower than `minRate`. Aborting a fetch does not reliably wake
 * a read already waiting on its body, and a silent or trickling connection would otherwise hold the
 * agent forever; all of these become errors here, and the body is cancelled.
 */
export async function readBody(
  response: Response,
  onChunk: (chunk: Uint8Array) => Promise<void> | void,
  options: ReadBodyOptions = {},
): Promise<number> {
  if (!response.body) throw new AgentError('network', 'the response has no body')
  const reader = response.body.getReader()
  const stallMs = options.stallMs ?? 30_000
  const minRate = options.minRate ?? DEFAULT_MIN_RATE
  let total = 0
  let waitedMs = 0
  let waitedBytes = 0
  let timer: ReturnType<typeof setTimeout> | undefined
  let onAbort: (() => void) | undefined
  const interrupted = new Promise<never>((_, reject) => {
    onAbort = () => reject(options.signal?.reason ?? new DOMException('aborted', 'AbortError'))
    if (options.signal?.aborted) onAbort()
    else options.signal?.addEventListener('abort', onAbort, { once: true })
  })
  const stalled = () =>
    new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new AgentError('network', `no data for ${stallMs} ms`, { stalled: true })),
        stallMs,
      )
    })
  try {
    for (;;) {
      const asked = performance.now()
      const { done, value } = await Promise.race([
        readOrBroken(reader, options.signal),
        interrupted,
        stalled(),
      ])
      clearTimeout(timer)
      if (done) return total
      waitedMs += performance.now() - asked
      waitedBytes += value.length
      if (minRate.bytesPerSecond > 0 && waitedMs >= minRate.windowMs) {
        const rate = (waitedBytes * 1000) / waitedMs
        if (rate < minRate.bytesPerSecond) {
          throw new AgentError(
            'network',
            `the body arrived at ${rate.toFixed(1)} B/s over ${Math.round(waitedMs)} ms of waiting, below the minimum of ${minRate.bytesPerSecond} B/s`,
            { slow: true },
          )
        }
        waitedMs = 0
        waitedBytes = 0
      }
      const room = (options.limitBytes ?? Number.POSITIVE_INFINITY) - total
      // Read on to the end while within the limit, so an honest body ends (and its connection is reused).
      if (value.length > room) {
        if (room > 0) await onChunk(value.subarray(0, room))
        return total + Math.max(0, room)
      }
      total += value.length
      await onChunk(value)
    }
  } finally {
    clearTimeout(timer)
    if (onAbort) options.signal?.removeEventListener('abort', onAbort)
    interrupted.catch(() => undefined)
    await reader.cancel().catch(() => undefined)
  }
}

/**
 * The next chunk of a body. A connection that breaks under the body (a reset, a FIN before the promised
 * length, a proxy dropping it) rejects with undici's bare `TypeError: terminated`, which callers would
 * report as a bug (exit 70) rather than as the network fault it is (exit 4, retried where downloads
 * retry). The caller's own abort stays what it was.
 */
async function readOrBroken(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  signal: AbortSignal | undefined,
): ReturnType<ReadableStreamDefaultReader<Uint8Array>['read']> {
  try {
    return await reader.read()
  } catch (error) {
    if (signal?.aborted || error instanceof AgentError) throw error
    const cause = error instanceof Error && error.cause instanceof Error ? ` (${error.cause.message})` : ''
    throw new AgentError(
      'network',
      `the connection broke while the answer was read: ${error instanceof Error ? error.message : String(error)}${cause}`,
    )
  }
}
