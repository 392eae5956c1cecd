import type { MiddlewareHandler } from 'hono'
import type { AppEnv } from '../app-env.ts'
import { Problem } from '../http/problem.ts'
import { type Around, InterceptedBucket } from './intercepted-bucket.ts'

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

/**
 * R2's documented code for "the specified multipart upload does not exist" (S3 NoSuchUpload, HTTP 404):
 * an unknown, aborted or completed upload id (https://developers.cloudflare.com/r2/api/error-codes/).
 */
export const R2_NO_SUCH_UPLOAD = 10024

/** R2 said the multipart upload is not there (and only that: other request errors keep their meaning). */
export function isNoSuchUpload(error: unknown): boolean {
  return r2ErrorCode(error) === R2_NO_SUCH_UPLOAD
}

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

/**
 * Upload bodies that failed for reasons of their own, not of the store: a forged delta (its framer
 * stopped the stream so that R2 stores nothing), or a request body that ended before its
 * Content-Length, ran past it, or was cut off by the client (workers/http/upload-body.ts). R2 then
 * fails the put with a plain error naming the stream's abort, which says nothing about the store: see
 * refuseBody. The value is what the put is to fail with instead (undefined: R2's raw error).
 */
const refusedBodies = new WeakMap<ReadableStream, unknown>()

/**
 * Marks `body` as failed by its own writer or sender, before the stream is errored: the put carrying
 * it then fails with `reason` (or, without one, its raw error) instead of being logged and answered
 * as a storage fault, so the caller can say what really happened (422 integrity-mismatch, 400
 * body-length-mismatch), and the log shows no storage fault that never was.
 */
export function refuseBody(body: ReadableStream, reason?: unknown): void {
  refusedBodies.set(body, reason)
}

/** Whether `body` was refused (see refuseBody), and the reason it was given. */
export function refusalOf(body: unknown): { reason: unknown } | null {
  if (!(body instanceof ReadableStream) || !refusedBodies.has(body)) return null
  return { reason: refusedBodies.get(body) }
}

/** The hook that gives every R2 call of the Worker its typed failure. */
const guard: Around = async (op, key, call, body) => {
  try {
    return await call()
  } catch (error) {
    const refused = refusalOf(body)
    if (refused) throw refused.reason ?? error
    if (!isStorageFault(error)) throw error
    console.log(JSON.stringify({ level: 'warn', msg: 'storage fault', op, key, error: String(error) }))
    throw new StorageUnavailable(op, key)
  }
}

/**
 * An R2Bucket whose failures are typed: storage faults become `StorageUnavailable` (503 + Retry-After
 * through the app's onError) instead of a bare 500, request errors pass through. Bodies are not
 * wrapped: once a response has started streaming, a fault can only cut the connection, which clients
 * detect by length and hash.
 */
export class GuardedBucket extends InterceptedBucket {
  constructor(inner: R2Bucket) {
    super(inner, guard)
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

/** Part number of the existence probe below: the highest R2 allows, so it never replaces a real part. */
const PROBE_PART = 10_000

/**
 * Aborts a multipart upload: true when aborted, false when R2 says there is no such upload (10024).
 * Storage faults stay faults (StorageUnavailable, or the raw error for an unguarded bucket) and other
 * request errors are rethrown as they are, so only "no such upload" becomes a 404.
 *
 * Local R2 (miniflare) answers aborting an unknown upload with its internal error 10001 where R2 says
 * 10024, and 10001 is a storage fault. So after a fault the upload is asked about once more with a call
 * both answer precisely: uploading an empty part (numbered PROBE_PART, never one of the caller's) fails
 * with 10024 for an unknown upload. For a real upload the probe only adds a part to an upload being
 * aborted, and the original fault is rethrown (503 + Retry-After, the client retries the abort).
 */
export async function abortUpload(bucket: R2Bucket, key: string, uploadId: string): Promise<boolean> {
  const upload = bucket.resumeMultipartUpload(key, uploadId)
  try {
    await upload.abort()
    return true
  } catch (error) {
    if (isNoSuchUpload(error)) return false
    if (!(error instanceof StorageUnavailable) && !isTransientR2Error(error)) throw error
    const unknown = await upload.uploadPart(PROBE_PART, new Uint8Array(0)).then(
      () => false,
      (probe: unknown) => isNoSuchUpload(probe),
    )
    if (unknown) return false
    throw error
  }
}
