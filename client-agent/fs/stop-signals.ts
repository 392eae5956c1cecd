import { AgentError } from '../errors.ts'
import { stopRemovingTemps } from './atomic.ts'

/** The shell's convention for a process ended by a signal: 128 + its number. */
const EXIT_ON = { SIGINT: 130, SIGTERM: 143 } as const
const STOP_SIGNALS = Object.keys(EXIT_ON) as (keyof typeof EXIT_ON)[]

/**
 * Runs `work` so that SIGINT or SIGTERM end it without leaving temp files behind: the handler removes
 * every temp output still open, and one being opened once its open returns (fs/atomic.ts), and exits
 * with 130 or 143. Without it Node's default
 * action kills the process between its writes, and the `.out.<hex>.tmp` beside the output stays; the
 * destination itself is only ever replaced by the final rename, so it is left untouched either way.
 * For commands that write one output and need no other cleanup (`delta make|apply`); updates keep their
 * partial downloads on purpose, to resume them. `work`'s signal is aborted right before that exit, so
 * work running in a worker thread (an in-memory make, codec/off-thread-make.ts) is terminated first.
 */
export async function removingTempsOnStop<T>(work: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const controller = new AbortController()
  const handlers = Object.entries(EXIT_ON).map(([signal, code]) => {
    const handler = () => {
      controller.abort(new AgentError('io', `stopped by ${signal}`))
      stopRemovingTemps(code)
    }
    process.once(signal, handler)
    return [signal, handler] as const
  })
  try {
    return await work(controller.signal)
  } finally {
    for (const [signal, handler] of handlers) process.off(signal, handler)
  }
}

/**
 * For work whose cleanup is itself asynchronous (a multipart publish gives its upload up at the edge):
 * SIGINT and SIGTERM abort `signal` instead of ending the process, until `release`. Released after a
 * signal came, it ends the process by that signal, as the signal would have, the cleanup done.
 */
export function abortOnStopSignals(): { signal: AbortSignal; release(): Promise<void> } {
  const controller = new AbortController()
  let received: NodeJS.Signals | undefined
  const handlers = STOP_SIGNALS.map((name) => {
    const handler = () => {
      received ??= name
      controller.abort(new AgentError('network', `stopped by ${name}`))
    }
    process.on(name, handler)
    return [name, handler] as const
  })
  return {
    signal: controller.signal,
    async release() {
      for (const [name, handler] of handlers) process.off(name, handler)
      if (received === undefined) return
      process.kill(process.pid, received)
      // The default action ends the process; this only keeps the caller from going on meanwhile.
      await new Promise((resolve) => setTimeout(resolve, 1000))
    },
  }
}
