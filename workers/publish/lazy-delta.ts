import { createDelta } from '../../delta/index.ts'
import { sourceFromBytes } from '../../delta/io.ts'
import type { DeltaFraming } from '../../schemas/delta-stream.ts'
import type { DeltaMethod } from '../../schemas/manifest.ts'
import type { RuntimeConfig } from '../../schemas/runtime-config.ts'
import { Problem } from '../http/problem.ts'
import { readManifest } from '../storage/artifact-store.ts'
import { keys } from '../storage/keys.ts'
import { framingFor, storeFramedDelta } from './frame-delta.ts'
import { sha256OfBytes } from './verify-object.ts'

/** A lock older than this belongs to a generation that died (isolate evicted, CPU limit). */
const STALE_LOCK_MS = 60_000
/** Clients are told to come back after this while another request generates the pair. */
const RETRY_AFTER_SECONDS = 2

export const lockKey = (name: string, from: string, to: string, method: string) =>
  `locks/${keys.delta(name, from, to, method)}`

/**
 * Builds a delta the publisher did not provide, for a pair of published versions both at most
 * `lazyGenerationMaxBytes`, frames it like an uploaded one and stores it (customMetadata `lazy=1`).
 * One request generates; the lock is an R2 object created only if absent (If-None-Match: *), so
 * concurrent requests for the same pair get 503 + Retry-After instead of repeating the work.
 * Such deltas are not in the signed manifest: the agent's trust comes from the target's signed sha256,
 * which it checks after applying any delta.
 */
export async function generateLazyDelta(
  bucket: R2Bucket,
  pair: { name: string; from: string; to: string; method: DeltaMethod },
  config: RuntimeConfig,
): Promise<DeltaFraming> {
  const { name, from, to, method } = pair
  const [source, target] = await Promise.all([
    readManifest(bucket, keys.manifest(name, from)),
    readManifest(bucket, keys.manifest(name, to)),
  ])
  if (!source || !target) throw new Problem(404, 'not-found', `no delta ${name} ${from} → ${to}`)
  const limit = config.delta.lazyGenerationMaxBytes
  if (source.envelope.signed.size > limit || target.envelope.signed.size > limit) {
    throw new Problem(404, 'not-found', `no delta ${name} ${from} → ${to} (too large to generate on demand)`)
  }
  const lock = lockKey(name, from, to, method)
  if (!(await acquire(bucket, lock))) {
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
    const { delta } = createDelta(sourceBytes, targetBytes, { methods: [method] })
    const framing = framingFor(delta.length, await sha256OfBytes(delta), config.stream)
    await storeFramedDelta(
      bucket,
      keys.delta(name, from, to, method),
      sourceFromBytes(delta),
      { name, from, to, method },
      framing,
      { lazy: '1' },
    )
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
    return framing
  } finally {
    // A lock left behind blocks the pair for STALE_LOCK_MS: one retry covers a transient fault, and a
    // failed cleanup must not replace the request's own outcome.
    await bucket
      .delete(lock)
      .catch(() => bucket.delete(lock))
      .catch(() => undefined)
  }
}

async function acquire(bucket: R2Bucket, lock: string): Promise<boolean> {
  for (let attempt = 0; attempt < 2; attempt++) {
    const created = await bucket.put(lock, new Date().toISOString(), { onlyIf: { etagDoesNotMatch: '*' } })
    if (created) return true
    const held = await bucket.head(lock)
    if (!held || Date.now() - held.uploaded.getTime() < STALE_LOCK_MS) return false
    // Taken over: the holder is gone. A race here at worst generates the same bytes twice.
    await bucket.delete(lock)
  }
  return false
}

async function readBlob(bucket: R2Bucket, name: string, version: string): Promise<Uint8Array> {
  const object = await bucket.get(keys.blob(name, version))
  if (!object) throw new Problem(404, 'not-found', `${name}@${version} has no stored full artifact`)
  return new Uint8Array(await object.arrayBuffer())
}
