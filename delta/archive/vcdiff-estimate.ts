/**
 * A cheap forecast of how big the vcdiff inner delta of an archive pair will be, from a sample of its
 * edited entries. It decides which inner differ runs first (differ-order.ts): when even vcdiff's delta
 * is sure to be big, approx will run anyway and usually wins, so building vcdiff's source index first
 * would only buy a loser.
 */
import { encodeVcdiff } from '../vcdiff/index.ts'
import type { EditedEntry } from './reference.ts'

/** Target bytes per sampled slice. */
const SLICE = 8 * 1024
/**
 * Source bytes searched on each side of a slice's proportional position in its old version: enough
 * for the insertions and deletions of a release to leave the old bytes in view.
 */
const SOURCE_MARGIN = 16 * 1024
/** The sample covers 1/32 of the edited bytes, at least 64 KiB and at most 256 KiB of them. */
const SAMPLE_FRACTION = 1 / 32
const SAMPLE_MIN = 64 * 1024
const SAMPLE_MAX = 256 * 1024

export interface VcdiffEstimate {
  /** Forecast of the vcdiff inner delta's bytes before it is deflated. */
  bytes: number
  /** Edited (and new) target bytes the forecast extrapolates from. */
  editedBytes: number
  sampledBytes: number
}

/**
 * Encodes evenly spaced 8 KiB slices of the edited entries against the stretch of their old version
 * around the same relative position, and scales what the slices cost beyond a plain copy of
 * themselves up to all edited bytes. New entries are slices with no old version: they cost their
 * bytes. Overestimates content that moved far within a file or between files (those slices cannot see
 * it), which only makes approx, the differ that handles moves better, run first more often.
 */
export function estimateVcdiffBytes(
  reference: Uint8Array,
  target: Uint8Array,
  edits: readonly EditedEntry[],
): VcdiffEstimate {
  const spans = edits.filter(
    (e) =>
      e.length > 0 && e.target + e.length <= target.length && e.source + e.sourceLength <= reference.length,
  )
  const editedBytes = spans.reduce((n, e) => n + e.length, 0)
  if (editedBytes === 0) return { bytes: 0, editedBytes, sampledBytes: 0 }
  const budget = Math.min(
    editedBytes,
    Math.max(SAMPLE_MIN, Math.min(SAMPLE_MAX, editedBytes * SAMPLE_FRACTION)),
  )
  const slices = Math.max(1, Math.round(budget / SLICE))
  const stride = editedBytes / slices
  const floors = new Map<number, number>()
  let cost = 0
  let sampledBytes = 0
  let span = 0
  let spanStart = 0 // offset of spans[span] in the concatenation of all spans
  for (let i = 0; i < slices; i++) {
    const at = Math.floor((i + 0.5) * stride)
    while (spanStart + spans[span]!.length <= at) spanStart += spans[span++]!.length
    const e = spans[span]!
    const length = Math.min(SLICE, e.length)
    const local = Math.min(Math.max(0, at - spanStart - (length >>> 1)), e.length - length)
    const slice = target.subarray(e.target + local, e.target + local + length)
    sampledBytes += length
    if (e.sourceLength === 0) {
      cost += length
      continue
    }
    const mid = Math.floor((local / e.length) * e.sourceLength)
    const from = Math.max(0, mid - SOURCE_MARGIN)
    const to = Math.min(e.sourceLength, mid + length + SOURCE_MARGIN)
    const old = reference.subarray(e.source + from, e.source + to)
    const encoded = encodeVcdiff(old, slice, { checksum: false }).length
    cost += Math.max(0, encoded - copyCost(slice, floors))
  }
  return { bytes: Math.round((cost * editedBytes) / sampledBytes), editedBytes, sampledBytes }
}

/**
 * What a slice costs when it is all one copy: headers and the copy itself, which a slice pays however
 * little changed and the whole-file delta does not. It depends only on the slice's length.
 */
function copyCost(slice: Uint8Array, known: Map<number, number>): number {
  let cost = known.get(slice.length)
  if (cost === undefined) {
    cost = encodeVcdiff(slice, slice, { checksum: false }).length
    known.set(slice.length, cost)
  }
  return cost
}
