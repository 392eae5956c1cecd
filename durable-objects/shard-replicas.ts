import { PRIMARY_BUCKET_BINDING } from '../schemas/shards.ts'

/**
 * The I/O of a replica migration: copy a blob from the primary bucket into a zone bucket, then prove the
 * copy by re-reading it and hashing every byte. The planner flips a replica active only after `verify`.
 */

/**
 * The zone bucket bound under `binding`, if the Worker has one (zones without a bucket hold no replicas).
 * Never the primary bucket, whatever the config says: migrations copy onto and delete from what this
 * returns, and the primary must keep every blob. The config schema already refuses ARTIFACTS; this also
 * catches another binding name aliasing the same bucket object, and configs or plans stored before that
 * rule existed.
 */
export function zoneBucket(env: Env, binding: string | undefined): R2Bucket | null {
  if (binding === undefined || binding === PRIMARY_BUCKET_BINDING) return null
  const value: unknown = Reflect.get(env, binding)
  if (typeof value !== 'object' || value === null) return null
  if (value === Reflect.get(env, PRIMARY_BUCKET_BINDING)) return null
  const looksLikeBucket = ['get', 'put', 'head', 'delete'].every(
    (m) => typeof Reflect.get(value, m) === 'function',
  )
  return looksLikeBucket ? (value as R2Bucket) : null
}

/** Streams `key` from `primary` into `replica` (no buffering); R2 also checks the sha256 on upload. */
export async function copyReplica(
  primary: R2Bucket,
  replica: R2Bucket,
  key: string,
  sha256: string,
): Promise<number> {
  if (replica === primary) throw new Error(`refusing to copy ${key} onto the primary bucket`)
  const source = await primary.get(key)
  if (source === null) throw new Error(`primary has no ${key}`)
  const { readable, writable } = new FixedLengthStream(source.size)
  const [, put] = await Promise.all([
    source.body.pipeTo(writable),
    replica.put(key, readable, {
      sha256,
      ...(source.httpMetadata === undefined ? {} : { httpMetadata: source.httpMetadata }),
    }),
  ])
  return put.size
}

/**
 * Deletes a replica (removal, failed verify). Refuses the primary bucket: a delete there loses the only
 * copy every other zone falls back to, and no plan or config may cause that.
 */
export async function deleteReplica(primary: R2Bucket, replica: R2Bucket, key: string): Promise<void> {
  if (replica === primary) throw new Error(`refusing to delete ${key} from the primary bucket`)
  await replica.delete(key)
}

/** Lowercase hex of a digest, as manifests write sha256. */
export const toHex = (buffer: ArrayBuffer): string =>
  [...new Uint8Array(buffer)].map((b) => b.toString(16).padStart(2, '0')).join('')

/** Re-reads the replica and hashes it end to end; true only for the expected size and sha256. */
export async function verifyReplica(
  replica: R2Bucket,
  key: string,
  size: number,
  sha256: string,
): Promise<boolean> {
  const object = await replica.get(key)
  if (object === null || object.size !== size) return false
  const digest = new crypto.DigestStream('SHA-256')
  await object.body.pipeTo(digest)
  return toHex(await digest.digest) === sha256
}
