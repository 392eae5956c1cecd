/**
 * Worker threads that share the reference deflate (pako) with the applying thread, for the native
 * engine's `deflateReferenceShared` (delta/archive/deflate-engine.ts): the gaps of a spliced stream
 * that Node's zlib does not reproduce (classic-hash streams, GNU gzip's) are independent restarts, so
 * they deflate on several cores instead of one after another (docs/decisions/0012, 0019).
 *
 * A batch's inputs are copied once into shared memory with one claim flag per job. The threads take
 * jobs from the front and the calling thread from the back, each claiming a job with an atomic
 * compare-and-swap, so every job runs exactly once and nobody waits for a hand-off: a thread that
 * starts late (or a machine with no core to spare) just leaves more to the calling thread.
 *
 * Threads start on first use (or `warm`) and stop once the pool has been idle for IDLE_MS. An idle
 * thread is unref'd, so it never keeps the process alive: a command that applied a delta exits when
 * it is done, without waiting for the idle timer.
 */
import { Worker } from 'node:worker_threads'
import type { DeflateParams, ReferenceJob } from '../../delta/archive/index.ts'
import { deflateWhole } from '../../delta/archive/recompress.ts'

/**
 * A batch as the threads see it. `bytes` holds every job's dictionary and input; `table` has four
 * entries per job (dictionary offset and length, input offset and length); `claims` one flag per job,
 * 0 until someone takes it.
 */
export interface SharedBatch {
  batch: number
  bytes: SharedArrayBuffer
  table: Int32Array
  claims: Int32Array
  params: DeflateParams
}

export type BatchReply =
  | { batch: number; job: number; deflated: Uint8Array }
  | { batch: number; job: number; failed: string }
  | { batch: number; done: true }

/** How long idle threads are kept for the next stream of the same apply (or the next apply). */
export const IDLE_MS = 10_000

/**
 * The bundled agent (scripts/build-agent.ts) ships the thread as deflate-worker.mjs beside deltaport.mjs
 * and names it here through esbuild's `define`; from source, Node loads the TypeScript entry directly.
 */
declare const DELTAPORT_DEFLATE_WORKER: string | undefined

function workerUrl(): URL {
  return typeof DELTAPORT_DEFLATE_WORKER === 'string'
    ? new URL(DELTAPORT_DEFLATE_WORKER, import.meta.url)
    : new URL('./deflate-worker.ts', import.meta.url)
}

/** Job `i` of a batch: its dictionary and input, as views of the shared bytes. */
export function batchJob(bytes: Uint8Array, table: Int32Array, i: number): ReferenceJob {
  const at = 4 * i
  return {
    dictionary: bytes.subarray(table[at]!, table[at]! + table[at + 1]!),
    input: bytes.subarray(table[at + 2]!, table[at + 2]! + table[at + 3]!),
  }
}

/**
 * The jobs' bytes in one shared buffer: each distinct span of caller memory they view is copied
 * once (a gap's dictionary and input are neighbours in the same buffer, and neighbouring gaps share
 * windows), so the copy is about the content the rebuild kept, not a window per job.
 */
function share(jobs: readonly ReferenceJob[]): { bytes: SharedArrayBuffer; table: Int32Array } {
  const spans = new Map<ArrayBufferLike, { from: number; to: number; at: number }>()
  for (const j of jobs) {
    for (const v of [j.dictionary, j.input]) {
      const span = spans.get(v.buffer)
      const from = v.byteOffset
      const to = v.byteOffset + v.byteLength
      if (span) {
        span.from = Math.min(span.from, from)
        span.to = Math.max(span.to, to)
      } else spans.set(v.buffer, { from, to, at: 0 })
    }
  }
  let total = 0
  for (const span of spans.values()) {
    span.at = total
    total += span.to - span.from
  }
  const bytes = new SharedArrayBuffer(total)
  const view = new Uint8Array(bytes)
  for (const [buffer, span] of spans)
    view.set(new Uint8Array(buffer, span.from, span.to - span.from), span.at)
  const table = new Int32Array(new SharedArrayBuffer(16 * jobs.length))
  const offset = (v: Uint8Array) => spans.get(v.buffer)!.at + v.byteOffset - spans.get(v.buffer)!.from
  jobs.forEach((j, i) => {
    table.set([offset(j.dictionary), j.dictionary.length, offset(j.input), j.input.length], 4 * i)
  })
  return { bytes, table }
}

interface Batch {
  results: (Uint8Array | undefined)[]
  missing: number
  /** Threads still working on it. */
  threads: Set<Worker>
  claims: Int32Array
  settle: (error?: Error) => void
}

export class DeflatePool {
  private readonly size: number
  private readonly url: URL
  private readonly threads: Worker[] = []
  private readonly batches = new Map<number, Batch>()
  private nextBatch = 0
  private idleTimer: ReturnType<typeof setTimeout> | undefined
  /** Jobs the threads (not the calling thread) have deflated so far (for tests). */
  jobsOnThreads = 0

