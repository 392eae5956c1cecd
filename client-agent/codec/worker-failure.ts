/**
 * How a codec worker's failure crosses the thread boundary (off-thread-apply.ts, off-thread-make.ts):
 * structured clone keeps only plain data, so the worker sends what kind of error it was and the calling
 * side rebuilds the typed error the codec would have thrown on its own thread.
 */
import { DeltaFormatError, isAllocationFailure } from '../../delta/errors.ts'
import { AgentError, type AgentErrorCode, fromFileSystemError } from '../errors.ts'

export type SerializedFailure =
  | { kind: 'delta-format'; code: string; message: string }
  | { kind: 'agent'; code: AgentErrorCode; message: string; details: Record<string, unknown> }
  | { kind: 'allocation'; message: string }
  | { kind: 'other'; message: string }

/** In the worker: what it failed with, as data. */
export function serializeFailure(error: unknown): SerializedFailure {
  if (error instanceof DeltaFormatError)
    return { kind: 'delta-format', code: error.code, message: error.message }
  if (isAllocationFailure(error)) return { kind: 'allocation', message: error.message }
  const agent = error instanceof AgentError ? error : fromFileSystemError(error)
  if (agent) return { kind: 'agent', code: agent.code, message: agent.message, details: agent.details }
  return { kind: 'other', message: error instanceof Error ? (error.stack ?? error.message) : String(error) }
}

/** On the calling side: the typed error again; `worker` names it in an untyped failure. */
export function reviveFailure(failure: SerializedFailure, worker: string): Error {
  switch (failure.kind) {
    case 'delta-format':
      return new DeltaFormatError(failure.code, failure.message)
    case 'agent':
      return new AgentError(failure.code, failure.message, failure.details)
    case 'allocation':
      // The same RangeError, so isAllocationFailure (delta/errors.ts) still recognises it.
      return new RangeError(failure.message)
    case 'other':
      return new Error(`the ${worker} worker failed: ${failure.message}`)
  }
}
