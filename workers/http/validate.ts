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
  return zValidator(target, schema, (result) => {
    if (!result.success) {
      const errors = result.error.issues.slice(0, 64).map((issue) => ({
        path: issue.path.map(String).join('.') || target,
        message: issue.message,
      }))
      throw new Problem(400, 'bad-request', `invalid ${target}`, { errors })
    }
  })
}
