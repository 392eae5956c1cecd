import type { Context } from 'hono'
import type { ContentfulStatusCode } from 'hono/utils/http-status'
import { PROBLEM_CONTENT_TYPE, type ProblemDetails } from '../../schemas/problem.ts'

/**
 * A failure the edge means to report. Handlers throw it; the app's single `onError` turns it (and
 * anything unexpected) into an RFC 9457 body, so no route formats errors by hand.
 */
export class Problem extends Error {
  readonly status: ContentfulStatusCode
  readonly slug: string
  readonly errors: ProblemDetails['errors']
  readonly headers: Record<string, string>

  constructor(
    status: ContentfulStatusCode,
    slug: string,
    detail: string,
    extra: { errors?: ProblemDetails['errors']; headers?: Record<string, string> } = {},
  ) {
    super(detail)
    this.status = status
    this.slug = slug
    this.errors = extra.errors
    this.headers = extra.headers ?? {}
  }
}

/** 429 for a client over one of its rate limits, saying when it may try again. */
export function rateLimited(detail: string, retryAfterSeconds: number): Problem {
  return new Problem(429, 'too-many-requests', detail, {
    headers: { 'retry-after': String(retryAfterSeconds) },
  })
}

const TITLES: Record<string, string> = {
  'bad-request': 'The request is malformed',
  unauthorized: 'Authentication required',
  forbidden: 'The request is not allowed from this origin',
  'not-found': 'No such resource',
  'method-not-allowed': 'The resource does not answer this method',
  conflict: 'The request conflicts with the current state',
  'serial-overtaken': "Another publish reached the manifest's serial first; sign it again with a higher one",
  'precondition-failed': 'A precondition failed',
  'payload-too-large': 'The request body is too large',
  'length-required': 'Content-Length is required',
  'body-length-mismatch': 'The request body is shorter or longer than its Content-Length',
  'request-body-incomplete': 'The request body broke off before its end',
  'range-not-satisfiable': 'The range cannot be served',
  'integrity-mismatch': 'The uploaded bytes do not match the manifest',
  'untrusted-signature': 'The document is not signed by a maintainer key this edge trusts',
  'untrusted-root': 'The root is not signed as the chain of roots requires',
  'invalid-statement': 'The signed statement does not fit the request',
  unprocessable: 'The request is well-formed but cannot be processed',
  'too-many-requests': 'Too many requests',
  'unsupported-media-type': "The body's media type or encoding is not accepted",
  generating: 'The resource is being generated; retry shortly',
  'object-replaced': 'The stored object was replaced while it was being read; retry shortly',
  'storage-unavailable': 'The artifact store is temporarily unavailable; retry shortly',
  'manifest-being-repaired': 'The index lists the version but its manifest is being restored; retry later',
  unavailable: 'A backing service is temporarily unavailable; retry shortly',
  internal: 'Internal error',
  'enrollment-refused': 'The enrollment code cannot enroll a device',
  'device-credential-required': 'A device credential is required',
  'device-credential-invalid': 'The device credential is not valid',
  'device-credential-expired': 'The device credential expired',
  'device-credential-revoked': 'The device credential was revoked',
}

/**
 * Details for problems raised without one: Hono's own middleware throws bare HTTPExceptions (csrf()
 * refusing a cross-origin form post has no message), and a problem must still say what to do.
 */
const DEFAULT_DETAILS: Record<string, string> = {
  forbidden:
    'cross-origin form posts are refused: submit the form from a page served by this edge (the Origin header must match it)',
}

function clip(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`
}

export function problemResponse(c: Context, problem: Problem): Response {
  const body: ProblemDetails = {
    type: `https://deltaport.dev/problems/${problem.slug}`,
    title: TITLES[problem.slug] ?? problem.slug,
    status: problem.status,
    // Clipped to the schema's bounds: details and paths echo client input (a 10 KB name), and agents
    // parse this body with ProblemDetails, so it must stay valid whatever the request was.
    detail: clip(
      problem.message || DEFAULT_DETAILS[problem.slug] || TITLES[problem.slug] || problem.slug,
      4096,
    ),
    instance: clip(new URL(c.req.url).pathname, 512),
    ...(problem.errors
      ? { errors: problem.errors.map((e) => ({ path: clip(e.path, 256), message: clip(e.message, 512) })) }
      : {}),
  }
  return new Response(JSON.stringify(body), {
    status: problem.status,
    headers: { 'content-type': PROBLEM_CONTENT_TYPE, 'cache-control': 'no-store', ...problem.headers },
  })
}
