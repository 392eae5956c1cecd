import { pathToFileURL } from 'node:url'
import { z } from 'zod'
import type { SwapSettings } from '../../schemas/swap.ts'
import { AgentError } from '../errors.ts'

/** What a validator module sees of a buffered write. */
export interface BufferedRequest {
  method: string
  path: string
  headers: ReadonlyArray<readonly [string, string]>
  body: Uint8Array
  client: string
}

export type Verdict = { ok: true } | { ok: false; status: number; reason: string }

/**
 * A validator module's default export returns `true`/`false` or `{ ok, status?, reason? }` (sync or async).
 * Its answer is parsed like every other input: a module that returns nonsense refuses the write (422).
 */
const ModuleVerdict = z.union([
  z.boolean(),
  z.object({
    ok: z.boolean(),
    status: z.number().int().min(400).max(499).optional(),
    reason: z.string().max(500).optional(),
  }),
])

export type ValidatorFn = (request: BufferedRequest) => unknown

/** What a validator that has not answered within `hookTimeoutMs` is taken to have said. */
const UNANSWERED: unique symbol = Symbol('unanswered')

/** Loads `validatorModule` (a path or file URL); its default export must be a function. */
export async function loadValidator(specifier: string): Promise<ValidatorFn> {
  const url = /^[a-z]+:/.test(specifier) ? specifier : pathToFileURL(specifier).href
  let loaded: unknown
  try {
    loaded = await import(url)
  } catch (error) {
    throw new AgentError('config', `cannot load validator ${specifier}: ${(error as Error).message}`)
  }
  const fn = (loaded as { default?: unknown }).default
  if (typeof fn !== 'function')
    throw new AgentError('config', `validator ${specifier} has no default function`)
  return (request) => (fn as (r: BufferedRequest) => unknown)(request)
}

/**
 * The checks a buffered write goes through in the background while it waits (the body size is also
 * enforced while the body is read, so an oversized body is never held).
 */
export async function validateWrite(
  request: BufferedRequest,
  settings: Pick<SwapSettings, 'maxBodyBytes' | 'requiredHeader' | 'hookTimeoutMs'>,
  validator: ValidatorFn | null,
): Promise<Verdict> {
  if (request.body.length > settings.maxBodyBytes) {
    return { ok: false, status: 413, reason: `body over ${settings.maxBodyBytes} bytes` }
  }
  if (settings.requiredHeader) {
    const wanted = settings.requiredHeader
    const present = request.headers.some(([name, value]) => name.toLowerCase() === wanted && value.length > 0)
    if (!present) return { ok: false, status: 401, reason: `missing ${wanted} header` }
  }
  if (!validator) return { ok: true }
  let answer: unknown
  // A module that never answers (it awaits something that hangs) would hold the write, its client, the
  // replay and so the swap and the agent's stop for ever: it gets `hookTimeoutMs`, like a hook.
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<typeof UNANSWERED>((resolve) => {
    timer = setTimeout(() => resolve(UNANSWERED), settings.hookTimeoutMs)
  })
  try {
    answer = await Promise.race([validator(request), late])
  } catch (error) {
    return {
      ok: false,
      status: 422,
      reason: `rejected by validator: ${(error as Error).message}`.slice(0, 500),
    }
  } finally {
    clearTimeout(timer)
  }
  if (answer === UNANSWERED) {
    // Not checked, so not called invalid: the client may send it again.
    return {
      ok: false,
      status: 503,
      reason: `the validator did not answer within ${settings.hookTimeoutMs} ms`,
    }
  }
  const parsed = ModuleVerdict.safeParse(answer)
  if (!parsed.success) return { ok: false, status: 422, reason: 'validator returned an invalid verdict' }
  const v = parsed.data
  if (v === true) return { ok: true }
  if (v === false) return { ok: false, status: 422, reason: 'rejected by validator' }
  if (v.ok) return { ok: true }
  return { ok: false, status: v.status ?? 422, reason: v.reason ?? 'rejected by validator' }
}
