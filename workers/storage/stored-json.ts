import type { z } from 'zod'
import { Problem } from '../http/problem.ts'

/**
 * A JSON document the edge stored (an index, a manifest, a root), read back through its schema. The
 * edge only ever writes such documents after parsing them, so text that is not JSON or not that shape
 * means the object was damaged or edited by hand: a 500 that names it, rather than the anonymous
 * "unexpected error" a SyntaxError would become, or a document used as if it were sound.
 */
export function parseStored<Schema extends z.ZodType>(
  schema: Schema,
  raw: string,
  key: string,
  what: string,
): z.infer<Schema> {
  let json: unknown
  try {
    json = JSON.parse(raw)
  } catch {
    throw corrupt(key, what)
  }
  const parsed = schema.safeParse(json)
  if (!parsed.success) throw corrupt(key, what)
  return parsed.data
}

const corrupt = (key: string, what: string) =>
  new Problem(500, 'internal', `stored ${what} ${key} is corrupt`)
