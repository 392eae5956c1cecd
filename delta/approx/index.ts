/**
 * Approximate (bsdiff-class) deltas for binaries whose bytes mostly survive but shift: SA-IS suffix
 * array of the source, bsdiff-style fuzzy alignment, and the blocked DPAX container
 * (docs/formats/approx-delta.md).
 */
export { applyApproxDelta } from './apply.ts'
export { applyApproxDeltaStream } from './apply-stream.ts'
export { type CreateApproxOptions, createApproxDelta, type DeflateHost } from './encode.ts'
export type { ApproxLimits } from './format.ts'
export type { Inflated, InflateHost } from './inflate.ts'
