/**
 * bsdiff-style approximate matching. Executables change by shifted addresses sprinkled everywhere, so an
 * exact match is cut short every few dozen bytes; instead we look for regions where the target lines up
 * with the source at a fixed offset *most of the time*, and ship the bytewise difference (mostly zeros,
 * which compress to nearly nothing) plus literal bytes for what aligns with nothing.
 *
 * The scan keeps the current alignment (`lastOffset`) and only adopts a new exact match when it beats
 * what the current alignment already explains by more than a few bytes; then it grows the previous
 * segment forwards and the new one backwards for as long as at least half the bytes agree.
 */
import type { KnownCopy, KnownCopyCursor } from '../known-copies.ts'
import type { ApproxIndex } from './approx-index.ts'
import { HASH_KEY_BYTES, longestMatchByHash } from './hash-index.ts'
import { longestMatch, type Match } from './source-index.ts'

/**
 * Flat list of segments, three numbers each: `copyLen` target bytes are source[srcPos..] + diff, then
 * `extraLen` literal bytes follow. Segments tile the target in order.
 */
export type Segments = number[]

/** A new alignment must explain this many more bytes than the current one to be worth a new segment. */
const SWITCH_MARGIN = 8

/**
 * `known`: copies to take as the match where their bytes agree (known-copies.ts), in place of a lookup.
 */
export function matchSegments(
  approxIndex: ApproxIndex,
  target: Uint8Array,
  switchMargin = SWITCH_MARGIN,
  known?: KnownCopyCursor,
): Segments {
  const source = approxIndex.index.source
  const sn = source.length
  const tn = target.length
  const segments: Segments = []
  const m: Match = { pos: 0, len: 0 }

  // Bytes [lastScan, scan) are not yet covered; lastPos is where the previous alignment continues.
  let lastScan = 0
  let lastPos = 0
  let lastOffset = 0
  let scan = 0
  let len = 0
  let pos = 0

  while (scan < tn) {
    // How many bytes of the window [scan, scan + len) the current alignment already gets right.
    let oldScore = 0
    scan += len
    let scored = scan
    for (; scan < tn; scan++) {
      const copy = known?.at(scan)
      if (copy && takeKnown(copy, source, target, scan, m)) {
        // Found without a lookup; scored like any match below.
      } else if (approxIndex.kind === 'hash') {
        // Two call sites, each of one shape, rather than one polymorphic call.
        longestMatchByHash(approxIndex.index, target, scan, scan + lastOffset, m)
      } else longestMatch(approxIndex.index, target, scan, m)
      len = m.len
      pos = m.pos
      for (; scored < scan + len; scored++) {
        const o = scored + lastOffset
        if (o >= 0 && o < sn && source[o] === target[scored]) oldScore++
      }
      // Either the match is just the current alignment continuing (skip over it), or it is clearly better.
      if ((len === oldScore && len !== 0) || len > oldScore + switchMargin) break
      const o = scan + lastOffset
      if (o >= 0 && o < sn && source[o] === target[scan]) oldScore--
    }
    if (len === oldScore && scan !== tn) continue

    // Grow the previous alignment forwards while at least half its bytes agree.
    let lenF = 0
    {
      let agree = 0
      let best = 0
      for (let i = 0; lastScan + i < scan && lastPos + i < sn; ) {
        if (source[lastPos + i] === target[lastScan + i]) agree++
        i++
        if (agree * 2 - i > best * 2 - lenF) {
          best = agree
          lenF = i
        }
      }
    }
    // Grow the new match backwards by the same rule.
    let lenB = 0
    if (scan < tn) {
      let agree = 0
      let best = 0
      for (let i = 1; scan >= lastScan + i && pos >= i; i++) {
        if (source[pos - i] === target[scan - i]) agree++
        if (agree * 2 - i > best * 2 - lenB) {
          best = agree
          lenB = i
        }
      }
    }
    // If the two grown regions overlap, split the overlap where the two alignments do best.
    if (lastScan + lenF > scan - lenB) {
      const overlap = lastScan + lenF - (scan - lenB)
      let score = 0
      let best = 0
      let keep = 0
      for (let i = 0; i < overlap; i++) {
        if (target[lastScan + lenF - overlap + i] === source[lastPos + lenF - overlap + i]) score++
        if (target[scan - lenB + i] === source[pos - lenB + i]) score--
        if (score > best) {
          best = score
          keep = i + 1
        }
      }
      lenF += keep - overlap
      lenB -= keep
    }

    const extraLen = scan - lenB - (lastScan + lenF)
    if (lenF + extraLen > 0) segments.push(lenF, extraLen, lastPos)
    lastScan = scan - lenB
    lastPos = pos - lenB
    lastOffset = pos - scan
  }
  return segments
}

/**
 * The known copy holding target[t] as the match there, when at least HASH_KEY_BYTES of its bytes agree
 * from t on; it ends where the bytes part. A wrong hint would still apply correctly (the diff stream
 * carries any difference) but would align badly, so it is checked like any candidate.
 */
function takeKnown(copy: KnownCopy, source: Uint8Array, target: Uint8Array, t: number, out: Match): boolean {
  const pos = copy.source + (t - copy.target)
  // Like any match it runs on past the copy's end while the bytes agree.
  const max = Math.min(target.length - t, source.length - pos)
  let len = 0
  while (len < max && source[pos + len] === target[t + len]) len++
  if (len < HASH_KEY_BYTES) return false
  out.len = len
  out.pos = pos
  return true
}
