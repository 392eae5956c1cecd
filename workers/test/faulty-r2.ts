import { mulberry32, type Rng } from '../../predict/random.ts'

/** Every R2 operation the wrapper can fail, multipart ones included. */
export const R2_OPS = [
  'head',
  'get',
  'put',
  'list',
  'delete',
  'createMultipartUpload',
  'uploadPart',
  'completeMultipartUpload',
  'abortMultipartUpload',
] as const
export type R2Op = (typeof R2_OPS)[number]

export interface FaultPlan {
  /** Probability that an eligible call fails, drawn from mulberry32(seed). */
  rate?: number
  seed?: number
  /** Operations eligible for random faults (default: all). */
  ops?: readonly R2Op[]
  /** Deterministic faults: the n-th call (1-based, counted per op) of an op fails. */
  failNth?: Partial<Record<R2Op, readonly number[]>>
  /** Deterministic faults: the n-th call overall (1-based, any op) fails; for sweeping a whole flow. */
  failCalls?: readonly number[]
  /** Only calls whose key matches are eligible (both modes); list and delete use the prefix / first key. */
  keys?: (key: string) => boolean
  /** The error a failing call throws (default: R2's internal error, `injectedFault`). */
  error?: (op: R2Op, key: string) => Error
  /**
   * Bodies of `get` for keys matching this break after `cutBodyAfter` bytes (the read succeeded, the
   * stream then fails): what a fault looks like once a response has started.
   */
  cutBodies?: (key: string) => boolean
  cutBodyAfter?: number
}

export interface FaultRecord {
  op: R2Op
  key: string
  failed: boolean
}

/**
 * The message R2's binding throws for its own internal error, so the edge classifies an injected
 * fault exactly like a real one (see workers/storage/guarded-bucket.ts).
 */
export function injectedFault(op: R2Op, key: string): Error {
  return new Error(
    `${op}: injected fault on ${key}: We encountered an internal error. Please try again. (10001)`,
  )
}

/**
 * An R2Bucket around the real one that fails calls before they reach it, at random (seeded, so a
 * failing run replays exactly) or deterministically per op. A failed call has no effect on the store,
 * like a request R2 rejected. Every call is logged so a test can see what was attempted.
 */
export class FaultyR2 implements R2Bucket {
  readonly log: FaultRecord[] = []
  readonly #inner: R2Bucket
  readonly #plan: FaultPlan
  readonly #rng: Rng
  readonly #counts = new Map<R2Op, number>()

  constructor(inner: R2Bucket, plan: FaultPlan) {
    this.#inner = inner
    this.#plan = plan
    this.#rng = mulberry32(plan.seed ?? 1)
  }

  /** How many calls failed so far. */
  get faults(): number {
    return this.log.filter((r) => r.failed).length
  }

