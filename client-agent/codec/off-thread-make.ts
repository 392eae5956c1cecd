/**
 * Makes a delta in a worker thread (decision 0030, amended 2026-11-26), so a stop signal is handled
 * while the codec works. An in-memory make is synchronous for as long as a method runs (approx took
 * over a minute on 60 MB files): on the main thread, SIGINT/SIGTERM waited that long for their handler.
 * Here the handler runs at once, the abort terminates the worker, and the process exits.
 *
 * The worker reads the inputs it is given by path itself and returns only the delta (moved, not
 * copied); the output file is written by the caller, atomically, after the worker has finished, so a
 * terminated worker has no temp to leave behind.
 *
 * No heap limits: what a make holds is ArrayBuffers (both files, the source's index, the delta), which
 * V8's heap limits do not count, and a cap tight enough to matter would refuse big pairs (the 120 MB
 * Node binaries) that make fine today. The CLI already maps a refused allocation to exit 17. Only the
 * code range is set (CODE_RANGE_MB), which is address space for compiled code, not for data.
 */
import { Worker } from 'node:worker_threads'
import type { CreatedDelta, DeltaMethodId } from '../../delta/index.ts'
import { reviveFailure, type SerializedFailure } from './worker-failure.ts'
import { workerOutcome } from './worker-outcome.ts'

/** One input: a file the worker reads, or bytes the caller already holds (moved to the worker). */
export type MakeInput = { path: string } | { bytes: Uint8Array }

/** What the worker is told to do (its workerData). */
export interface MakeJob {
  source: MakeInput
  target: MakeInput
  methods?: DeltaMethodId[]
}

/** The delta made, and the length of the target it was made for (as read, which a stat may not be). */
export type MadeOffThread = CreatedDelta & { targetSize: number }

export type FromMakeWorker =
  | { type: 'done'; made: MadeOffThread }
  | { type: 'failed'; failure: SerializedFailure }

/**
 * The worker's JIT code space. V8 reserves 128 MiB of address space for it per isolate by default, and
 * a process under an address-space limit (`ulimit -v`) then dies at the worker's start with a fatal
 * "Failed to reserve virtual memory for CodeRange", before the make could say it needs more memory
 * (exit 17). The codec's compiled code is a few MiB; this is not a cap on the data a make holds.
 */
const CODE_RANGE_MB = 32

/** See off-thread-apply.ts: the bundle names its worker file through esbuild's `define`. */
declare const DELTAPORT_MAKE_WORKER: string | undefined

function workerUrl(): URL {
  return typeof DELTAPORT_MAKE_WORKER === 'string'
    ? new URL(DELTAPORT_MAKE_WORKER, import.meta.url)
    : new URL('./make-worker.ts', import.meta.url)
}

/** Bytes that own their whole buffer can be moved; others (a pooled Buffer's slice) are copied first. */
function movable(input: MakeInput, transfer: ArrayBuffer[]): MakeInput {
  if (!('bytes' in input)) return input
  const { bytes } = input
  const own =
    bytes.byteOffset === 0 &&
    bytes.byteLength === bytes.buffer.byteLength &&
    bytes.buffer instanceof ArrayBuffer
      ? bytes
      : new Uint8Array(bytes)
  transfer.push(own.buffer as ArrayBuffer)
  return { bytes: own }
}

/**
 * createDeltaAsync (with the native deflate engine) between `job`'s inputs, in a worker. Bytes given in
 * `job` are moved to the worker: the caller must not use them afterwards. Rejects with the codec's
 * DeltaFormatError, the agent's error for a file that cannot be read, the RangeError of a refused
 * allocation, and `signal`'s reason on abort, which terminates the worker at once.
 */
export async function makeDeltaOffThread(job: MakeJob, signal?: AbortSignal): Promise<MadeOffThread> {
  signal?.throwIfAborted()
  const transferList: ArrayBuffer[] = []
  const workerData: MakeJob = {
    source: movable(job.source, transferList),
    target: movable(job.target, transferList),
    ...(job.methods ? { methods: job.methods } : {}),
  }
  const worker = new Worker(workerUrl(), {
    workerData,
    transferList,
    resourceLimits: { codeRangeSizeMb: CODE_RANGE_MB },
  })
  return workerOutcome<MadeOffThread, FromMakeWorker>(worker, 'make', signal, (message, settle) => {
    if (message.type === 'done') settle({ value: message.made })
    else settle({ error: reviveFailure(message.failure, 'make') })
  })
}
