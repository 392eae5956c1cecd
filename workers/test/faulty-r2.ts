import { mulberry32, type Rng } from '../../predict/random.ts'
import { InterceptedBucket, R2_OPS, type R2Op } from '../storage/intercepted-bucket.ts'

export { R2_OPS, type R2Op }

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
 * like a request R2 rejected, and a refused upload's body is cancelled as a real failed request's would
 * be. Every call is logged so a test can see what was attempted.
 */
export class FaultyR2 extends InterceptedBucket {
  readonly log: FaultRecord[] = []
  readonly #plan: FaultPlan
  readonly #rng: Rng
  readonly #counts = new Map<R2Op, number>()

  constructor(inner: R2Bucket, plan: FaultPlan) {
    super(inner, async (op, key, call, body) => {
      try {
        this.check(op, key)
      } catch (error) {
        if (body instanceof ReadableStream) await body.cancel(error).catch(() => undefined)
        throw error
      }
      return call()
    })
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

  /** A successful get may still break mid-body (cutBodies): what a fault looks like once streaming. */
  override get(
    key: string,
    options: R2GetOptions & { onlyIf: R2Conditional | Headers },
  ): Promise<R2ObjectBody | R2Object | null>
  override get(key: string, options?: R2GetOptions): Promise<R2ObjectBody | null>
  override async get(key: string, options?: R2GetOptions): Promise<R2ObjectBody | R2Object | null> {
    const object = await super.get(key, options)
    if (!object || !('body' in object) || !this.#plan.cutBodies?.(key)) return object
    return withCutBody(object, this.#plan.cutBodyAfter ?? 0, injectedFault('get', key))
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
