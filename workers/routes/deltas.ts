import { Hono } from 'hono'
import { z } from 'zod'
import { ArtifactName, Version } from '../../schemas/common.ts'
import { DeltaFraming } from '../../schemas/delta-stream.ts'
import { DeltaMethod, type DeltaRef } from '../../schemas/manifest.ts'
import type { AppEnv } from '../app-env.ts'
import { getRuntimeConfig } from '../config/runtime-config.ts'
import { serveImmutable } from '../http/edge-cache.ts'
import { Problem } from '../http/problem.ts'
import { IMMUTABLE_OBJECT, ObjectReplaced, REVALIDATED_OBJECT, serveObject } from '../http/serve-object.ts'
import { valid } from '../http/validate.ts'
import type { StoredDelta } from '../publish/frame-delta.ts'
import { generateLazyDelta } from '../publish/lazy-delta.ts'
import { requirePublished } from '../storage/artifact-store.ts'
import { keys } from '../storage/keys.ts'

const PairParam = z.object({ name: ArtifactName, from: Version, to: Version })
const DeltaQuery = z.object({
  method: DeltaMethod.optional(),
  /** The stream a plan named (deltaTag): a stream made again since then is not served under its URL. */
  v: z.string().max(128).optional(),
})

/** Response headers exposing the framing, so a client can plan block-aligned ranges from a HEAD. */
export function framingHeaders(framing: DeltaFraming, method: string): Record<string, string> {
  return {
    'x-deltaport-block-size': String(framing.blockSize),
    'x-deltaport-fec': `k=${framing.k};m=${framing.m}`,
    'x-deltaport-framed-length': String(framing.framedLength),
    'x-deltaport-payload-length': String(framing.payloadLength),
    'x-deltaport-payload-sha256': framing.payloadSha256,
    'x-deltaport-method': method,
  }
}

/** What identifies one framed stream: the payload hash alone is not enough, the same payload may be re-framed. */
export function deltaTag(framing: DeltaFraming): string {
  return `${framing.payloadSha256}.${framing.blockSize}.${framing.k}.${framing.m}`
}

/** Strong validator of a framed stream. */
export function deltaEtag(framing: DeltaFraming): string {
  return `"${deltaTag(framing)}"`
}

/**
 * The URL a plan hands out for a delta stream. It names the stream (`v`), so the edge cache, which keys
 * on the URL and keeps ranges for a year, never holds ranges of two different streams under one URL:
 * an edge-made delta that retention pruned can be made again with other framing (after a `stream`
 * config change), and a device must not get its first range from the old stream and the rest from the
 * new one.
 */
export function deltaUrl(
  name: string,
  from: string,
  to: string,
  method: string,
  framing: DeltaFraming,
): string {
  return `/v1/deltas/${encodeURIComponent(name)}/${from}/${to}?method=${method}&v=${deltaTag(framing)}`
}

/** The stored delta at `key`, or null when it is not stored (never uploaded, or pruned). */
async function readStoredDelta(bucket: R2Bucket, key: string): Promise<StoredDelta | null> {
  const head = await bucket.head(key)
  if (!head) return null
  const parsed = DeltaFraming.safeParse(head.customMetadata ?? {})
  if (!parsed.success) throw new Problem(500, 'internal', `stored delta ${key} has no framing metadata`)
  return { framing: parsed.data, storedEtag: head.etag }
}

/** The framing of a stored delta, or null when it is not stored (never uploaded, or pruned). */
export async function readDeltaFraming(bucket: R2Bucket, key: string): Promise<DeltaFraming | null> {
  return (await readStoredDelta(bucket, key))?.framing ?? null
}

/**
 * Serves a delta, and once more when the key was written again between the head its headers come from
 * and the read of its body (ObjectReplaced: a lazily made delta remade by another request, e.g. after
 * retention pruned it and the `stream` config changed, or a taken-over generation storing its own
 * framing). Retried here rather than answered 503 at once: unlike a storage fault (ADR 0015, no
 * retries inside the Worker) nothing is failing, R2 writes are atomic, so the new object is complete
 * and the second try (head, then a body read conditional on it) answers it whole, or 404 when the plan's
 * `v` named the old stream; a 503 would only cost the client a round trip and a Retry-After wait for
 * that same answer. A key written yet again within that window still ends in 503 + Retry-After.
 */
