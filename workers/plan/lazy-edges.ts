import { detectArchive } from '../../delta/archive/detect.ts'
import { DeltaFraming } from '../../schemas/delta-stream.ts'
import type { ArtifactManifest, DeltaMethod, DeltaRef } from '../../schemas/manifest.ts'
import type { RuntimeConfig } from '../../schemas/runtime-config.ts'
import { failedKey, generateLazyDelta } from '../publish/lazy-delta.ts'
import { keys } from '../storage/keys.ts'

/**
 * Direct deltas the edge made itself (workers/publish/lazy-delta.ts) as edges the planner can weigh.
 * Publishers ship deltas from a few recent versions; a device further behind gets a chain or the full
 * artifact. The first such plan for a small pair has the edge make the direct delta in the background
 * (`warmDirectDelta`); from then on the planner offers it like a published one, when it is cheaper.
 * Lazy deltas are not in the signed manifest: the device trusts the target's signed sha256, which it
 * checks after applying any delta, and the payload sha256 the plan step names.
 */

/** Lazily made deltas stored for from → to, one per method of `methods` (R2 HEADs, one per method). */
export async function storedLazyRefs(
  bucket: R2Bucket,
  pair: { name: string; from: string; to: string },
  methods: readonly DeltaMethod[],
): Promise<DeltaRef[]> {
  const found = await Promise.all(
    methods.map(async (method): Promise<DeltaRef | null> => {
      const head = await bucket.head(keys.delta(pair.name, pair.from, pair.to, method))
      if (head?.customMetadata?.lazy !== '1') return null
      const framing = DeltaFraming.safeParse(head.customMetadata)
      if (!framing.success) return null
      return { from: pair.from, method, size: framing.data.payloadLength, sha256: framing.data.payloadSha256 }
    }),
  )
  return found.filter((ref) => ref !== null)
}

/**
 * Makes from → to in the background (the caller hands the promise to waitUntil) when no plan could
 * offer a direct delta: both versions within `lazyGenerationMaxBytes`, and the method the device takes
 * that fits the pair (archive-aware for two archives, else VCDIFF, else approx) neither stored nor
 * remembered as impossible. Resolves to the method made, or null when nothing was worth making; never
 * rejects (a failed warm-up only means the next plan tries again, or the pair stays on its chain).
 */
export async function warmDirectDelta(
  bucket: R2Bucket,
  pair: { name: string; from: ArtifactManifest; to: ArtifactManifest },
  methods: readonly DeltaMethod[],
  config: RuntimeConfig,
): Promise<DeltaMethod | null> {
  try {
    const limit = config.delta.lazyGenerationMaxBytes
    if (pair.from.size > limit || pair.to.size > limit) return null
    const from = pair.from.version
    const to = pair.to.version
    const method = await methodFor(bucket, pair, methods)
    if (method === null) return null
    const [stored, failed] = await Promise.all([
      bucket.head(keys.delta(pair.name, from, to, method)),
      bucket.head(failedKey(pair.name, from, to, method)),
    ])
    if (stored || failed) return null
    await generateLazyDelta(bucket, { name: pair.name, from, to, method }, config)
    return method
  } catch (error) {
    console.log(
      JSON.stringify({
        level: 'warn',
        msg: 'direct delta warm-up failed',
        name: pair.name,
        error: String(error),
      }),
    )
    return null
  }
}

/** The method worth making for a pair: what the device takes, chosen by what the two blobs are. */
async function methodFor(
  bucket: R2Bucket,
  pair: { name: string; from: ArtifactManifest; to: ArtifactManifest },
  methods: readonly DeltaMethod[],
): Promise<DeltaMethod | null> {
  if (methods.includes('archive') && pair.from.size >= MAGIC_BYTES && pair.to.size >= MAGIC_BYTES) {
    const [source, target] = await Promise.all([
      magicOf(bucket, pair.name, pair.from.version),
      magicOf(bucket, pair.name, pair.to.version),
    ])
    if (source && target && detectArchive(source) && detectArchive(target)) return 'archive'
  }
  // VCDIFF before approx: its hash matcher costs a fraction of approx's suffix sort in a request's CPU.
  return (['vcdiff', 'approx'] as const).find((m) => methods.includes(m)) ?? null
}

/** Bytes detectArchive needs (a zip's end record is 22); smaller blobs are not archives. */
const MAGIC_BYTES = 22

/** The first MAGIC_BYTES of a version's blob (a range read: the blob may be megabytes). */
async function magicOf(bucket: R2Bucket, name: string, version: string): Promise<Uint8Array | null> {
  const object = await bucket.get(keys.blob(name, version), { range: { offset: 0, length: MAGIC_BYTES } })
  return object ? new Uint8Array(await object.arrayBuffer()) : null
}
