import type { Context } from 'hono'
import type { AppEnv } from '../app-env.ts'
import { etagListMatches, ifMatchHolds } from './range.ts'

/** Response header telling clients and tests whether the Workers cache answered. */
export const CACHE_STATUS_HEADER = 'x-deltaport-cache'
/** The original status of a cached 206 (the Cache API stores only 200s). */
const STORED_STATUS = 'x-deltaport-stored-status'

/** Per miss answered by `serveImmutable`: whether its copy went into the cache (`cacheStoreOf`). */
const stores = new WeakMap<Response, Promise<boolean>>()

/**
 * For a response `serveImmutable` answered from the origin and is storing in the colo cache: settles
 * true once the copy is stored, false if the put failed (the origin's body broke, the cache refused it)
 * and nothing stays behind. Undefined for anything it did not store (hits, HEAD, uncacheable answers).
 * It settles only after the body has been read, so await it in `waitUntil`, not before returning.
 */
export function cacheStoreOf(response: Response): Promise<boolean> | undefined {
  return stores.get(response)
}

/**
 * Read-through Workers Cache API for immutable objects (blobs, delta streams, chunk indexes) so repeat
 * range reads in a colo do not reach R2. The cache key is the URL plus the Range header: the Cache
 * API refuses 206 responses, so each range is stored as its own 200 under its own key and turned
 * back into a 206 on a hit. HEAD bypasses it. `origin` must produce responses whose bytes never change
 * for this URL.
 *
 * If-Range is answered here too: agents send it, with the validator of their first range, on every
 * later range and every resumed download, so bypassing the cache for it left the cache to first ranges
 * only. A stored answer carries the validator of the bytes it holds: it is served when If-Range names
 * exactly that (strong comparison), else the origin answers (the whole object, RFC 9110 §13.1.5), and
 * such an answer is never stored: only a 206 is, which is the range whatever the validator. An answer
 * whose Cache-Control does not say `immutable` is passed on and never stored.
 */
export async function serveImmutable(c: Context<AppEnv>, origin: () => Promise<Response>): Promise<Response> {
  const request = c.req.raw
  if (request.method !== 'GET') return origin()
  const key = cacheKey(request)
  const cache = caches.default
  const cached = await cache.match(key).catch(() => undefined)
  if (cached) {
    const answer = fromCache(request, cached)
    if (answer) return answer
    await cached.body?.cancel()
    return origin()
  }

  const response = await origin()
  // Only answers the origin itself calls immutable are kept: a route may answer some URLs with bytes
  // that can change (a lazily made delta under its bare URL, workers/routes/deltas.ts), and a stored
  // range of those would be served beside ranges of the bytes stored later.
  const immutable = /(^|[\s,])immutable(\s*(,|$))/i.test(response.headers.get('cache-control') ?? '')
  const storable =
    immutable && (response.status === 206 || (response.status === 200 && !request.headers.has('if-range')))
  if (!storable || !response.body) return response
  const [forClient, forCache] = response.body.tee()
  const stored = new Headers(response.headers)
  stored.set(STORED_STATUS, String(response.status))
  const put = cache.put(key, new Response(forCache, { status: 200, headers: stored })).then(
    () => true,
    async (error) => {
      console.log(
        JSON.stringify({ level: 'warn', msg: 'cache put failed', url: key.url, error: String(error) }),
      )
      // The origin stream broke mid-body (an R2 fault): make sure no truncated copy stays behind to be
      // served as `immutable` to everyone in this colo.
      await cache.delete(key).catch(() => undefined)
      return false
    },
  )
  c.executionCtx.waitUntil(put)
  const headers = new Headers(response.headers)
  headers.set(CACHE_STATUS_HEADER, 'miss')
  const answer = new Response(forClient, { status: response.status, headers })
  stores.set(answer, put)
  return answer
}

function cacheKey(request: Request): Request {
  const url = new URL(request.url)
  url.searchParams.set('__range', request.headers.get('range')?.trim() ?? 'none')
  return new Request(url.toString(), { method: 'GET' })
}

/** The answer from a stored response, or null when If-Match or If-Range names other bytes than it holds. */
function fromCache(request: Request, cached: Response): Response | null {
  const headers = new Headers(cached.headers)
  const status = Number(headers.get(STORED_STATUS) ?? 200) === 206 ? 206 : 200
  headers.delete(STORED_STATUS)
  headers.set(CACHE_STATUS_HEADER, 'hit')
  const etag = headers.get('etag')
  // If-Match refused by the stored bytes is for the origin to judge (and answer 412): it evaluates the
  // preconditions in order against the object as stored now.
  const ifMatch = request.headers.get('if-match')
  if (ifMatch !== null && (etag === null || !ifMatchHolds(ifMatch, etag))) return null
  const ifNoneMatch = request.headers.get('if-none-match')
  if (etag && ifNoneMatch !== null && etagListMatches(ifNoneMatch, etag)) {
    headers.delete('content-length')
    headers.delete('content-range')
    return new Response(null, { status: 304, headers })
  }
  const ifRange = request.headers.get('if-range')
  if (ifRange !== null && (etag === null || etag.startsWith('W/') || ifRange.trim() !== etag)) return null
  return new Response(cached.body, { status, headers })
}
