// A namespace import: the agent's bundle must load on an older Node far enough to say it needs a newer one
// (scripts/build-agent.ts), and a named import of an export that Node lacks (getSystemErrorMessage is
// Node 22's) fails the whole module before any line of it runs.
import * as nodeUtil from 'node:util'

/** Stable codes scripts can match on (`--json` prints them) and the exit status each maps to. */
export const EXIT_CODES = {
  usage: 2,
  config: 3,
  network: 4,
  'edge-rejected': 5,
  'not-found': 6,
  'untrusted-manifest': 7,
  'integrity-mismatch': 8,
  'install-failed': 9,
  io: 10,
  /** Another deltaport process is changing the same artifact and did not finish in time. */
  busy: 11,
  /** A pinned version its maintainer yanked (`--allow-yanked` installs it anyway). */
  yanked: 12,
  /** The disk would keep less than `minFreeBytes` free after the update: nothing was written. */
  'no-space': 13,
  /** Installed artifacts need versions of a dependency that no published version (or this one) satisfies. */
  'dependency-conflict': 14,
  /** indexKeys are set and the index came without a valid, fresh statement (ADR 0032). */
  'untrusted-index': 15,
  /** The config names a root and the chain of roots cannot be followed, or the newest has expired (ADR 0035). */
  'untrusted-root': 16,
  /**
   * A delta past a ceiling of the decoder (a VCDIFF window over 64 MiB, an approx block over 16 MiB):
   * not damage, as 8 would say; the delta needs remaking with smaller windows (`delta apply`). Also
   * `delta make` asking for more memory than the machine gives: a smaller `--source-window`, or `--stream`;
   * and `delta apply` needing more memory than the machine (or `--max-memory`) gives, however found.
   */
  'limit-exceeded': 17,
  /**
   * A checker's verdict on what it was given (`config check`: a document the edge would refuse, or
   * values it would ignore), like a linter's exit 1: not a failure of the agent itself.
   */
  'check-failed': 1,
} as const
export type AgentErrorCode = keyof typeof EXIT_CODES

/** Every failure the agent reports is one of these; anything else is a bug. */
export class AgentError extends Error {
  override readonly name = 'AgentError'
  readonly code: AgentErrorCode
  readonly details: Record<string, unknown>

  constructor(code: AgentErrorCode, message: string, details: Record<string, unknown> = {}) {
    super(message)
    this.code = code
    this.details = details
  }

  get exitCode(): number {
    return EXIT_CODES[this.code]
  }
}

/**
 * A failed file operation (a missing input, a directory without write permission, a full disk) as the
 * user's mistake or the machine's state it is, not as a bug: `io`, naming the path and the reason; a
 * full disk or quota (ENOSPC, EDQUOT) is `no-space` (exit 13), with the way out. `path` names the file
 * when the error itself has none (a write or fsync on an open handle) or a misleading one (a temp name).
 * Anything that is not an operating-system error (no errno code and syscall) stays unrecognised.
 */
export function fromFileSystemError(error: unknown, path?: string): AgentError | null {
  const system = systemError(error)
  if (!system) return null
  const { code, syscall, reason } = system
  const named = path ?? system.path
  const what = typeof named === 'string' ? `${syscall} ${named}` : syscall
  const details = { errno: code, syscall, ...(typeof named === 'string' ? { path: named } : {}) }
  if (FULL_DISK.has(code))
    return new AgentError(
      'no-space',
      `cannot ${what}: ${reason}; free space on that disk (\`deltaport uninstall\` of an artifact no longer needed frees its versions) and try again`,
      details,
    )
  return new AgentError('io', `cannot ${what}: ${reason}`, details)
}

/** The errno codes of a disk (or the user's quota on it) that has no room left. */
const FULL_DISK = new Set(['ENOSPC', 'EDQUOT'])

/**
 * Runs a file operation and turns an operating-system failure into fromFileSystemError's AgentError,
 * naming `path`: for calls on an open handle, whose errors carry no path.
 */
export async function namingPath<T>(path: string, operation: Promise<T>): Promise<T> {
  try {
    return await operation
  } catch (error) {
    throw fromFileSystemError(error, path) ?? error
  }
}

/** An operating-system error's code, call, path and readable reason; null for anything else. */
export function systemError(
  error: unknown,
): { code: string; syscall: string; path?: string | undefined; reason: string } | null {
  if (!(error instanceof Error)) return null
  const { code, syscall, path, errno } = error as NodeJS.ErrnoException
  if (typeof code !== 'string' || !/^E[A-Z0-9]+$/.test(code) || typeof syscall !== 'string') return null
  return {
    code,
    syscall,
    path,
    reason: typeof errno === 'number' ? nodeUtil.getSystemErrorMessage(errno) : code,
  }
}
