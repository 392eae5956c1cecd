import { InvalidArgumentError } from 'commander'
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
