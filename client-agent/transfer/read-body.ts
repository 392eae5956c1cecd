import { AgentError } from '../errors.ts'

/**
 * Reads a response body chunk by chunk, racing every read against the abort signal and a stall timer.
 * Aborting a fetch does not reliably wake a read already waiting on its body, and a silent connection
 * would otherwise wait forever; both become errors here, and the body is cancelled.
 */
export async function readBody(
  response: Response,
  onChunk: (chunk: Uint8Array) => Promise<void> | void,
  options: { signal?: AbortSignal; stallMs?: number } = {},
): Promise<number> {
  if (!response.body) throw new AgentError('network', 'the response has no body')
  const reader = response.body.getReader()
  const stallMs = options.stallMs ?? 30_000
  let total = 0
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
      const { done, value } = await Promise.race([reader.read(), interrupted, stalled()])
      clearTimeout(timer)
      if (done) return total
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