function retryIfReplaced(serve: () => Promise<Response>): () => Promise<Response> {
  return async () => {
    try {
      return await serve()
    } catch (error) {
      if (!(error instanceof ObjectReplaced)) throw error
      console.log(
        JSON.stringify({ level: 'info', msg: 'delta replaced while served; retrying', error: error.message }),
      )
      return serve()
    }
  }
}

/**
 * Framed delta streams: those listed by a committed (published) manifest, else, for small pairs, one
 * generated on first request (workers/publish/lazy-delta.ts).
 */
export const deltasRouter = new Hono<AppEnv>().on(
  ['GET', 'HEAD'],
  '/:name/:from/:to',
  valid('param', PairParam),
  valid('query', DeltaQuery),
  (c) =>
    serveImmutable(
      c,
      retryIfReplaced(async () => {
        const { name, from, to } = c.req.valid('param')
        const { method, v } = c.req.valid('query')
        const named = (framing: DeltaFraming) => {
          if (v !== undefined && v !== deltaTag(framing))
            throw new Problem(
              404,
              'not-found',
              `the delta ${name} ${from} → ${to} was made again since the plan that named it: ask for a new plan`,
            )
          return framing
        }
        const bucket = c.env.ARTIFACTS
        const published = await requirePublished(bucket, name, to)
        const ref = cheapest(
          published.envelope.signed.deltas.filter((d) => d.from === from && (!method || d.method === method)),
        )
        if (ref) {
          const key = keys.delta(name, from, to, ref.method)
          const listed = await readStoredDelta(bucket, key)
          if (!listed)
            throw new Problem(404, 'not-found', `the delta ${name} ${from} → ${to} is no longer stored`)
          named(listed.framing)
          return serveDelta(c.req.raw, bucket, key, listed, ref.method, false, IMMUTABLE_OBJECT)
        }
        if (from === to) throw new Problem(404, 'not-found', 'a version has no delta to itself')
        // Not listed: a small pair is generated once (vcdiff unless the client asks for another method).
        const lazyMethod = method ?? 'vcdiff'
        const key = keys.delta(name, from, to, lazyMethod)
        const head = await bucket.head(key)
        const existing =
          head?.customMetadata?.lazy === '1' ? DeltaFraming.safeParse(head.customMetadata) : null
        const stored =
          head && existing?.success
            ? { framing: existing.data, storedEtag: head.etag }
            : await generateLazyDelta(
                bucket,
                { name, from, to, method: lazyMethod },
                await getRuntimeConfig(c.env),
              )
        named(stored.framing)
        // Made again with other framing after a prune, its bare URL (no `v`) answers other bytes: only
        // the URL naming this stream is immutable.
        const cacheControl = v === undefined ? REVALIDATED_OBJECT : IMMUTABLE_OBJECT
        return serveDelta(c.req.raw, bucket, key, stored, lazyMethod, true, cacheControl)
      }),
    ),
)

async function serveDelta(
  request: Request,
  bucket: R2Bucket,
  key: string,
  { framing, storedEtag }: StoredDelta,
  method: string,
  lazy: boolean,
  cacheControl: string,
): Promise<Response> {
  // The body comes only from the object the framing was read from: a key made again in between would
  // otherwise pair the new stream's bytes with the old one's ETag, length and framing headers.
  const response = await serveObject(request, bucket, key, framing.framedLength, {
    etag: deltaEtag(framing),
    cacheControl,
    contentType: 'application/vnd.deltaport.stream',
    storedEtag,
  })
  for (const [header, value] of Object.entries(framingHeaders(framing, method)))
    response.headers.set(header, value)
  // Lazily generated deltas are not in the signed manifest; the agent trusts the target's sha256.
  response.headers.set('x-deltaport-generated', lazy ? 'lazy' : 'publisher')
  return response
}

function cheapest(refs: DeltaRef[]): DeltaRef | undefined {
  return refs.reduce<DeltaRef | undefined>(
    (best, ref) => (!best || ref.size < best.size ? ref : best),
    undefined,
  )
}
