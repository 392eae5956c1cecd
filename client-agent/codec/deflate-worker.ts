/**
 * A thread of deflate-pool.ts: for each batch it is sent, claims jobs from the front (an atomic
 * compare-and-swap on the batch's shared claim flags), runs the reference deflate's restart on them
 * (pako, delta/archive/recompress.ts) and sends each result back, until every job is taken.
 */
import { parentPort } from 'node:worker_threads'
import { deflateWhole } from '../../delta/archive/recompress.ts'
import { type BatchReply, batchJob, type SharedBatch } from './deflate-pool.ts'

const port = parentPort
if (port) {
  port.on('message', ({ batch, bytes, table, claims, params }: SharedBatch) => {
    const view = new Uint8Array(bytes)
    for (let i = 0; i < claims.length; i++) {
      if (Atomics.compareExchange(claims, i, 0, 1) !== 0) continue
      let reply: BatchReply
      const transfer: ArrayBuffer[] = []
      try {
        const { input, dictionary } = batchJob(view, table, i)
        const deflated = deflateWhole(input, params, dictionary)
        reply = { batch, job: i, deflated }
        if (deflated.byteOffset === 0 && deflated.byteLength === deflated.buffer.byteLength)
          transfer.push(deflated.buffer as ArrayBuffer)
      } catch (error) {
        // pako's refusals (a parameter set it cannot run) are plain Errors; their message crosses over.
        reply = { batch, job: i, failed: error instanceof Error ? error.message : String(error) }
      }
      port.postMessage(reply, transfer)
    }
    port.postMessage({ batch, done: true } satisfies BatchReply)
  })
}
