/**
 * The reference stream: source content rearranged to line up with the target's entry order, so a
 * byte-level differ (even one with a bounded window) sees each target file next to its old version.
 * It is described as a list of ranges of the source's expanded form, which the client can replay.
 */
import type { RandomAccessReader } from '../io.ts'
import type { KnownCopy } from '../known-copies.ts'
import { lastAtOrBefore } from '../sorted.ts'
import type { EntryRange } from './expand.ts'

export interface Range {
  offset: number
  length: number
}

export interface RecipeStats {
  matchedByPath: number
  matchedByHash: number
  unmatched: number
}

/** Appends a range, merging it into the previous one when they are contiguous in the source. */
function push(ranges: Range[], offset: number, length: number): void {
  if (length <= 0) return
  const last = ranges.at(-1)
  if (last && last.offset + last.length === offset) last.length += length
  else ranges.push({ offset, length })
}

/**
 * Order: the source's leading bytes (gzip header), target-ordered matches (by path, else by content),
 * the source's trailing bytes (tar end blocks, zip central directory), then unused source entries so
 * content that moved in ways we did not detect is still available to the differ.
 */
export function buildRecipe(
  sourceLength: number,
  source: readonly EntryRange[],
  target: readonly EntryRange[],
  maxReference: number,
): { ranges: Range[]; stats: RecipeStats; lineUps: LineUp[]; edits: EditedEntry[] } {
  const stats: RecipeStats = { matchedByPath: 0, matchedByHash: 0, unmatched: 0 }
  const ranges: Range[] = []
  const lineUps: LineUp[] = []
  const edits: EditedEntry[] = []
  if (source.length === 0) {
    push(ranges, 0, sourceLength)
    stats.unmatched = target.length
    for (const t of target)
      edits.push({ target: t.start, length: t.end - t.start, source: 0, sourceLength: 0 })
    return { ranges, stats, lineUps, edits }
  }
  const byPath = new Map<string, EntryRange>()
  const byHash = new Map<string, EntryRange>()
  for (const e of source) {
    if (!byPath.has(e.path)) byPath.set(e.path, e)
    if (e.hash !== '' && !byHash.has(e.hash)) byHash.set(e.hash, e)
  }
  const first = source[0]!.start
  const last = source.at(-1)!.end
  push(ranges, 0, first)
  let total = first
  const used = new Set<EntryRange>()
  for (const t of target) {
    let match = byPath.get(t.path)
    if (match) stats.matchedByPath++
    else {
      match = t.hash === '' ? undefined : byHash.get(t.hash)
      if (match) stats.matchedByHash++
      else stats.unmatched++
    }
    // Repeats (many identical small files) could blow the reference up; cap it.
    if (!match || total + (match.end - match.start) > maxReference) {
      edits.push({ target: t.start, length: t.end - t.start, source: 0, sourceLength: 0 })
      continue
    }
    used.add(match)
    if (t.hash === match.hash && match.end - match.start === t.end - t.start) {
      lineUps.push({ target: t.start, source: total, length: t.end - t.start, header: t.dataStart - t.start })
    } else {
      edits.push({
        target: t.start,
        length: t.end - t.start,
        source: total,
        sourceLength: match.end - match.start,
      })
    }
    push(ranges, match.start, match.end - match.start)
    total += match.end - match.start
  }
  push(ranges, last, sourceLength - last)
  total += sourceLength - last
  for (const e of source) {
    if (used.has(e) || total + (e.end - e.start) > maxReference) continue
    push(ranges, e.start, e.end - e.start)
    total += e.end - e.start
  }
  return { ranges, stats, lineUps, edits }
}

/**
 * A target entry whose content is not a lined-up copy: an edited file (its old version at `source` in
 * the reference) or a new one (`sourceLength` 0). What the differs actually have to work on.
 */
export interface EditedEntry {
  /** Where the entry (headers included) starts in the expanded target, and its length. */
  target: number
  length: number
  /** Where its old version starts in the reference, and its length (0: a new entry). */
  source: number
  sourceLength: number
}

/** Shorter agreeing stretches of headers are left to the differ: a copy instruction costs about as much. */
const MIN_COPY = 16

/**
 * A target entry and the source entry placed for it in the reference, with the same content identity
 * (CRC-32 and size) and the same length: the content is taken to be unchanged, the headers may not be.
 */
export interface LineUp extends KnownCopy {
  /** Bytes of headers before the content, in both. */
  header: number
}

/**
 * The unchanged target entries as known copies from the reference (known-copies.ts): the content of
 * every lined-up entry, and the stretches of its headers that agree. Packers that stamp the build
 * time change every header (a tar's mtime and checksum; GNU tar's pax records too), and nothing else.
 * Only headers are compared here: equal content identities stand for equal content, and the differs
 * check every known copy's bytes before they use it. Copies next to each other in both are joined, so
 * a run of unchanged entries is a few long copies.
 */
export function unchangedEntries(
  reference: Uint8Array,
  target: Uint8Array,
  lineUps: readonly LineUp[],
): KnownCopy[] {
  const unchanged: KnownCopy[] = []
  const add = (t: number, r: number, length: number) => {
    const last = unchanged.at(-1)
    if (last && last.target + last.length === t && last.source + last.length === r) {
      unchanged[unchanged.length - 1] = { ...last, length: last.length + length }
    } else unchanged.push({ target: t, source: r, length })
  }
  for (const { target: t, source: r, length, header } of lineUps) {
    if (r + length > reference.length || t + length > target.length || header > length) continue
    // The agreeing stretches of the headers; the last one runs on into the content.
    let agreeFrom = 0
    for (let i = 0; i < header; i++) {
      if (reference[r + i] === target[t + i]) continue
      if (i - agreeFrom >= MIN_COPY) add(t + agreeFrom, r + agreeFrom, i - agreeFrom)
      agreeFrom = i + 1
    }
    if (length > agreeFrom) add(t + agreeFrom, r + agreeFrom, length - agreeFrom)
  }
  return unchanged
}

/** Materialises a recipe; ranges must already be validated against `source`. */
export function materialize(source: Uint8Array, ranges: readonly Range[]): Uint8Array {
  let total = 0
  for (const r of ranges) total += r.length
  const out = new Uint8Array(total)
  let at = 0
  for (const r of ranges) {
    out.set(source.subarray(r.offset, r.offset + r.length), at)
    at += r.length
  }
  return out
}

/**
 * The reference as a RandomAccessReader without copying it: reads are served from the expanded source
 * through the recipe, which keeps streaming apply from holding a second copy of the source.
 */
export function recipeReader(source: Uint8Array, ranges: readonly Range[]): RandomAccessReader {
  const starts: number[] = []
  let size = 0
  for (const r of ranges) {
    starts.push(size)
    size += r.length
  }
  const find = (pos: number): number => lastAtOrBefore(starts, pos)
  return {
    size,
    read: async (offset, length) => {
      let i = find(offset)
      const first = ranges[i]
      const within = offset - (starts[i] ?? 0)
      if (first && within + length <= first.length) {
        return source.subarray(first.offset + within, first.offset + within + length)
      }
      const out = new Uint8Array(length)
      let done = 0
      while (done < length && i < ranges.length) {
        const r = ranges[i]!
        const skip = offset + done - starts[i]!
        const n = Math.min(r.length - skip, length - done)
        out.set(source.subarray(r.offset + skip, r.offset + skip + n), done)
        done += n
        i++
      }
      return out
    },
  }
}
