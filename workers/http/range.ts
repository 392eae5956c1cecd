/**
 * Single byte-range requests (RFC 9110 §14). We serve exactly one range per request: many CDNs
 * mangle multipart/byteranges, and our clients never need it.
 */
export type RangeRequest =
  | { kind: 'none' }
  | { kind: 'satisfiable'; offset: number; length: number }
  | { kind: 'unsatisfiable' }

// The unit is case-insensitive (RFC 9110 §14.1). Positions may have any number of digits: beyond
// 2^53 they lose precision as numbers but not order, and only their order against the size matters
// (a start past it is unsatisfiable, an end or suffix past it selects up to the end).
const SPEC = /^bytes=(\d*)-(\d*)$/i

/**
 * Interprets a Range header against an object of `size` bytes. Syntactically invalid values and
 * multi-range requests are ignored (full 200), as RFC 9110 allows; well-formed ranges that select
 * nothing (start past the end, `bytes=-0`) are unsatisfiable (416). A suffix range of an empty object
 * is satisfiable (RFC 9110 §14.1.1: the last N bytes of it are all of it), but no 206 can name a byte
 * of it, so it is answered whole: an empty 200.
 */
export function parseRange(header: string | undefined, size: number): RangeRequest {
  if (header === undefined) return { kind: 'none' }
  const match = SPEC.exec(header.trim())
  if (!match) return { kind: 'none' }
  const [, startText = '', endText = ''] = match
  if (startText === '' && endText === '') return { kind: 'none' }
  if (startText === '') {
    const suffix = Number(endText)
    if (suffix === 0) return { kind: 'unsatisfiable' }
    if (size === 0) return { kind: 'none' }
    const length = Math.min(suffix, size)
    return { kind: 'satisfiable', offset: size - length, length }
  }
  const start = Number(startText)
  if (start >= size) return { kind: 'unsatisfiable' }
  if (endText === '') return { kind: 'satisfiable', offset: start, length: size - start }
  const end = Number(endText)
  if (end < start) return { kind: 'none' }
  return { kind: 'satisfiable', offset: start, length: Math.min(end, size - 1) - start + 1 }
}

/** Does an If-None-Match / If-Range entity-tag list name `etag`? Weak comparison for If-None-Match. */
export function etagListMatches(header: string, etag: string): boolean {
  if (header.trim() === '*') return true
  const bare = etag.replace(/^W\//, '')
  return header.split(',').some((candidate) => candidate.trim().replace(/^W\//, '') === bare)
}

/**
 * Does an If-Match entity-tag list name `etag`? Strong comparison (RFC 9110 §13.1.1): a weak tag never
 * matches, `*` matches any stored representation.
 */
export function ifMatchHolds(header: string, etag: string): boolean {
  if (header.trim() === '*') return true
  if (etag.startsWith('W/')) return false
  return header.split(',').some((candidate) => candidate.trim() === etag)
}
