import { ProblemDetails } from '../../schemas/problem.ts'
import { AgentError, type AgentErrorCode } from '../errors.ts'
import { JSON_LIMITS, readTextBounded } from './read-json.ts'

/**
 * Turns a non-2xx edge response into an AgentError, keeping the problem+json detail when present, its
 * type's slug as `details.problem` (`https://deltaport.dev/problems/<slug>`: what tells two 409s apart)
 * and the edge's Retry-After (delta-seconds) as `details.retryAfterSeconds`.
 */
export async function errorFromResponse(response: Response, what: string): Promise<AgentError> {
  // Bounded: an error page may be endless too; only its start is worth showing.
  const text = await readTextBounded(response, JSON_LIMITS.error).then(
    (read) => read.text,
    () => '',
  )
  let detail = text.slice(0, 500)
  let slug: string | undefined
  try {
    const problem = ProblemDetails.safeParse(JSON.parse(text))
    if (problem.success) {
      detail = problem.data.detail ?? problem.data.title
      // A 400's own detail is only "invalid json": the field errors say what to change.
      const fields = (problem.data.errors ?? []).slice(0, 5).map((e) => `${e.path || '(body)'}: ${e.message}`)
      if (fields.length > 0) detail += ` (${fields.join('; ')})`
      slug = problemSlug(problem.data.type)
    }
  } catch {
    // Not JSON: keep the raw (truncated) text.
  }
  const code: AgentErrorCode = response.status === 404 ? 'not-found' : 'edge-rejected'
  const retryAfter = retryAfterSeconds(response)
  return new AgentError(code, `${what}: HTTP ${response.status}: ${detail}`, {
    status: response.status,
    ...(slug !== undefined ? { problem: slug } : {}),
    ...(retryAfter !== undefined && retryAfter > 0 ? { retryAfterSeconds: retryAfter } : {}),
  })
}

/** An answer's Retry-After in delta-seconds (the only form the edge sends); undefined when absent or not that. */
export function retryAfterSeconds(response: Response): number | undefined {
  const header = response.headers.get('retry-after')?.trim()
  if (header === undefined || !/^\d{1,9}$/.test(header)) return undefined
  return Number(header)
}

/** How long the edge asked to wait before trying again (see errorFromResponse), in ms; 0 if it did not say. */
export function retryAfterMs(error: unknown): number {
  const seconds = error instanceof AgentError ? error.details.retryAfterSeconds : undefined
  return typeof seconds === 'number' ? seconds * 1000 : 0
}

/** The slug of a problem type this edge names (`https://deltaport.dev/problems/<slug>`), else undefined. */
function problemSlug(type: string): string | undefined {
  const match = /^https:\/\/deltaport\.dev\/problems\/([a-z0-9-]{1,64})$/.exec(type)
  return match?.[1]
}

/** Whether `error` is the edge's problem answer of type `slug` (see errorFromResponse). */
export function isProblem(error: unknown, slug: string): boolean {
  return error instanceof AgentError && error.details.problem === slug
}
