import { ProblemDetails } from '../../schemas/problem.ts'
import { AgentError, type AgentErrorCode } from '../errors.ts'
import { JSON_LIMITS, readTextBounded } from './read-json.ts'

/** Turns a non-2xx edge response into an AgentError, keeping the problem+json detail when present. */
export async function errorFromResponse(response: Response, what: string): Promise<AgentError> {
  // Bounded: an error page may be endless too; only its start is worth showing.
  const text = await readTextBounded(response, JSON_LIMITS.error).then(
    (read) => read.text,
    () => '',
  )
  let detail = text.slice(0, 500)
  try {
    const problem = ProblemDetails.safeParse(JSON.parse(text))
    if (problem.success) detail = problem.data.detail ?? problem.data.title
  } catch {
    // Not JSON: keep the raw (truncated) text.
  }
  const code: AgentErrorCode = response.status === 404 ? 'not-found' : 'edge-rejected'
  return new AgentError(code, `${what}: HTTP ${response.status}: ${detail}`, { status: response.status })
}
