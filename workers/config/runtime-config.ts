import { type ConfigIssue, parseRuntimeConfigDocument, RuntimeConfig } from '../../schemas/runtime-config.ts'
import type { ConfigWarning } from '../../schemas/runtime-config-warnings.ts'
import { Problem } from '../http/problem.ts'
import { edgeConfigWarnings } from './edge-config-warnings.ts'

/** KV `CONFIG` key holding the operator's document. */
export const RUNTIME_CONFIG_KEY = 'runtime'
/**
 * KV key holding the last document an isolate accepted, written by the edge itself. Why: the last good
 * config is otherwise only in each isolate's memory, so an isolate started after a bad edit (a deploy,
 * an eviction, a new colo) would run on defaults: no region map, default rate limits and retention.
 */
export const LAST_GOOD_CONFIG_KEY = 'runtime:last-good'

export interface ConfigRejection {
  at: string
  issues: ConfigIssue[]
}

export interface RuntimeConfigStatus {
  inForce: RuntimeConfig
  /** `last-good`: the document in KV is rejected and this isolate never saw a good one of its own. */
  source: 'kv' | 'last-good' | 'defaults'
  lastRejected: ConfigRejection | null
  /** Values of the config in force that the edge ignores or overrides (it is in force all the same). */
  warnings: ConfigWarning[]
}

/** A status before its warnings, with the text of the document in force (null: the defaults). */
type Resolved = Omit<RuntimeConfigStatus, 'warnings'> & { inForceRaw: string | null }

interface CacheState extends RuntimeConfigStatus {
  /** Text of the document in force: its warnings are worked out and logged again only when it changes. */
  inForceRaw: string | null
  /** Epoch ms after which the next call re-reads KV. */
  expiresAt: number
  /**
   * The accepted document this isolate knows to be stored under LAST_GOOD_CONFIG_KEY (NO_DOCUMENT: known
   * to be absent; null: not known).
   */
  savedRaw: string | null
}

const DEFAULTS: RuntimeConfig = RuntimeConfig.parse({})
/** savedRaw of an isolate that removed the last good key: no stored text is empty (it is not JSON). */
const NO_DOCUMENT = ''

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
  let raw: string | null
  try {
    raw = await env.CONFIG.get(RUNTIME_CONFIG_KEY, 'text')
  } catch (error) {
    return whileKvFails(previous, now, error)
  }
  let next: Resolved
  let savedRaw = previous?.savedRaw ?? null
  if (raw === null) {
    // Deleting the document means defaults, and the last good one goes with it: otherwise an isolate
    // that starts after a later bad edit would revive the document the operator deleted.
    if (savedRaw !== NO_DOCUMENT) savedRaw = await forgetLastGood(env)
    next = {
      inForce: DEFAULTS,
      source: 'defaults',
      lastRejected: previous?.lastRejected ?? null,
      inForceRaw: null,
    }
  } else {
    const parsed = parseRuntimeConfigDocument(raw)
    if (parsed.ok) {
      next = {
        inForce: parsed.config,
        source: 'kv',
        lastRejected: previous?.lastRejected ?? null,
        inForceRaw: raw,
      }
      if (savedRaw !== raw) savedRaw = await saveLastGood(env, raw)
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
      // A failed read of the last good one is an outage like a failed read of the document: defaults
      // would lift what it tightens, and stay in force (cached as this isolate's copy) after KV is back.
      let lastGood: { config: RuntimeConfig; raw: string } | null
      try {
        lastGood = previous ? null : await readLastGood(env)
      } catch (error) {
        return whileKvFails(previous, now, error)
      }
      next = previous
        ? {
            inForce: previous.inForce,
            source: previous.source,
            lastRejected,
            inForceRaw: previous.inForceRaw,
          }
        : lastGood
          ? { inForce: lastGood.config, source: 'last-good', lastRejected, inForceRaw: lastGood.raw }
          : { inForce: DEFAULTS, source: 'defaults', lastRejected, inForceRaw: null }
    }
  }
  const warnings =
    previous !== null && previous.inForceRaw === next.inForceRaw
      ? previous.warnings
      : announceWarnings(next, env)
  state = { ...next, warnings, expiresAt: now + next.inForce.cacheTtlSeconds * 1000, savedRaw }
  return snapshot(state)
}

