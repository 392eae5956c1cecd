import { DeltaFormatError } from '../../delta/errors.ts'
import { createDelta } from '../../delta/index.ts'
import { sourceFromBytes } from '../../delta/io.ts'
import type { DeltaMethod } from '../../schemas/manifest.ts'
import type { RuntimeConfig } from '../../schemas/runtime-config.ts'
import { Problem } from '../http/problem.ts'
import { readPublishedManifest } from '../storage/artifact-store.ts'
import { keys } from '../storage/keys.ts'
import { releaseClaim, takeClaim } from '../storage/r2-claim.ts'
import { framingFor, type StoredDelta, storeFramedDelta } from './frame-delta.ts'
import { sha256OfBytes } from './verify-object.ts'

/** A lock older than this belongs to a generation that died (isolate evicted, CPU limit). */
const STALE_LOCK_MS = 60_000
/** Clients are told to come back after this while another request generates the pair. */
const RETRY_AFTER_SECONDS = 2

export const lockKey = (name: string, from: string, to: string, method: string) =>
  `locks/${keys.delta(name, from, to, method)}`

/**
 * Marker of a pair the codec could not encode with `method` (e.g. `archive` between two versions that are
 * not archives). Why remember it: the failure is only found after reading both blobs and running the
 * codec, the request is unauthenticated, and both versions are immutable, so the same pair fails the same
 * way every time; without the marker every request would redo that CPU work. Marker bodies are a few
 * bytes (the reason); the retention cron forgets them after `retainDeltasDays` (leftovers.ts), so a
 * codec upgrade gets to retry the pair; deleting the `lazy-failed/` prefix forgets them at once.
 */
export const failedKey = (name: string, from: string, to: string, method: string) =>
  `lazy-failed/${keys.delta(name, from, to, method)}`

/** The pair exists but `method` cannot produce a delta for it: 422, remembered (see failedKey). */
function cannotEncode(pair: { name: string; from: string; to: string; method: string }, reason: string) {
  return new Problem(
    422,
    'unprocessable',
    `no ${pair.method} delta can be made for ${pair.name} ${pair.from} → ${pair.to} (${reason}); ask for another method or fetch the full artifact`,
  )
}

/**
 * Builds a delta the publisher did not provide, for a pair of published versions both at most
 * `lazyGenerationMaxBytes`, frames it like an uploaded one and stores it (customMetadata `lazy=1`).
 * One request generates; the lock is an R2 object created only if absent (storage/r2-claim.ts), so
 * concurrent requests for the same pair get 503 + Retry-After instead of repeating the work.
 * Such deltas are not in the signed manifest: the agent's trust comes from the target's signed sha256,
 * which it checks after applying any delta. Resolves to the framing and the R2 etag of the object stored,
 * so the request serves exactly that stream even if the key is written again meanwhile.
 */
export async function generateLazyDelta(
  bucket: R2Bucket,
  pair: { name: string; from: string; to: string; method: DeltaMethod },
  config: RuntimeConfig,
): Promise<StoredDelta> {
  const { name, from, to, method } = pair
  const failed = await bucket.get(failedKey(name, from, to, method))
  if (failed) throw cannotEncode(pair, await failed.text())
  const [source, target] = await Promise.all([
    readPublishedManifest(bucket, name, from),
    readPublishedManifest(bucket, name, to),
  ])
  if (!source || !target) throw new Problem(404, 'not-found', `no delta ${name} ${from} → ${to}`)
  const limit = config.delta.lazyGenerationMaxBytes
  if (source.envelope.signed.size > limit || target.envelope.signed.size > limit) {
    throw new Problem(404, 'not-found', `no delta ${name} ${from} → ${to} (too large to generate on demand)`)
  }
  const lock = lockKey(name, from, to, method)
  const held = await takeClaim(bucket, lock, STALE_LOCK_MS)
  if (held === null) {
    throw new Problem(
      503,
      'generating',
      `the delta ${name} ${from} → ${to} is being generated; retry shortly`,
      {
        headers: { 'retry-after': String(RETRY_AFTER_SECONDS) },
      },
    )
  }
  try {
    const [sourceBytes, targetBytes] = await Promise.all([
      readBlob(bucket, name, from),
      readBlob(bucket, name, to),
    ])
    const started = Date.now()
    const delta = await encodeOrRemember(bucket, pair, sourceBytes, targetBytes)
    const framing = framingFor(
      { name, from, to, method },
      delta.length,
      await sha256OfBytes(delta),
      config.stream,
    )
    const stored = await storeFramedDelta(
      bucket,
      keys.delta(name, from, to, method),
      sourceFromBytes(delta),
      { name, from, to, method },
      framing,
      { lazy: '1' },
    )
    // An unconditional put resolves to the object written; null only answers a failed `onlyIf`.
    if (!stored) throw new Error(`storing the lazy delta ${name} ${from} → ${to} wrote nothing`)
    console.log(
      JSON.stringify({
        level: 'info',
        msg: 'delta generated lazily',
        name,
        from,
        to,
        method,
        ms: Date.now() - started,
        ...framing,
      }),
    )
    return { framing, storedEtag: stored.etag }
  } finally {
    // A lock left behind blocks the pair for STALE_LOCK_MS: one retry covers a transient fault, and a
    // failed cleanup must not replace the request's own outcome.
    await releaseClaim(bucket, lock, held)
      .catch(() => releaseClaim(bucket, lock, held))
      .catch(() => undefined)
  }
}

/**
 * Runs the codec for one method. A DeltaFormatError is about these immutable bytes and this method, so
 * it is stored as the pair's failure marker before the 422; any other error (an R2 fault, a bug) is
 * not remembered.
 */
async function encodeOrRemember(
  bucket: R2Bucket,
  pair: { name: string; from: string; to: string; method: DeltaMethod },
  source: Uint8Array,
  target: Uint8Array,
): Promise<Uint8Array> {
  try {
    return createDelta(source, target, { methods: [pair.method] }).delta
  } catch (error) {
    if (!(error instanceof DeltaFormatError)) throw error
    const reason = error.message.slice(0, 500)
    // Best effort: if the marker cannot be stored, the next request just tries again.
    await bucket
      .put(failedKey(pair.name, pair.from, pair.to, pair.method), reason, {
        customMetadata: { code: error.code },
      })
      .catch(() => undefined)
    throw cannotEncode(pair, reason)
  }
}

async function readBlob(bucket: R2Bucket, name: string, version: string): Promise<Uint8Array> {
  const object = await bucket.get(keys.blob(name, version))
  if (!object) throw new Problem(404, 'not-found', `${name}@${version} has no stored full artifact`)
  return new Uint8Array(await object.arrayBuffer())
}
