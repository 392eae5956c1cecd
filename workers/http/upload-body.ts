import type { MiddlewareHandler } from 'hono'
import { refuseBody } from '../storage/guarded-bucket.ts'
import { Problem } from './problem.ts'

/**
 * For routes that take their body as sent (uploads stored byte for byte, JSON read by Hono's
 * validator): a body in any content coding but identity is refused with 415 and `Accept-Encoding:
 * identity` (RFC 9110 §8.4, §12.5.3, §15.5.16). Why: the Content-Encoding header was ignored, so a body
 * labelled gzip was stored, or parsed, as if its coded bytes were the content, and one labelled gzip
 * that was not went through as well. Routes that decode gzip read their body with readBoundedBody.
 */
export const identityBody: MiddlewareHandler = async (c, next) => {
  const coding = (c.req.header('content-encoding') ?? '').trim().toLowerCase()
  if (coding !== '' && coding !== 'identity') {
    throw new Problem(
      415,
      'unsupported-media-type',
      `content-encoding ${coding.slice(0, 64)} is not accepted here: send the body as is (identity)`,
      { headers: { 'accept-encoding': 'identity' } },
    )
  }
  await next()
}

/**
 * A request body that failed on the client's side: it ended before its Content-Length, ran past it,
 * or its stream broke off (the client went away). 400, never a storage fault: retrying the same
 * request cannot succeed, and R2 had nothing to do with it.
 */
export class UploadBodyProblem extends Problem {}

function lengthMismatch(detail: string): UploadBodyProblem {
  return new UploadBodyProblem(400, 'body-length-mismatch', detail)
}

/**
 * The request body, checked against its Content-Length as it streams: it errors with an
 * UploadBodyProblem (400 `body-length-mismatch` for a body that ends short or runs long, 400
 * `request-body-incomplete` for a stream that broke off) before any byte beyond `declared` passes, and
 * calls `onFail` first, so whatever consumes it can tell the client's failure from its own.
 */
export function countedBody(
  body: ReadableStream<Uint8Array>,
  declared: number,
  onFail: (problem: UploadBodyProblem) => void = () => undefined,
): ReadableStream<Uint8Array> {
  const reader = body.getReader()
  let seen = 0
  // The last chunk read is held back until the next read says what follows it: the consumer (a
  // FixedLengthStream into R2) must never see all `declared` bytes of a body that then runs on or
  // breaks off, or R2 could store them before the body is known to be bad.
  let held: Uint8Array | null = null
  // Set when the consumer cancels (a put R2 failed): the cancel ends a read still pending with `done`,
  // which is then no verdict on the body. Judging it "ended short" would mark the put's stream refused
  // and turn R2's fault into the client's 400, which a client does not retry.
  let cancelled = false
  const fail = (problem: UploadBodyProblem, controller: ReadableStreamDefaultController<Uint8Array>) => {
    if (cancelled) return
    onFail(problem)
    controller.error(problem)
  }
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      for (;;) {
        let next: ReadableStreamReadResult<Uint8Array>
        try {
          next = await reader.read()
        } catch (error) {
          const why = error instanceof Error ? error.message : String(error)
          return fail(
            new UploadBodyProblem(
              400,
              'request-body-incomplete',
              `the request body broke off after ${seen} of ${declared} bytes (${why.slice(0, 200)}); nothing was stored: send it again`,
            ),
            controller,
          )
        }
        if (next.done) {
          if (seen !== declared) {
            return fail(
              lengthMismatch(
                `the body ended after ${seen} bytes, its Content-Length says ${declared}; nothing was stored`,
              ),
              controller,
            )
          }
          if (held) controller.enqueue(held)
          return controller.close()
        }
        const chunk = next.value
        seen += chunk instanceof Uint8Array ? chunk.byteLength : Number.POSITIVE_INFINITY
        if (seen > declared) {
          await reader.cancel().catch(() => undefined)
          return fail(
            lengthMismatch(`the body runs past its Content-Length of ${declared} bytes; nothing was stored`),
            controller,
          )
        }
        const ready = held
        held = chunk
        if (ready) return controller.enqueue(ready)
      }
    },
    cancel(reason) {
      cancelled = true
      return reader.cancel(reason)
    },
  })
}

/**
 * The request body as an R2 put or uploadPart takes it: a stream of exactly `declared` bytes
 * (FixedLengthStream, the length R2 needs up front, whether or not the runtime knew the body's own),
 * counted on the way (countedBody). Why: a body of unknown length made R2 throw, and a body that ended
 * short, ran long or broke off failed the put; both were logged and answered as storage faults (503 +
 * Retry-After) that a client retrying the same request never got past. A failure of the body marks
 * the stream refused (guarded-bucket.ts) before R2 sees it fail, so the put fails with the body's 400;
 * a failed put stores nothing. Faults of R2 itself stay storage faults.
 */
export function measuredBody(body: ReadableStream<Uint8Array>, declared: number): ReadableStream<Uint8Array> {
  const { readable, writable } = new FixedLengthStream(declared)
  const counted = countedBody(body, declared, (problem) => refuseBody(readable, problem))
  // A failure here reaches the consumer of `readable` (the put), which reports it.
  counted.pipeTo(writable).catch(() => undefined)
  return readable
}
