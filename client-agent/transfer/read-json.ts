import { AgentError, type AgentErrorCode } from '../errors.ts'
import { type ReadBodyOptions, readBody } from './read-body.ts'

/** Caps on JSON answers from the edge: a hostile or broken edge cannot make the agent buffer more. */
export const JSON_LIMITS = {
  /** The edge itself refuses manifests above 64 KiB (MAX_MANIFEST_BYTES). */
  manifest: 64 * 1024,
  index: 8 * 1024 * 1024,
  /** The edge refuses root documents above 32 KiB (MAX_ROOT_BYTES). */
  root: 32 * 1024,
  plan: 4 * 1024 * 1024,
  /** Rollout answers: a device's check is a few hundred bytes, a maintainer's status at most 100 events. */
  rollout: 256 * 1024,
  prefetch: 4 * 1024 * 1024,
  /** A telemetry receipt is a few counters. */
  receipt: 4 * 1024,
  /** Error bodies are only read for their problem detail. */
  error: 16 * 1024,
  /**
   * The edge's answers to a maintainer (publish staging and commit, multipart parts, a re-sign, the
   * runtime config status with its issues and warnings): a few hundred bytes to a few KiB each.
   */
  maintainer: 256 * 1024,
} as const

/** readBody's stall timer and minimum rate (slow-retrieval defence) apply; their defaults when unset. */
export interface ReadJsonOptions extends ReadBodyOptions {
  /** The error code for a body that is too large or not JSON (default `edge-rejected`). */
  code?: AgentErrorCode
}

/**
 * Reads a JSON response body with a byte cap and the stall timer of readBody, so an endless or
 * trickling answer ends in an AgentError instead of unbounded memory or a hang. Returns the parsed,
 * not yet validated, value (callers run their zod schema on it).
 */
export async function readJsonBounded(
  response: Response,
  maxBytes: number,
  what: string,
  options: ReadJsonOptions = {},
): Promise<unknown> {
  const code = options.code ?? 'edge-rejected'
  const { text, truncated } = await readTextBounded(response, maxBytes, options)
  if (truncated) throw new AgentError(code, `the edge sent more than ${maxBytes} bytes for ${what}`)
  try {
    return JSON.parse(text)
  } catch {
    throw new AgentError(code, `the edge sent ${what} that is not JSON`)
  }
}

/** Thrown from the chunk callback to stop reading once the cap is passed. */
class CapReached extends Error {}

/**
 * Up to `maxBytes` of a body as text; reading stops (and the body is cancelled) past the cap, which
 * `truncated` reports.
 */
export async function readTextBounded(
  response: Response,
  maxBytes: number,
  options: ReadBodyOptions = {},
): Promise<{ text: string; truncated: boolean }> {
  const parts: Uint8Array[] = []
  let total = 0
  let truncated = false
  try {
    await readBody(
      response,
      (chunk) => {
        parts.push(chunk.subarray(0, Math.max(0, maxBytes - total)))
        total += chunk.length
        if (total > maxBytes) throw new CapReached()
      },
      options,
    )
  } catch (error) {
    if (!(error instanceof CapReached)) throw error
    truncated = true
  }
  const bytes = new Uint8Array(parts.reduce((sum, p) => sum + p.length, 0))
  let at = 0
  for (const part of parts) {
    bytes.set(part, at)
    at += part.length
  }
  return { text: new TextDecoder().decode(bytes), truncated }
}
