/**
 * Applies a delta file in a worker thread, so the agent's event loop stays free while the codec works.
 *
 * The codec is synchronous between its reads: an archive delta takes the whole installed .tgz apart and
 * deflates the new one in stretches of hundreds of milliseconds (measured: 481 ms without a single
 * turn of the event loop on typescript 5.8.2 → 5.8.3; longer as archives grow). `deltaport run`
 * proxies the live service's requests on that same thread while it installs the next version, so an
 * update applied on it would stall every request in flight for that long. The worker owns the reads
 * and the codec; the calling thread owns the output: each chunk comes back here and is written through
 * the caller's sink before the worker may produce the next one, which keeps the sink's bounds and
 * atomic commit where they were and the memory in flight at one chunk.
 */
import { Worker } from 'node:worker_threads'
import type { ArchiveLimits } from '../../delta/archive/limits.ts'
import type { DeltaMethodId } from '../../delta/index.ts'
import type { ByteSink } from '../../delta/io.ts'
import { reviveFailure, type SerializedFailure } from './worker-failure.ts'
import { workerOutcome } from './worker-outcome.ts'

/** What the worker is told to do (its workerData): file paths, so no artifact crosses threads. */
export interface ApplyJob {
  sourcePath: string
  deltaPath: string
  archive?: ArchiveLimits
}

export type FromWorker =
  | { type: 'chunk'; bytes: Uint8Array }
  | { type: 'done'; method: DeltaMethodId }
  | { type: 'failed'; failure: SerializedFailure }

/** The only message the calling side sends: the last chunk is written, produce the next. */
export type ToWorker = { type: 'written' }

/**
 * The bundled agent (scripts/build-agent.ts) ships the worker as its own file beside deltaport.mjs and
 * names it here through esbuild's `define`; from source, Node loads the TypeScript entry directly.
 */
declare const DELTAPORT_APPLY_WORKER: string | undefined

function workerUrl(): URL {
  return typeof DELTAPORT_APPLY_WORKER === 'string'
    ? new URL(DELTAPORT_APPLY_WORKER, import.meta.url)
    : new URL('./apply-worker.ts', import.meta.url)
}

/**
 * Applies the delta at `deltaPath` to the file at `sourcePath`, writing the result through `sink`;
 * resolves with the method the delta used. Rejects with the codec's DeltaFormatError for a bad delta,
 * the sink's own error if a write fails, and `signal`'s reason on abort, which also stops the worker.
 */
export async function applyDeltaFileOffThread(
  job: ApplyJob,
  sink: ByteSink,
  signal?: AbortSignal,
): Promise<DeltaMethodId> {
  signal?.throwIfAborted()
  const worker = new Worker(workerUrl(), { workerData: job })
  // Settled once, by whichever comes first: the worker's report, a failed write, an abort or an exit.
  return workerOutcome<DeltaMethodId, FromWorker>(worker, 'apply', signal, (message, settle, settled) => {
    if (message.type === 'chunk') {
      sink.write(message.bytes).then(
        () => {
          if (!settled()) worker.postMessage({ type: 'written' } satisfies ToWorker)
        },
        (error: unknown) => settle({ error }),
      )
    } else if (message.type === 'done') settle({ value: message.method })
    else settle({ error: reviveFailure(message.failure, 'apply') })
  })
}
