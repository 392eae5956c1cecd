import type { z } from 'zod'
import { RuntimeConfig } from '../../schemas/runtime-config.ts'

/** KV `CONFIG` key holding the operator's document. */
export const RUNTIME_CONFIG_KEY = 'runtime'

export interface ConfigRejection {
  at: string
  issues: Array<{ path: string; message: string }>
}

export interface RuntimeConfigStatus {
  inForce: RuntimeConfig
  source: 'kv' | 'defaults'
  lastRejected: ConfigRejection | null
}

interface CacheState extends RuntimeConfigStatus {
  /** Epoch ms after which the next call re-reads KV. */
  expiresAt: number
}

const DEFAULTS: RuntimeConfig = RuntimeConfig.parse({})

/**
 * Per-isolate cache: KV reads cost latency on every request otherwise, and operators accept that a
 * change takes up to `cacheTtlSeconds` to reach every isolate.
 */
let state: CacheState | null = null
let clock: () => number = Date.now

/** Tests: forget the cached document (and the last rejection) so the next call reads KV. */
export function clearRuntimeConfigCache(): void {
  state = null
}

/** Tests: inject time so TTL expiry is observable without sleeping. `null` restores Date.now. */
export function setRuntimeConfigClock(now: (() => number) | null): void {
  clock = now ?? Date.now
}

/** The config in force; the one function every other module calls. */
export async function getRuntimeConfig(env: Env): Promise<RuntimeConfig> {
  return (await runtimeConfigStatus(env)).inForce
}

/** The config in force with where it came from and the last rejected document, for `GET /v1/config`. */
export async function runtimeConfigStatus(env: Env): Promise<RuntimeConfigStatus> {
  const now = clock()
  if (state && now < state.expiresAt) return snapshot(state)
  const previous = state
  const raw = await env.CONFIG.get(RUNTIME_CONFIG_KEY, 'text')
  let next: RuntimeConfigStatus
  if (raw === null) {
    next = { inForce: DEFAULTS, source: 'defaults', lastRejected: previous?.lastRejected ?? null }
  } else {
    const parsed = parseDocument(raw)
    if (parsed.ok) {
      next = { inForce: parsed.config, source: 'kv', lastRejected: previous?.lastRejected ?? null }
    } else {
      // Keep the last good config: a typo in KV must not take every isolate down to defaults.
      const lastRejected: ConfigRejection = { at: new Date(now).toISOString(), issues: parsed.issues }
      console.log(
        JSON.stringify({
          level: 'warn',
          msg: 'runtime config rejected',
          key: RUNTIME_CONFIG_KEY,
          ...lastRejected,
        }),
      )
      next = {
        inForce: previous?.inForce ?? DEFAULTS,
        source: previous?.source ?? 'defaults',
        lastRejected,
      }
    }
  }
  state = { ...next, expiresAt: now + next.inForce.cacheTtlSeconds * 1000 }
  return snapshot(state)
}

function parseDocument(
  raw: string,
): { ok: true; config: RuntimeConfig } | { ok: false; issues: ConfigRejection['issues'] } {
  let json: unknown
  try {
    json = JSON.parse(raw)
  } catch (error) {
    return { ok: false, issues: [{ path: '', message: `not JSON: ${(error as Error).message}` }] }
  }
  const result = RuntimeConfig.safeParse(json)
  if (result.success) return { ok: true, config: result.data }
  return { ok: false, issues: issuesOf(result.error) }
}

function issuesOf(error: z.ZodError): ConfigRejection['issues'] {
  return error.issues.slice(0, 32).map((issue) => ({
    path: issue.path.map(String).join('.'),
    message: issue.message,
  }))
}

function snapshot(s: CacheState): RuntimeConfigStatus {
  return { inForce: s.inForce, source: s.source, lastRejected: s.lastRejected }
}