  /** Throws the injected fault if this call is chosen to fail; records the call either way. */
  check(op: R2Op, key: string): void {
    const n = (this.#counts.get(op) ?? 0) + 1
    this.#counts.set(op, n)
    const eligible = this.#plan.keys ? this.#plan.keys(key) : true
    const call = this.log.length + 1
    const nth =
      (this.#plan.failNth?.[op]?.includes(n) ?? false) || (this.#plan.failCalls?.includes(call) ?? false)
    const inRandomOps = (this.#plan.ops ?? R2_OPS).includes(op)
    // Draw for every call, eligible or not, so the sequence depends only on the seed and call order.
    const draw = this.#rng()
    const random = inRandomOps && (this.#plan.rate ?? 0) > draw
    const failed = eligible && (nth || random)
    this.log.push({ op, key, failed })
    if (failed) throw (this.#plan.error ?? injectedFault)(op, key)
  }

  async head(key: string): Promise<R2Object | null> {
    this.check('head', key)
    return this.#inner.head(key)
  }

  get(
    key: string,
    options: R2GetOptions & { onlyIf: R2Conditional | Headers },
  ): Promise<R2ObjectBody | R2Object | null>
  get(key: string, options?: R2GetOptions): Promise<R2ObjectBody | null>
  async get(key: string, options?: R2GetOptions): Promise<R2ObjectBody | R2Object | null> {
    this.check('get', key)
    const object = await this.#inner.get(key, options)
    if (!object || !('body' in object) || !this.#plan.cutBodies?.(key)) return object
    return withCutBody(object, this.#plan.cutBodyAfter ?? 0, injectedFault('get', key))
  }

  put(
    key: string,
    value: ReadableStream | ArrayBuffer | ArrayBufferView | string | null | Blob,
    options?: R2PutOptions & { onlyIf: R2Conditional | Headers },
  ): Promise<R2Object | null>
  put(
    key: string,
    value: ReadableStream | ArrayBuffer | ArrayBufferView | string | null | Blob,
    options?: R2PutOptions,
  ): Promise<R2Object>
  async put(
    key: string,
    value: ReadableStream | ArrayBuffer | ArrayBufferView | string | null | Blob,
    options?: R2PutOptions,
  ): Promise<R2Object | null> {
    try {
      this.check('put', key)
    } catch (error) {
      // A rejected upload still consumes (cancels) its body, as a real failed request would.
      if (value instanceof ReadableStream) await value.cancel(error).catch(() => undefined)
      throw error
    }
    return this.#inner.put(key, value, options)
  }

  async createMultipartUpload(key: string, options?: R2MultipartOptions): Promise<R2MultipartUpload> {
    this.check('createMultipartUpload', key)
    return new FaultyUpload(this, await this.#inner.createMultipartUpload(key, options))
  }

  resumeMultipartUpload(key: string, uploadId: string): R2MultipartUpload {
    return new FaultyUpload(this, this.#inner.resumeMultipartUpload(key, uploadId))
  }

  async delete(keys: string | string[]): Promise<void> {
    this.check('delete', Array.isArray(keys) ? (keys[0] ?? '') : keys)
    return this.#inner.delete(keys)
  }

  async list(options?: R2ListOptions): Promise<R2Objects> {
    this.check('list', options?.prefix ?? '')
    return this.#inner.list(options)
  }
}

class FaultyUpload implements R2MultipartUpload {
  readonly key: string
  readonly uploadId: string
  readonly #bucket: FaultyR2
  readonly #inner: R2MultipartUpload

  constructor(bucket: FaultyR2, inner: R2MultipartUpload) {
    this.#bucket = bucket
    this.#inner = inner
    this.key = inner.key
    this.uploadId = inner.uploadId
  }

  async uploadPart(
    partNumber: number,
    value: ReadableStream | ArrayBuffer | ArrayBufferView | string | Blob,
    options?: R2UploadPartOptions,
  ): Promise<R2UploadedPart> {
    try {
      this.#bucket.check('uploadPart', this.key)
    } catch (error) {
      if (value instanceof ReadableStream) await value.cancel(error).catch(() => undefined)
      throw error
    }
    return this.#inner.uploadPart(partNumber, value, options)
  }

  async abort(): Promise<void> {
    this.#bucket.check('abortMultipartUpload', this.key)
    return this.#inner.abort()
  }

  async complete(uploadedParts: R2UploadedPart[]): Promise<R2Object> {
    this.#bucket.check('completeMultipartUpload', this.key)
    return this.#inner.complete(uploadedParts)
  }
}

/**
 * The same object with a body that errors after `after` bytes. Only `body` is replaced (the streaming
 * routes read nothing else of a blob); the other members still come from the real object.
 */
function withCutBody(object: R2ObjectBody, after: number, error: Error): R2ObjectBody {
  let passed = 0
  const cut = new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, controller) {
      const room = after - passed
      if (room > 0) controller.enqueue(chunk.subarray(0, room))
      passed += chunk.length
      if (passed >= after) controller.error(error)
    },
  })
  const body = object.body.pipeThrough(cut)
  return new Proxy(object, {
    get(target, property) {
      if (property === 'body') return body
      const value: unknown = Reflect.get(target, property, target)
      return typeof value === 'function' ? value.bind(target) : value
    },
  })
}
