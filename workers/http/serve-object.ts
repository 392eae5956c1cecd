import { Problem } from './problem.ts'
import { etagListMatches, ifMatchHolds, parseRange } from './range.ts'

export interface ServeOptions {
  /** Strong validator; for content-addressed objects, the sha256 in quotes. */
  etag: string
  cacheControl: string
  contentType: string
}

/** The read side of a bucket; a zone replica with fallback (workers/storage/zone-replicas.ts) is one too. */
export interface ObjectSource {
  get(key: string, options?: R2GetOptions): Promise<R2ObjectBody | null>
  /** Metadata only. Sources without it are probed for HEAD with a `get` whose body is discarded. */
  head?(key: string): Promise<R2Object | null>
}

/**
 * Whether `key` is stored. HEAD must not promise a body GET would answer with 404: the size comes from a
 * manifest or framing metadata, which outlive a pruned or lost object.
 */
async function isStored(bucket: ObjectSource, key: string): Promise<boolean> {
  if (bucket.head !== undefined) return (await bucket.head(key)) !== null
  const object = await bucket.get(key)
  if (object === null) return false
  await object.body.cancel()
  return true
}

/**
 * Answers a GET/HEAD for one R2 object with conditional and single-range semantics: 412 when If-Match
 * does not name it, 304 on a matching If-None-Match, 206 for a satisfiable Range (honoured only if If-Range still names this version),
 * 416 with the size for an unsatisfiable one, else 200. The body streams from R2, never buffered.
 */
export async function serveObject(
  request: Request,
  bucket: ObjectSource,
  key: string,
  size: number,
  options: ServeOptions,
): Promise<Response> {
  const headers = new Headers({
    etag: options.etag,
    'cache-control': options.cacheControl,
    'content-type': options.contentType,
    'accept-ranges': 'bytes',
    // Stored objects are downloads, never pages: the publisher chose the media type, and the dashboard
    // shares this origin, so a blob labelled text/html must not render (or run script) in a browser.
    'content-disposition': 'attachment',
    'x-content-type-options': 'nosniff',
    'content-security-policy': "sandbox; default-src 'none'",
  })
  // RFC 9110 §13.2.2 order: If-Match, then If-None-Match, then If-Range. If-Match lets a client that
  // pieces an object together from ranges have a range refused (412) rather than sent from other bytes.
  const ifMatch = request.headers.get('if-match')
  if (ifMatch !== null && !ifMatchHolds(ifMatch, options.etag)) {
    throw new Problem(
      412,
      'precondition-failed',
      `If-Match does not name this object (its ETag is ${options.etag})`,
    )
  }
  const ifNoneMatch = request.headers.get('if-none-match')
  if (ifNoneMatch !== null && etagListMatches(ifNoneMatch, options.etag)) {
    return new Response(null, { status: 304, headers })
  }
  const ifRange = request.headers.get('if-range')
  // If-Range uses strong comparison: a weak or date validator never matches, so the client gets the
  // whole current representation instead of splicing a range onto stale bytes.
  const rangeStillValid = ifRange === null || ifRange.trim() === options.etag
  const range = rangeStillValid
    ? parseRange(request.headers.get('range') ?? undefined, size)
    : { kind: 'none' as const }

  if (range.kind === 'unsatisfiable') {
    throw new Problem(416, 'range-not-satisfiable', `the object has ${size} bytes`, {
      headers: { 'content-range': `bytes */${size}` },
    })
  }
  const head = request.method === 'HEAD'
  if (range.kind === 'satisfiable') {
    headers.set('content-range', `bytes ${range.offset}-${range.offset + range.length - 1}/${size}`)
    headers.set('content-length', String(range.length))
    if (head) {
      if (!(await isStored(bucket, key))) gone()
      return new Response(null, { status: 206, headers })
    }
    const object = await bucket.get(key, { range: { offset: range.offset, length: range.length } })
    if (!object) gone()
    return new Response(object.body, { status: 206, headers })
  }
  headers.set('content-length', String(size))
  if (head) {
    if (!(await isStored(bucket, key))) gone()
    return new Response(null, { status: 200, headers })
  }
  const object = await bucket.get(key)
  if (!object) gone()
  return new Response(object.body, { status: 200, headers })
}

/** The object vanished between the metadata lookup and the read (pruned or never committed). */
function gone(): never {
  throw new Problem(404, 'not-found', 'the object is no longer stored')
}
