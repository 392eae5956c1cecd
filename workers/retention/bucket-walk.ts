/** Every object under `prefix`, page by page (with the custom metadata too when `include` asks). */
export async function* listAll(
  bucket: R2Bucket,
  prefix: string,
  include?: R2ListOptions['include'],
): AsyncGenerator<R2Object> {
  let cursor: string | undefined
  do {
    const page = await bucket.list({ prefix, cursor, limit: 1000, ...(include ? { include } : {}) })
    yield* page.objects
    cursor = page.truncated ? page.cursor : undefined
  } while (cursor)
}

export async function deleteAll(bucket: R2Bucket, keyList: string[]): Promise<void> {
  // R2 deletes at most 1000 keys per call.
  for (let at = 0; at < keyList.length; at += 1000) await bucket.delete(keyList.slice(at, at + 1000))
}
