/**
 * Streams a stored object through SHA-256 without holding it in memory: used after multipart
 * completion, where R2 has no whole-object checksum of its own.
 */
export async function sha256OfObject(
  bucket: R2Bucket,
  key: string,
): Promise<{ sha256: string; size: number } | null> {
  const object = await bucket.get(key)
  if (!object) return null
  const digest = new crypto.DigestStream('SHA-256')
  await object.body.pipeTo(digest)
  const bytes = new Uint8Array(await digest.digest)
  return { sha256: toHex(bytes), size: object.size }
}

export function toHex(bytes: Uint8Array): string {
  let out = ''
  for (const b of bytes) out += b.toString(16).padStart(2, '0')
  return out
}

export async function sha256OfBytes(bytes: Uint8Array): Promise<string> {
  return toHex(new Uint8Array(await crypto.subtle.digest('SHA-256', bytes)))
}
