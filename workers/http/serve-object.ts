import { Problem } from './problem.ts'
import { etagListMatches, ifMatchHolds, parseRange } from './range.ts'

/**
 * Cache-Control of content-addressed objects (blobs, chunk indexes, delta streams): their bytes never
 * change under their URL, so any cache may keep them a year. `no-transform` (RFC 9111 §5.2.2.6) keeps
 * intermediaries from re-encoding them: Cloudflare compresses a 200 whose media type it deems
 * compressible (a blob published as application/json, text/plain, application/wasm, font/…), dropping
 * its Content-Length and weakening its ETag to `W/"…"`; a client resuming with that validator in
 * If-Range (strong comparison, never met by a weak tag) would then get the whole object on every resume.
 */
export const IMMUTABLE_OBJECT = 'public, max-age=31536000, immutable, no-transform'

/**
 * Cache-Control of an object whose bytes under its URL can change (a lazily made delta asked for by its
 * bare URL, without the `v` that names one stream): caches may keep it but must revalidate it (its
 * strong ETag makes that a 304) before each use, and the edge cache does not keep it.
 */
export const REVALIDATED_OBJECT = 'public, no-cache, no-transform'

export interface ServeOptions {
  /** Strong validator; for content-addressed objects, the sha256 in quotes. */
  etag: string
  cacheControl: string
  contentType: string
  /**
   * The R2 etag (in `bucket`) of the object `size` and `etag` were read from (its head), when the key can be written
   * again (a lazily made delta remade, see workers/routes/deltas.ts). The body is then read only from
   * that object (`onlyIf: { etagMatches }`), so new bytes never go out under the old one's headers;
   * another object there now is `ObjectReplaced`.
   */
  storedEtag?: string
}

/**
 * The object at the key is no longer the one the response's headers describe: it was written again
 * between the metadata read and the body read. 503 + Retry-After, so a client that sees it (the
 * caller's own retry met yet another object) asks again and gets the new object whole.
 */
export class ObjectReplaced extends Problem {
  constructor(key: string) {
    super(503, 'object-replaced', `${key} was replaced while it was being read; retry shortly`, {
      headers: { 'retry-after': '1' },
    })
  }
}

/** The read side of a bucket; a zone replica with fallback (workers/storage/zone-replicas.ts) is one too. */
export interface ObjectSource {
  /** With `onlyIf`, an object that fails the condition comes back without a body (as R2's does). */
  get(key: string, options?: R2GetOptions): Promise<R2ObjectBody | R2Object | null>
  /** Metadata only. Sources without it are probed for HEAD with a `get` whose body is discarded. */
  head?(key: string): Promise<R2Object | null>
}

/** A get answers metadata alone (no body) when its `onlyIf` failed. */
function hasBody(object: R2Object | R2ObjectBody): object is R2ObjectBody {
  return 'body' in object
}

/**
 * Whether `key` is stored (as `storedEtag`, when given). HEAD must not promise a body GET would answer
 * with 404: the size comes from a manifest or framing metadata, which outlive a pruned or lost object.
 */
async function isStored(bucket: ObjectSource, key: string, storedEtag?: string): Promise<boolean> {
  const object = bucket.head !== undefined ? await bucket.head(key) : await bucket.get(key)
  if (object === null) return false
  if (hasBody(object)) await object.body.cancel()
  if (storedEtag !== undefined && object.etag !== storedEtag) throw new ObjectReplaced(key)
  return true
}

/**
 * The body of `key` (a range of it), only from the object `storedEtag` names when given: R2 checks the
 * condition with the read itself, where a compare after an unconditional read could only refuse bytes
 * already fetched.
 */
async function readBody(
  bucket: ObjectSource,
  key: string,
  storedEtag: string | undefined,
  range?: R2Range,
): Promise<ReadableStream> {
  const options: R2GetOptions = {
    ...(range ? { range } : {}),
    ...(storedEtag !== undefined ? { onlyIf: { etagMatches: storedEtag } } : {}),
  }
  const object = await bucket.get(key, options)
  if (!object) gone()
  // A failed condition answers the object's metadata without a body.
  if (!hasBody(object)) throw new ObjectReplaced(key)
  return object.body
}

/**
 * Answers a GET/HEAD for one R2 object with conditional and single-range semantics: 412 when If-Match
 * does not name it, 304 on a matching If-None-Match, 206 for a satisfiable Range (honoured only if If-Range still names this version),
 * 416 with the size for an unsatisfiable one, else 200. The body streams from R2, never buffered.
 * A HEAD is answered as the GET without Range would be: range handling is defined for GET only, and a
 * server must ignore Range on any other method (RFC 9110 §14.2), so a HEAD never gets a 206 or a 416.
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
  const head = request.method === 'HEAD'
  const ifRange = request.headers.get('if-range')
  // If-Range uses strong comparison: a weak or date validator never matches, so the client gets the
  // whole current representation instead of splicing a range onto stale bytes.
  const rangeStillValid = ifRange === null || ifRange.trim() === options.etag
  const range =
    !head && rangeStillValid
      ? parseRange(request.headers.get('range') ?? undefined, size)
      : { kind: 'none' as const }

  if (range.kind === 'unsatisfiable') {
    throw new Problem(416, 'range-not-satisfiable', `the object has ${size} bytes`, {
      headers: { 'content-range': `bytes */${size}` },
    })
  }
  if (range.kind === 'satisfiable') {
    headers.set('content-range', `bytes ${range.offset}-${range.offset + range.length - 1}/${size}`)
    headers.set('content-length', String(range.length))
    const body = await readBody(bucket, key, options.storedEtag, {
      offset: range.offset,
      length: range.length,
    })
    return new Response(body, { status: 206, headers })
  }
  headers.set('content-length', String(size))
  if (head) {
    if (!(await isStored(bucket, key, options.storedEtag))) gone()
    return new Response(null, { status: 200, headers })
  }
  return new Response(await readBody(bucket, key, options.storedEtag), { status: 200, headers })
}

/** The object vanished between the metadata lookup and the read (pruned or never committed). */
function gone(): never {
  throw new Problem(404, 'not-found', 'the object is no longer stored')
}
