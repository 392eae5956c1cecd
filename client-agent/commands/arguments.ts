import { InvalidArgumentError } from 'commander'
import type { z } from 'zod'
import { ArtifactName, Version } from '../../schemas/common.ts'
import { AgentError } from '../errors.ts'

/** A whole number of seconds (0 allowed), bounded so it cannot overflow a timer. */
export function parseSeconds(value: string): number {
  if (!/^\d{1,7}$/.test(value)) throw new InvalidArgumentError('a whole number of seconds')
  return Number(value)
}

/** `name@version`, or `name` alone; a usage error for anything else. */
export function parseVersionSpec(spec: string): { name: string; version?: string } {
  const at = spec.lastIndexOf('@')
  const name = at > 0 ? spec.slice(0, at) : spec
  const version = at > 0 ? spec.slice(at + 1) : undefined
  if (!ArtifactName.safeParse(name).success || (version !== undefined && !Version.safeParse(version).success))
    throw new AgentError('usage', `"${spec}" is not name or name@version`)
  return version === undefined ? { name } : { name, version }
}

/**
 * A commander parser for a value a zod schema defines: the value, or a usage error that says what it is
 * not and the schema's own reason (`"App" is not an artifact name: lowercase letters, …`), so the user
 * learns what to type instead of only that it was refused.
 */
export function parseWith(schema: z.ZodType<string>, what: string): (value: string) => string {
  return (value) => {
    const parsed = schema.safeParse(value)
    if (parsed.success) return parsed.data
    throw new InvalidArgumentError(
      `"${value}" is not ${what}: ${parsed.error.issues[0]?.message ?? 'malformed'}`,
    )
  }
}

/**
 * An artifact name found inside a command's own parsing (`install app@1.0.0`, `run <name>`): the
 * same usage error, with the schema's reason, as `parseWith` gives an option the parser checks.
 */
export function requireArtifactName(name: string): string {
  const parsed = ArtifactName.safeParse(name)
  if (parsed.success) return parsed.data
  throw new AgentError(
    'usage',
    `"${name}" is not an artifact name: ${parsed.error.issues[0]?.message ?? 'malformed'}`,
  )
}

/**
 * The `<name>` of a command that acts on an artifact as a whole (`status`, `rollback`, `uninstall`).
 * `name@version` there is the usual slip (the other commands take one), so it is named as such.
 */
export function parseArtifactName(value: string): string {
  const at = value.lastIndexOf('@')
  if (at > 0 && ArtifactName.safeParse(value.slice(0, at)).success && !ArtifactName.safeParse(value).success)
    throw new InvalidArgumentError(
      `"${value}" names a version: this command takes the artifact name alone (${value.slice(0, at)})`,
    )
  return parseWith(ArtifactName, 'an artifact name')(value)
}

/** A count of days for expiries and windows (`--expires-days`, `--within`). */
export function parseDays(value: string): number {
  if (!/^\d{1,5}$/.test(value) || Number(value) < 1)
    throw new InvalidArgumentError('a positive whole number of days')
  return Number(value)
}

/**
 * `--key <file>`, repeatable: each key signs (a maintainers' threshold above one, ADR 0035). Unset
 * means the config's signingKey.
 */
export const SIGNING_KEY_OPTION = [
  '--key <file>',
  'signing key file; repeat for several signatures (default: signingKey from the config)',
  (value: string, previous: string[] | undefined): string[] => [...(previous ?? []), value],
] as const
