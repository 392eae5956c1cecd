import { stat } from 'node:fs/promises'
import { type AgentConfig, loadConfig } from '../config.ts'
import { AgentError, systemError } from '../errors.ts'

/** What a look at the config file found since the last look. */
export type ConfigCheck =
  | { kind: 'unchanged' }
  | { kind: 'changed'; config: AgentConfig }
  /** Changed, and unreadable, not JSON or refused by the schema (a `config` AgentError saying why). */
  | { kind: 'invalid'; error: AgentError }

export interface ConfigWatch {
  readonly path: string
  /** Never throws: whatever goes wrong is `invalid`. */
  check(): Promise<ConfigCheck>
}

/**
 * Watches the daemon's config file by its identity, size, mtime and ctime, looked at once per cycle
 * (one stat; the file is read only when they changed): a config changed under a running daemon is
 * loaded as `loadConfig` loads it at start (the same zod schema, paths resolved against its folder).
 * Each change is reported once: the next look finds it unchanged until the file changes again, so an
 * invalid file is neither reloaded nor reported every cycle. Take the watch before the first load: a
 * change in between is then seen by the first check, never missed.
 */
export async function watchConfig(path: string): Promise<ConfigWatch> {
  let seen = await signatureOf(path)
  return {
    path,
    async check() {
      const now = await signatureOf(path)
      if (now === seen) return { kind: 'unchanged' }
      seen = now
      try {
        return { kind: 'changed', config: await loadConfig(path) }
      } catch (error) {
        if (error instanceof AgentError) return { kind: 'invalid', error }
        return {
          kind: 'invalid',
          error: new AgentError('config', `cannot read config file ${path}: ${String(error)}`, { path }),
        }
      }
    },
  }
}

/** What tells one version of the file from the next without reading it; a missing file is one state too. */
async function signatureOf(path: string): Promise<string> {
  try {
    const s = await stat(path, { bigint: true })
    return `${s.dev}:${s.ino}:${s.size}:${s.mtimeNs}:${s.ctimeNs}`
  } catch (error) {
    return `unreadable:${systemError(error)?.code ?? String(error)}`
  }
}
