import type { MiddlewareHandler } from 'hono'
import type { AppEnv } from '../app-env.ts'
import { Problem } from '../http/problem.ts'

/** Seconds a client is told to wait after a storage fault; R2 faults are usually brief. */
export const STORAGE_RETRY_AFTER_SECONDS = 2

/**
 * R2 error codes that describe the request, not the store (no such upload, bad digest, invalid part,
 * precondition failed, …). Errors carrying them pass through untouched: the routes that expect them
 * (checksum mismatch → 422, unknown upload → 409) keep their meaning. Every other failure of an R2 call
 * (internal error 10001, service unavailable 10043, too many requests 10058, a lost connection with no
 * code at all) is a storage fault.
 */
const TRANSIENT_CODES = new Set([10001, 10043, 10058])

/** A storage call failed for reasons of the store: 503 problem+json with Retry-After. */
export class StorageUnavailable extends Problem {
  constructor(op: string, key: string) {
    super(503, 'storage-unavailable', `the artifact store failed (${op} ${key}); retry shortly`, {
      headers: { 'retry-after': String(STORAGE_RETRY_AFTER_SECONDS) },
    })
  }
}

/** The R2 error code at the end of a binding error's message (`… (10037)`), if any. */
export function r2ErrorCode(error: unknown): number | null {
  const match = error instanceof Error ? /\((\d{5,6})\)\s*$/.exec(error.message) : null
  return match ? Number(match[1]) : null
}

/**
 * An error carrying one of R2's transient codes: how an R2 fault inside a Durable Object (which reads
 * R2 with its own, unguarded binding) reaches the Worker through the RPC call.
 */
export function isTransientR2Error(error: unknown): boolean {
  const code = r2ErrorCode(error)
  return code !== null && TRANSIENT_CODES.has(code)
}

function isStorageFault(error: unknown): boolean {
  if (error instanceof Problem) return false
  const code = r2ErrorCode(error)
  return code === null || TRANSIENT_CODES.has(code)
}

async function guard<T>(op: string, key: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call()
  } catch (error) {
    if (!isStorageFault(error)) throw error
    console.log(JSON.stringify({ level: 'warn', msg: 'storage fault', op, key, error: String(error) }))
    throw new StorageUnavailable(op, key)
  }
}

function describeKeys(keys: string | string[]): string {
  return Array.isArray(keys) ? `${keys.length} keys` : keys
}

class GuardedUpload implements R2MultipartUpload {
  readonly key: string
  readonly uploadId: string
  readonly #inner: R2MultipartUpload

  constructor(inner: R2MultipartUpload) {
    this.#inner = inner
    this.key = inner.key
    this.uploadId = inner.uploadId
  }

  uploadPart(
    partNumber: number,
    value: ReadableStream | ArrayBuffer | ArrayBufferView | string | Blob,
    options?: R2UploadPartOptions,
  ): Promise<R2UploadedPart> {
    return guard('uploadPart', this.key, () => this.#inner.uploadPart(partNumber, value, options))
  }

  abort(): Promise<void> {
    return guard('abortMultipartUpload', this.key, () => this.#inner.abort())
  }

  complete(uploadedParts: R2UploadedPart[]): Promise<R2Object> {
    return guard('completeMultipartUpload', this.key, () => this.#inner.complete(uploadedParts))
  }
}

/**
 * An R2Bucket whose failures are typed: storage faults become `StorageUnavailable` (503 + Retry-After
 * through the app's onError) instead of a bare 500, request errors pass through. Bodies are not
 * wrapped: once a response has started streaming, a fault can only cut the connection, which clients
 * detect by length and hash.
 */
export class GuardedBucket implements R2Bucket {
  readonly #inner: R2Bucket

  constructor(inner: R2Bucket) {
    this.#inner = inner
  }

  head(key: string): Promise<R2Object | null> {
    return guard('head', key, () => this.#inner.head(key))
  }

  get(
    key: string,
    options: R2GetOptions & { onlyIf: R2Conditional | Headers },
  ): Promise<R2ObjectBody | R2Object | null>
  get(key: string, options?: R2GetOptions): Promise<R2ObjectBody | null>
  get(key: string, options?: R2GetOptions): Promise<R2ObjectBody | R2Object | null> {
    return guard('get', key, () => this.#inner.get(key, options))
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
  put(
    key: string,
    value: ReadableStream | ArrayBuffer | ArrayBufferView | string | null | Blob,
    options?: R2PutOptions,
  ): Promise<R2Object | null> {
    return guard('put', key, () => this.#inner.put(key, value, options))
  }

  createMultipartUpload(key: string, options?: R2MultipartOptions): Promise<R2MultipartUpload> {
    return guard('createMultipartUpload', key, async () => {
      return new GuardedUpload(await this.#inner.createMultipartUpload(key, options))
    })
  }

  resumeMultipartUpload(key: string, uploadId: string): R2MultipartUpload {
    return new GuardedUpload(this.#inner.resumeMultipartUpload(key, uploadId))
  }

  delete(keys: string | string[]): Promise<void> {
    return guard('delete', describeKeys(keys), () => this.#inner.delete(keys))
  }

  list(options?: R2ListOptions): Promise<R2Objects> {
    return guard('list', options?.prefix ?? '', () => this.#inner.list(options))
  }
}

/**
 * Middleware: every handler below sees `c.env.ARTIFACTS` guarded, so an R2 fault anywhere in a
 * request becomes a clear 503 problem instead of an opaque 500.
 */
export const guardStorage: MiddlewareHandler<AppEnv> = async (c, next) => {
  if (c.env?.ARTIFACTS && !(c.env.ARTIFACTS instanceof GuardedBucket)) {
    c.env = { ...c.env, ARTIFACTS: new GuardedBucket(c.env.ARTIFACTS) }
  }
  await next()
}