  constructor(size: number, url = workerUrl()) {
    this.size = size
    this.url = url
  }

  /** Threads running now (for tests). */
  get threadCount(): number {
    return this.threads.length
  }

  /** Starts the pool's threads ahead of its first batch (they start in the background, unref'd). */
  warm(): void {
    while (this.threads.length < this.size) this.spawn()
    this.scheduleIdle()
  }

  /**
   * `deflateWhole(input, params, dictionary)` for every job, in job order: the pool's threads take
   * jobs from the front while this thread takes them from the back. Rejects with an Error carrying
   * pako's message if a job fails, or naming the worker if a thread dies holding a job.
   */
  async deflate(jobs: readonly ReferenceJob[], params: DeflateParams): Promise<Uint8Array[]> {
    if (jobs.length === 0) return []
    this.warm()
    clearTimeout(this.idleTimer)
    const { bytes, table } = share(jobs)
    const claims = new Int32Array(new SharedArrayBuffer(4 * jobs.length))
    const id = this.nextBatch++
    let settle: (error?: Error) => void = () => {}
    const finished = new Promise<void>((resolve, reject) => {
      settle = (error) => (error ? reject(error) : resolve())
    })
    finished.catch(() => {})
    const batch: Batch = { results: [], missing: jobs.length, threads: new Set(this.threads), claims, settle }
    this.batches.set(id, batch)
    for (const worker of this.threads) {
      worker.ref()
      worker.postMessage({ batch: id, bytes, table, claims, params } satisfies SharedBatch)
    }
    // This thread's share, from the back, over the same shared bytes (so a job is the same wherever it runs).
    const view = new Uint8Array(bytes)
    let failure: unknown
    for (let i = jobs.length - 1; i >= 0; i--) {
      if (Atomics.compareExchange(claims, i, 0, 1) !== 0) continue
      try {
        const { input, dictionary } = batchJob(view, table, i)
        this.result(id, i, deflateWhole(input, params, dictionary))
      } catch (error) {
        failure = error
        // Nothing else of this batch is worth doing: let the threads find every job taken.
        for (let k = 0; k < jobs.length; k++) Atomics.store(claims, k, 1)
        break
      }
    }
    try {
      if (failure !== undefined) throw failure
      await finished
      return batch.results as Uint8Array[]
    } finally {
      this.batches.delete(id)
      // Ref'd only while someone waits for a batch: a thread still starting, or still finding every
      // job of a finished batch taken, must not keep the process alive.
      if (this.batches.size === 0) for (const worker of this.threads) worker.unref()
      this.scheduleIdle()
    }
  }

  /** Stops every thread now; batches still running reject. */
  async close(): Promise<void> {
    clearTimeout(this.idleTimer)
    this.idleTimer = undefined
    const threads = this.threads.splice(0)
    for (const batch of this.batches.values()) batch.settle(new Error('the deflate pool was closed'))
    await Promise.all(threads.map((t) => t.terminate()))
  }

  private result(id: number, job: number, deflated: Uint8Array): void {
    const batch = this.batches.get(id)
    if (!batch || batch.results[job] !== undefined) return
    batch.results[job] = deflated
    if (--batch.missing === 0) batch.settle()
  }

  private spawn(): Worker {
    const worker = new Worker(this.url)
    worker.unref()
    const drop = (error: Error) => {
      const at = this.threads.indexOf(worker)
      if (at >= 0) this.threads.splice(at, 1)
      // A job this thread claimed is lost with it; batches it had not reached lose nothing.
      for (const batch of this.batches.values()) if (batch.threads.delete(worker)) batch.settle(error)
      this.scheduleIdle()
    }
    worker.on('message', (reply: BatchReply) => {
      const batch = this.batches.get(reply.batch)
      if (!batch) return
      if ('deflated' in reply) {
        this.jobsOnThreads++
        this.result(reply.batch, reply.job, reply.deflated)
      }
      // What the reference threw on this thread: an Error with pako's message.
      else if ('failed' in reply) batch.settle(new Error(reply.failed))
      else batch.threads.delete(worker)
    })
    worker.on('error', (error) => drop(new Error(`the deflate worker failed: ${error.message}`)))
    worker.on('exit', (code) => drop(new Error(`the deflate worker exited (code ${code})`)))
    this.threads.push(worker)
    return worker
  }

  /** Idle threads are unref'd already; after IDLE_MS without a batch they are stopped too. */
  private scheduleIdle(): void {
    clearTimeout(this.idleTimer)
    this.idleTimer = undefined
    if (this.threads.length === 0 || this.batches.size > 0) return
    this.idleTimer = setTimeout(() => void this.close(), IDLE_MS)
    this.idleTimer.unref()
  }
}
