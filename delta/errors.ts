import { ARCHIVE_TOO_LARGE } from './archive/limits.ts'
import { E as VCDIFF } from './vcdiff/errors.ts'

/**
 * The one error every decoder in delta/ throws for bad input. Callers (the agent, the edge) map it to
 * a typed failure; fuzz tests assert that hostile bytes produce this and nothing else.
 */
export class DeltaFormatError extends Error {
  override readonly name = 'DeltaFormatError'
  readonly code: string

  constructor(code: string, message: string) {
    super(message)
    this.code = code
  }
}

/** Throws a DeltaFormatError unless `condition` holds; keeps bounds checks to one line each. */
export function check(condition: boolean, code: string, message: string): asserts condition {
  if (!condition) throw new DeltaFormatError(code, message)
}

/**
 * Memory for a size the caller chose (a streaming source window) could not be had: a limit of the
 * machine, to be met with a smaller size, and not the RangeError (which every caller would take for a bug)
 * that the allocation throws.
 */
export const OUT_OF_MEMORY = 'out-of-memory'

/**
 * The RangeError V8 throws when an ArrayBuffer (a typed array, a Buffer) cannot be had: this machine's
 * memory (or the process's address-space limit), not a bug. Matched by message because V8 throws the
 * same class for a length over the typed-array maximum, which is a bug.
 */
export function isAllocationFailure(error: unknown): error is RangeError {
  return error instanceof RangeError && error.message === 'Array buffer allocation failed'
}

/**
 * The codes of a ceiling the caller set (or left at its default) being reached: the delta may be sound,
 * and a decoder given more room would apply it. Every other code means the delta, or the source it was
 * handed, is wrong. Kept here, next to the class, so callers never match codes of their own.
 */
const LIMIT_CODES: ReadonlySet<string> = new Set([
  OUT_OF_MEMORY,
  VCDIFF.limit,
  'too-large', // approx: target or block size over ApproxLimits
  'archive-limit', // archive: the container declares more than ArchiveLimits allow
  ARCHIVE_TOO_LARGE, // archive: an archive expands past maxExpandedBytes
])

/** A DeltaFormatError for a limit reached (LIMIT_CODES), not for damage. */
export function isLimitError(error: unknown): boolean {
  return error instanceof DeltaFormatError && LIMIT_CODES.has(error.code)
}
