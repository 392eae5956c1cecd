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
