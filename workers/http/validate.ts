import { zValidator } from '@hono/zod-validator'
import type { ValidationTargets } from 'hono'
import type { z } from 'zod'
import { Problem } from './problem.ts'

/**
 * `zValidator` whose failures become 400 problem+json listing each bad field, instead of the
 * library's default plain body. Use it for every param, query, header and JSON body.
 */
export function valid<Target extends keyof ValidationTargets, Schema extends z.ZodType>(
  target: Target,
  schema: Schema,
) {
  return zValidator(target, schema, (result, c) => {
    if (result.success) return
    // Hono reads a JSON body only under a JSON Content-Type and validates `{}` otherwise: say that,
    // rather than list every field of a body that was never read.
    if (target === 'json' && !isJsonMediaType(c.req.header('content-type')))
      throw new Problem(
        415,
        'unsupported-media-type',
        'send the body as JSON, with Content-Type: application/json',
      )
    throw invalidInput(target, result.error)
  })
}

function isJsonMediaType(header: string | undefined): boolean {
  return /^application\/([a-z0-9.+-]+\+)?json\s*(;|$)/i.test(header ?? '')
}

/** The 400 problem for a zod failure, listing each bad field (at most 64). */
export function invalidInput(target: string, error: { issues: readonly z.core.$ZodIssue[] }): Problem {
  const errors = error.issues.slice(0, 64).map((issue) => ({
    path: issue.path.map(String).join('.') || target,
    message: issue.message,
  }))
  return new Problem(400, 'bad-request', `invalid ${target}`, { errors })
}

/** Parses a JSON body already read (and bounded) by the caller against `schema`. */
export function parseJsonBody<Schema extends z.ZodType>(bytes: Uint8Array, schema: Schema): z.infer<Schema> {
  let json: unknown
  try {
    json = JSON.parse(new TextDecoder().decode(bytes))
  } catch {
    throw new Problem(400, 'bad-request', 'malformed JSON')
  }
  return validJson(json, schema)
}

/** A JSON value already parsed, held to `schema`: a 400 listing each bad field otherwise. */
export function validJson<Schema extends z.ZodType>(json: unknown, schema: Schema): z.infer<Schema> {
  const parsed = schema.safeParse(json)
  if (!parsed.success) throw invalidInput('json', parsed.error)
  return parsed.data
}
