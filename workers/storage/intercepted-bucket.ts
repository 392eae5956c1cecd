/**
 * An R2Bucket that forwards every call to a real one through a single hook, so wrappers that care about
 * what happens *around* a call (typed storage faults in production, injected faults in tests) are
 * written once against `around` instead of re-spelling R2Bucket's overloaded signatures each time.
 */

/** Every R2 operation a wrapper sees, multipart ones included. */
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

export type R2Value = ReadableStream | ArrayBuffer | ArrayBufferView | string | null | Blob

/**
 * Runs (or refuses) one call. `key` names what the call is about (a list's prefix, the first of several
 * deleted keys); `body` is the upload a put or uploadPart carries, so a refusing hook can cancel it.
 */
export type Around = <T>(op: R2Op, key: string, call: () => Promise<T>, body?: R2Value) => Promise<T>

function describeKeys(keys: string | string[]): string {
  return Array.isArray(keys) ? (keys[0] ?? '') : keys
}

class InterceptedUpload implements R2MultipartUpload {
  readonly key: string
  readonly uploadId: string
  readonly #inner: R2MultipartUpload
  readonly #around: Around

  constructor(inner: R2MultipartUpload, around: Around) {
    this.#inner = inner
    this.#around = around
    this.key = inner.key
    this.uploadId = inner.uploadId
  }

  uploadPart(
    partNumber: number,
    value: ReadableStream | ArrayBuffer | ArrayBufferView | string | Blob,
    options?: R2UploadPartOptions,
  ): Promise<R2UploadedPart> {
    return this.#around(
      'uploadPart',
      this.key,
      () => this.#inner.uploadPart(partNumber, value, options),
      value,
    )
  }

  abort(): Promise<void> {
    return this.#around('abortMultipartUpload', this.key, () => this.#inner.abort())
  }

  complete(uploadedParts: R2UploadedPart[]): Promise<R2Object> {
    return this.#around('completeMultipartUpload', this.key, () => this.#inner.complete(uploadedParts))
  }
}

export class InterceptedBucket implements R2Bucket {
  protected readonly inner: R2Bucket
  readonly #around: Around

  constructor(inner: R2Bucket, around: Around) {
    this.inner = inner
    this.#around = around
  }

  head(key: string): Promise<R2Object | null> {
    return this.#around('head', key, () => this.inner.head(key))
  }

  get(
    key: string,
    options: R2GetOptions & { onlyIf: R2Conditional | Headers },
  ): Promise<R2ObjectBody | R2Object | null>
  get(key: string, options?: R2GetOptions): Promise<R2ObjectBody | null>
  get(key: string, options?: R2GetOptions): Promise<R2ObjectBody | R2Object | null> {
    return this.#around('get', key, () => this.inner.get(key, options))
  }

  put(
    key: string,
    value: R2Value,
    options?: R2PutOptions & { onlyIf: R2Conditional | Headers },
  ): Promise<R2Object | null>
  put(key: string, value: R2Value, options?: R2PutOptions): Promise<R2Object>
  put(key: string, value: R2Value, options?: R2PutOptions): Promise<R2Object | null> {
    return this.#around('put', key, () => this.inner.put(key, value, options), value)
  }

  createMultipartUpload(key: string, options?: R2MultipartOptions): Promise<R2MultipartUpload> {
    return this.#around('createMultipartUpload', key, async () => {
      return new InterceptedUpload(await this.inner.createMultipartUpload(key, options), this.#around)
    })
  }

  /** No call reaches R2 here (resuming only names an upload); its later calls are intercepted. */
  resumeMultipartUpload(key: string, uploadId: string): R2MultipartUpload {
    return new InterceptedUpload(this.inner.resumeMultipartUpload(key, uploadId), this.#around)
  }

  delete(keys: string | string[]): Promise<void> {
    return this.#around('delete', describeKeys(keys), () => this.inner.delete(keys))
  }

  list(options?: R2ListOptions): Promise<R2Objects> {
    return this.#around('list', options?.prefix ?? '', () => this.inner.list(options))
  }
}
