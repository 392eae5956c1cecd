import type { z } from 'zod'

/**
 * A stored JSON value read back through `schema`, or null when it is not JSON or not that shape. The
 * rows are our own, but one written by another deployment's code, or damaged, must cost that row and
 * not the object: a throw in a constructor or a read path would fail every request the object gets,
 * for good. Callers say what they do instead (defaults, skip the row) and log it.
 */
export function parseStoredJson<T>(text: string, schema: z.ZodType<T>): T | null {
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    return null
  }
  const parsed = schema.safeParse(json)
  return parsed.success ? parsed.data : null
}
