import { z } from 'zod'

/** RFC 9457 problem details: the body of every error the edge returns. */
export const ProblemDetails = z.object({
  type: z.string().max(256),
  title: z.string().max(256),
  status: z.number().int().min(400).max(599),
  detail: z.string().max(4096).optional(),
  instance: z.string().max(512).optional(),
  /** Field-level validation failures, when the problem is a bad request. */
  errors: z
    .array(z.object({ path: z.string().max(256), message: z.string().max(512) }))
    .max(64)
    .optional(),
})
export type ProblemDetails = z.infer<typeof ProblemDetails>

export const PROBLEM_CONTENT_TYPE = 'application/problem+json'
