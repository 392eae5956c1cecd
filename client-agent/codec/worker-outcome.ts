import type { Worker } from 'node:worker_threads'

/** Ends a codec worker's run with its result or an error; later calls are ignored. */
export type SettleWorker<T> = (result: { value: T } | { error: unknown }) => void

/**
 * The one outcome of a codec worker (off-thread-apply.ts, off-thread-make.ts): whichever comes first of
 * what `onMessage` settles, the worker's error, its exit, or `signal`'s abort. The worker is terminated
 * once settled (its port keeps it alive after it reports; stopping it is what frees its thread), and the
 * outcome is returned or thrown after it has stopped. `settled()` tells a message handler whose own
 * asynchronous work finished late that the run is over.
 */
export async function workerOutcome<T, M>(
  worker: Worker,
  name: string,
  signal: AbortSignal | undefined,
  onMessage: (message: M, settle: SettleWorker<T>, settled: () => boolean) => void,
): Promise<T> {
  let outcome: { value: T } | { error: unknown } | undefined
  await new Promise<void>((resolve) => {
    const settle: SettleWorker<T> = (result) => {
      if (outcome) return
      outcome = result
      signal?.removeEventListener('abort', onAbort)
      void worker.terminate().then(
        () => resolve(),
        () => resolve(),
      )
    }
    const onAbort = () => settle({ error: signal?.reason })
    signal?.addEventListener('abort', onAbort, { once: true })
    const settled = () => outcome !== undefined
    worker.on('message', (message: M) => {
      if (!settled()) onMessage(message, settle, settled)
    })
    worker.on('error', (error) => settle({ error }))
    worker.on('exit', (code) =>
      settle({ error: new Error(`the ${name} worker exited (code ${code}) before it finished`) }),
    )
  })
  if (outcome && 'value' in outcome) return outcome.value
  throw outcome?.error
}