/**
 * The warnings of a config that just came into force, logged once here rather than per request: the
 * operator who stored it learns which of its values do nothing (also shown by GET /v1/config).
 */
function announceWarnings(resolved: Resolved, env: Env): ConfigWarning[] {
  const warnings = edgeConfigWarnings(resolved.inForce, resolved.inForceRaw, env)
  if (warnings.length > 0)
    console.log(
      JSON.stringify({
        level: 'warn',
        msg: 'runtime config values ignored',
        key: RUNTIME_CONFIG_KEY,
        source: resolved.source,
        warnings,
      }),
    )
  return warnings
}

/** How long an isolate keeps its copy before asking KV again after a failed read. */
const KV_RETRY_MS = 5_000

/**
 * A failed KV read (an outage, a timeout) says nothing about the document: the copy in force stays,
 * and KV is asked again shortly. An isolate without one cannot know what the operator configured, and
 * defaults would lift what the document tightens (a credential requirement, signed yanks): it answers
 * 503 with Retry-After until KV answers, instead of an opaque 500 on every route that reads the config.
 */
function whileKvFails(previous: CacheState | null, now: number, error: unknown): RuntimeConfigStatus {
  console.log(
    JSON.stringify({
      level: 'warn',
      msg: 'runtime config unreadable',
      key: RUNTIME_CONFIG_KEY,
      kept: previous !== null,
      error: String(error),
    }),
  )
  if (previous === null)
    throw new Problem(503, 'unavailable', 'the runtime config cannot be read right now; retry shortly', {
      headers: { 'retry-after': String(KV_RETRY_MS / 1000) },
    })
  state = { ...previous, expiresAt: now + Math.min(KV_RETRY_MS, previous.inForce.cacheTtlSeconds * 1000) }
  return snapshot(state)
}

/**
 * Stores an accepted document as the last good one, unless KV already holds exactly it (every isolate
 * re-reads the config, so most find it there and write nothing). Best effort: KV allows one write per
 * second per key and isolates race to write the same bytes, so a refused write is simply skipped.
 * Returns what is known to be stored.
 */
async function saveLastGood(env: Env, raw: string): Promise<string | null> {
  try {
    if ((await env.CONFIG.get(LAST_GOOD_CONFIG_KEY, 'text')) !== raw)
      await env.CONFIG.put(LAST_GOOD_CONFIG_KEY, raw)
    return raw
  } catch (error) {
    console.log(
      JSON.stringify({ level: 'warn', msg: 'last good runtime config not saved', error: String(error) }),
    )
    return null
  }
}

/**
 * Removes the last good document once the operator deleted theirs, unless KV already holds none. Best
 * effort like saveLastGood: a refused delete is retried by the next read of an absent document.
 */
async function forgetLastGood(env: Env): Promise<string | null> {
  try {
    if ((await env.CONFIG.get(LAST_GOOD_CONFIG_KEY, 'text')) !== null)
      await env.CONFIG.delete(LAST_GOOD_CONFIG_KEY)
    return NO_DOCUMENT
  } catch (error) {
    console.log(
      JSON.stringify({ level: 'warn', msg: 'last good runtime config not removed', error: String(error) }),
    )
    return null
  }
}

/**
 * The stored last good document, parsed again (it passed the schema in force when it was saved); null
 * when there is none. A failed read throws.
 */
async function readLastGood(env: Env): Promise<{ config: RuntimeConfig; raw: string } | null> {
  const raw = await env.CONFIG.get(LAST_GOOD_CONFIG_KEY, 'text')
  if (raw === null) return null
  const parsed = parseRuntimeConfigDocument(raw)
  return parsed.ok ? { config: parsed.config, raw } : null
}

function snapshot(s: CacheState): RuntimeConfigStatus {
  return { inForce: s.inForce, source: s.source, lastRejected: s.lastRejected, warnings: s.warnings }
}
