/**
 * The worker thread of off-thread-apply.ts: reads the installed file and the delta, runs the codec, and
 * hands each output chunk to the calling thread, waiting until it is written before going on.
 */
import { type MessagePort, parentPort, workerData } from 'node:worker_threads'
import { applyDeltaStream } from '../../delta/index.ts'
import { closingAll, openFileReader, openFileSource } from '../fs/file-io.ts'
import { useNativeCrc32 } from './native-crc32.ts'
import { nativeDeflateEngine } from './native-deflate.ts'
import type { ApplyJob, FromWorker, ToWorker } from './off-thread-apply.ts'
import { serializeFailure } from './worker-failure.ts'

async function run(port: MessagePort, job: ApplyJob): Promise<void> {
  let written: (() => void) | null = null
  port.on('message', (message: ToWorker) => {
    if (message.type === 'written') written?.()
  })
  const sink = {
    write: (chunk: Uint8Array) =>
      new Promise<void>((resolve) => {
        written = resolve
        // A copy of its own, moved rather than cloned: the codec may reuse the memory behind `chunk`,
        // and a Node Buffer's slice() would share it (transferring that would detach the codec's).
        const bytes = new Uint8Array(chunk)
        port.postMessage({ type: 'chunk', bytes } satisfies FromWorker, [bytes.buffer])
      }),
  }
  try {
    useNativeCrc32()
    await closingAll(async (own) => {
      const reader = own(await openFileReader(job.sourcePath))
      const delta = own(await openFileSource(job.deltaPath))
      const method = await applyDeltaStream(reader, delta, sink, {
        deflateEngine: nativeDeflateEngine,
        ...(job.archive ? { archive: job.archive } : {}),
      })
      port.postMessage({ type: 'done', method } satisfies FromWorker)
    })
  } catch (error) {
    port.postMessage({ type: 'failed', failure: serializeFailure(error) } satisfies FromWorker)
  }
}

if (parentPort) await run(parentPort, workerData as ApplyJob)
