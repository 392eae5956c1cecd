/**
 * The worker thread of off-thread-make.ts: reads the inputs given by path, runs createDeltaAsync with
 * the native deflate engine and moves the delta back to the calling thread.
 */
import { readFile } from 'node:fs/promises'
import { parentPort, workerData } from 'node:worker_threads'
import { createDeltaAsync } from '../../delta/index.ts'
import { nativeDeflateEngine } from './native-deflate.ts'
import type { FromMakeWorker, MakeInput, MakeJob } from './off-thread-make.ts'
import { serializeFailure } from './worker-failure.ts'

async function bytesOf(input: MakeInput): Promise<Uint8Array> {
  return 'path' in input ? await readFile(input.path) : input.bytes
}

async function run(job: MakeJob): Promise<FromMakeWorker> {
  try {
    const [source, target] = await Promise.all([bytesOf(job.source), bytesOf(job.target)])
    const made = await createDeltaAsync(source, target, {
      deflateEngine: nativeDeflateEngine,
      ...(job.methods ? { methods: job.methods } : {}),
    })
    // A copy that owns its buffer, so it can be moved rather than cloned.
    return { type: 'done', made: { ...made, delta: new Uint8Array(made.delta), targetSize: target.length } }
  } catch (error) {
    return { type: 'failed', failure: serializeFailure(error) }
  }
}

if (parentPort) {
  const message = await run(workerData as MakeJob)
  parentPort.postMessage(message, message.type === 'done' ? [message.made.delta.buffer as ArrayBuffer] : [])
}
