import { DeltaFormatError } from '../errors.ts'
import { randomBytes, randomKnownCopies, rng } from '../fuzz-input.ts'
import { collectingSink, readerFromBytes, sourceFromBytes } from '../io.ts'
import { DEFAULT_TABLE_STRING } from './code-table.ts'
import { decodeVcdiff, decodeVcdiffStream } from './decode.ts'
import { encodeVcdiff } from './encode.ts'
import type { VcdiffLimits } from './limits.ts'
import { ByteWriter } from './varint.ts'

export { rng } from '../fuzz-input.ts'

/** A target derived from `source` by a few inserts, deletes, moves and runs. */
export function editedCopy(r: () => number, source: Uint8Array, edits: number): Uint8Array {
  let t = source
  for (let e = 0; e < edits; e++) {
    const at = Math.floor(r() * (t.length + 1))
    const kind = r()
    let piece: Uint8Array
    if (kind < 0.3) piece = randomBytes(r, 1 + Math.floor(r() * 40))
    else if (kind < 0.5) piece = new Uint8Array(4 + Math.floor(r() * 300)).fill((r() * 256) | 0)
    else if (kind < 0.75) {
      const from = Math.floor(r() * t.length)
      piece = t.slice(from, from + Math.floor(r() * 200))
    } else {
      const rest = t.subarray(Math.min(t.length, at + Math.floor(r() * 100)))
      const next = new Uint8Array(at + rest.length)
      next.set(t.subarray(0, at))
      next.set(rest, at)
      t = next
      continue
    }
    const next = new Uint8Array(t.length + piece.length)
    next.set(t.subarray(0, at))
    next.set(piece, at)
    next.set(t.subarray(at), at + piece.length)
    t = next
  }
  return t
}

function mutate(r: () => number, delta: Uint8Array): Uint8Array {
  const d = delta.slice()
  const kind = r()
  if (kind < 0.15) return d.subarray(0, Math.floor(r() * d.length))
  if (kind < 0.3) {
    // Large varints in length fields are the classic way to provoke huge allocations.
    const at = Math.floor(r() * d.length)
    const big = [0x8f, 0xff, 0xff, 0xff, 0x7f]
    const out = new Uint8Array(d.length + big.length)
    out.set(d.subarray(0, at))
    out.set(big, at)
    out.set(d.subarray(at), at + big.length)
    return out
  }
  const flips = 1 + Math.floor(r() * 4)
  for (let i = 0; i < flips && d.length > 0; i++) {
    const at = Math.floor(r() * d.length)
    d[at] = r() < 0.5 ? d[at]! ^ (1 << Math.floor(r() * 8)) : (r() * 256) | 0
  }
  return d
}

/**
 * Re-wraps a delta's windows behind a VCD_CODETABLE header carrying a randomly perturbed code
 * table (and cache sizes), so the custom-table path sees hostile tables too.
 */
function withCustomTable(r: () => number, delta: Uint8Array): Uint8Array {
  const table = DEFAULT_TABLE_STRING.slice()
  const flips = Math.floor(r() * 4)
  for (let i = 0; i < flips; i++) table[Math.floor(r() * table.length)] = (r() * 12) | 0
  const inner = encodeVcdiff(DEFAULT_TABLE_STRING, table, { checksum: r() < 0.5 })
  const near = r() < 0.8 ? 4 : (r() * 6) | 0
  const same = r() < 0.8 ? 3 : (r() * 6) | 0
  const out = new ByteWriter()
  for (const b of [0xd6, 0xc3, 0xc4, 0x00, 0x02]) out.byte(b)
  out.varint(inner.length + 2)
  out.byte(near)
  out.byte(same)
  out.bytes(inner)
  out.bytes(delta, 5) // our encoder's header is exactly 5 bytes
  return out.view().slice()
}

export interface FuzzReport {
  iterations: number
  decoded: number
  rejected: number
}

const LIMITS: VcdiffLimits = { maxWindowSize: 1 << 20, maxTargetSize: 4 << 20 }

function equal(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

/**
 * Feeds mutated valid deltas and random bytes to both decoders for `seconds`. The only acceptable
 * outcomes are a DeltaFormatError or output (exactly the target when the delta was unchanged);
 * anything else is rethrown with the seed that reproduces it.
 */
export async function fuzzVcdiff(seconds: number, seed = Date.now()): Promise<FuzzReport> {
  const report: FuzzReport = { iterations: 0, decoded: 0, rejected: 0 }
  const deadline = Date.now() + seconds * 1000
  while (Date.now() < deadline) {
    const iterSeed = (seed + report.iterations * 0x632be5ab) | 0
    const r = rng(iterSeed)
    const source = randomBytes(r, Math.floor(r() * 3000))
    const target = editedCopy(r, source, Math.floor(r() * 8))
    const windowSize = r() < 0.3 ? 64 + Math.floor(r() * 1000) : undefined
    // Known-copy hints, right and wrong: the encoder must check them, the decoder sees their copies.
    const hints = r() < 0.2 ? { knownCopies: randomKnownCopies(r, source.length, target.length) } : {}
    let valid = encodeVcdiff(source, target, { windowSize, checksum: r() < 0.7, ...hints })
    const customTable = r() < 0.1
    if (customTable) valid = withCustomTable(r, valid)
    const mode = r()
    let delta: Uint8Array
    if (mode < 0.1) delta = valid
    else if (mode < 0.2) {
      delta = randomBytes(r, Math.floor(r() * 200))
      if (r() < 0.7) delta.set([0xd6, 0xc3, 0xc4, 0, (r() * 8) | 0].slice(0, delta.length))
    } else delta = mutate(r, valid)
    const streaming = r() < 0.3
    try {
      let out: Uint8Array
      if (streaming) {
        const sink = collectingSink()
        const chunk = 1 + Math.floor(r() * 64)
        await decodeVcdiffStream(readerFromBytes(source), sourceFromBytes(delta, chunk), sink, LIMITS)
        out = sink.bytes()
      } else {
        out = decodeVcdiff(source, delta, LIMITS)
      }
      // A perturbed custom table legitimately changes what the windows mean.
      if (delta === valid && !customTable && !equal(out, target)) {
        throw new Error(`fuzzVcdiff: valid delta decoded wrongly (seed ${iterSeed})`)
      }
      report.decoded++
    } catch (e) {
      if (!(e instanceof DeltaFormatError)) {
        const msg = e instanceof Error ? e.message : String(e)
        throw new Error(`fuzzVcdiff: non-DeltaFormatError (seed ${iterSeed}, streaming ${streaming}): ${msg}`)
      }
      report.rejected++
    }
    report.iterations++
  }
  return report
}
