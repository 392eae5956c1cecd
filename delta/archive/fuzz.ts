/**
 * Hostile-input fuzzing for the archive-delta decoder: valid deltas are mutated (random bytes, and
 * structured edits of decoded fields re-encoded so they get past the magic and into deeper checks),
 * then applied. The only acceptable outcomes are the exact target or a DeltaFormatError.
 */
import { gzipSync as fflateGzip } from 'fflate'
import { deflateRaw, gzip } from 'pako'
import { DeltaFormatError } from '../errors.ts'
import { sourceLikeText } from '../fuzz-input.ts'
import { collectingSink } from '../io.ts'
import { applyArchiveDelta, applyArchiveDeltaToSink } from './apply.ts'
import { ByteWriter, concatBytes } from './bytes.ts'
import { CHECKPOINT_MIN_RAW } from './checkpoints.ts'
import {
  type Container,
  decodeContainer,
  encodeContainer,
  MAX_PUFFED_PER_COMPRESSED_BYTE,
} from './container.ts'
import { crc32 } from './crc32.ts'
import { createArchiveDelta } from './create.ts'
import type { DeflateEngine } from './deflate-engine.ts'
import { detectArchive } from './detect.ts'
import { approxDiffer } from './differs.ts'
import { expand, inflateAll } from './expand.ts'
import { type ArchiveLimits, resolveArchiveLimits } from './limits.ts'

export interface FuzzReport {
  /**
   * Valid (source, target, delta) triples the mutations start from (seedCases): spliced gzip (zlib's
   * blocks and recorded ones), recompressed gzip, multi-member gzip, reblocked gzip, puffed gzip, zip
   * (one with a spliced entry and a known copy), gzip whose target has an empty stored stream (a token
   * segment), gzip with an inner DPAX delta, and with an engine big and checkpointed streams.
   */
  seeds: number
  iterations: number
  rejected: number
  /** Mutations that still produced the exact target (e.g. a flip in an unused bit). */
  accepted: number
  failures: string[]
}

/**
 * Tables charged against the expanded limit as the agent charges them (client-agent/codec/archive-budget.ts,
 * its measured heap per kind at 6 bytes per expanded byte, as of 2026-11-26), and the delta's own bytes.
 */
const LIMITS: Required<ArchiveLimits> = resolveArchiveLimits({
  maxTargetBytes: 1 << 20,
  maxExpandedBytes: 4 << 20,
  tableEntryCharges: {
    parameterSet: 12,
    literal: 10,
    tokens: 11,
    deflate: 14,
    reblocked: 14,
    spliced: 20,
    list: 32,
    checkpoint: 10,
    boxedCheckpoint: 12,
    block: 12,
    blockHeader: 24,
    run: 14,
    range: 10,
  },
  deltaBytesPerExpandedByte: 6,
})

function rng(seed: number): () => number {
  let s = seed >>> 0
  return () => {
    s = (s + 0x6d2b79f5) >>> 0
    let t = s
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32
  }
}

function text(seed: number, size: number): Uint8Array {
  const r = rng(seed)
  const words = ['alpha', 'beta', 'gamma', 'delta', '\n', 'return', 'x', '42']
  const parts: string[] = []
  let n = 0
  while (n < size) {
    const w = `${words[Math.floor(r() * words.length)]!} `
    parts.push(w)
    n += w.length
  }
  return new TextEncoder().encode(parts.join(''))
}

export interface Case {
  source: Uint8Array
  target: Uint8Array
  delta: Uint8Array
}

/** A container of nothing (for a 10-byte gzip source), for tests to build tables on. */
export const EMPTY_CONTAINER: Container = {
  sourceKind: 'gzip',
  differId: 'vcdiff',
  sourceLength: 10,
  sourceCrc: 0,
  targetLength: 0,
  targetCrc: 0,
  expandedLength: 0,
  sourcePuffed: false,
  segments: [],
  recipe: [],
  inner: new Uint8Array(0),
  innerDeflated: false,
  innerLength: 0,
}

/** A minimal zip (deflate and stored entries) so the zip paths get seeds without node: tooling. */
export function zipOf(files: [string, Uint8Array, boolean][]): Uint8Array {
  const body = new ByteWriter()
  const dir = new ByteWriter()
  const u16 = (w: ByteWriter, v: number) => {
    w.u8(v & 0xff)
    w.u8(v >>> 8)
  }
  for (const [name, data, deflated] of files) {
    const nameBytes = new TextEncoder().encode(name)
    const stored = deflated ? deflateRaw(data, { level: 6 }) : data
    const offset = body.length
    const common = (w: ByteWriter) => {
      u16(w, 20)
      u16(w, 0)
      u16(w, deflated ? 8 : 0)
      w.u32(0)
      w.u32(crc32(data))
      w.u32(stored.length)
      w.u32(data.length)
      u16(w, nameBytes.length)
      u16(w, 0)
    }
    body.u32(0x04034b50)
    common(body)
    body.bytes(nameBytes)
    body.bytes(stored)
    dir.u32(0x02014b50)
    u16(dir, 20)
    common(dir)
    for (let i = 0; i < 3; i++) u16(dir, 0)
    dir.u32(0)
    dir.u32(offset)
    dir.bytes(nameBytes)
  }
  const end = new ByteWriter()
  end.u32(0x06054b50)
  end.u32(0)
  u16(end, files.length)
  u16(end, files.length)
  end.u32(dir.length)
  end.u32(body.length)
  u16(end, 0)
  return concatBytes([body.finish(), dir.finish(), end.finish()])
}

/**
 * The seed deltas. Every segment kind (literal, deflate, tokens, reblocked, spliced in zlib's blocks and
 * in the stream's own), zip and gzip, and both inner differs. With `engine`, one more stream big enough
 * (ENGINE_MIN_INPUT) for the engine, not pako, to rebuild it; and, when the engine can restart deflate,
 * a stream big enough (checkpointsPay) to carry proved checkpoints, which only such an engine finds.
 */
/** A gzip pair of text with 300 bytes inserted, as a delta made whole-stream with `engine` (none if it declines). */
function engineCase(
  engine: DeflateEngine,
  pair: { seed: number; length: number; editAt: number; editSeed: number; level: 6 | 9 },
): Case[] {
  const big = sourceLikeText(pair.seed, pair.length)
  const edited = new Uint8Array([
    ...big.subarray(0, pair.editAt),
    ...text(pair.editSeed, 300),
    ...big.subarray(pair.editAt),
  ])
  const source = gzip(big, { level: pair.level })
  const target = gzip(edited, { level: pair.level })
  const made = createArchiveDelta(source, target, { limits: LIMITS, splice: 'never', deflateEngine: engine })
  return 'delta' in made ? [{ source, target, delta: made.delta }] : []
}

export function seedCases(engine?: DeflateEngine): Case[] {
  const a = text(1, 20_000)
  const b = new Uint8Array([...a.subarray(0, 9000), ...text(2, 500), ...a.subarray(9000)])
  const code = sourceLikeText(5, 120_000)
  const codeEdited = new Uint8Array([...code.subarray(0, 15_000), ...text(2, 300), ...code.subarray(15_000)])
  const unchanged = sourceLikeText(7, 3000)
  // Spliced whatever the payoff where asked (these pairs are too small for it to pay); else 'auto'.
  const pairs: [Uint8Array, Uint8Array, 'always' | 'auto'][] = [
    // Mostly shared tokens: a spliced segment in zlib's blocks.
    [gzip(code, { level: 9 }), gzip(codeEdited, { level: 9 }), 'always'],
    // Nothing shared: a deflate segment, recompressed whole.
    [gzip(text(4, 20_000), { level: 9 }), gzip(b, { level: 9 }), 'auto'],
    [
      gzip(a, { level: 6 }),
      new Uint8Array([...gzip(b.subarray(0, 5000)), ...gzip(b.subarray(5000))]),
      'auto',
    ],
    // Fixed-Huffman streams are outside the recompression grid: zlib's tokens re-blocked.
    [gzip(a, { level: 9, strategy: 4 }), gzip(b, { level: 9, strategy: 4 }), 'auto'],
    // The same spliced: a spliced segment in the stream's own (recorded) blocks.
    [gzip(code, { level: 9, strategy: 4 }), gzip(codeEdited, { level: 9, strategy: 4 }), 'always'],
    // fflate has a parse of its own: token segments, puffed source.
    [fflateGzip(a, { level: 9, mtime: 0 }), fflateGzip(b, { level: 9, mtime: 0 }), 'auto'],
    [
      zipOf([
        ['a.txt', a, true],
        ['s.bin', text(3, 300), false],
      ]),
      zipOf([
        ['s.bin', text(3, 300), false],
        ['b.txt', b, true],
      ]),
      'auto',
    ],
    // An empty stored stream (fflate's level 0) first: a token segment of an empty stream, 5 bytes.
    [
      gzip(a, { level: 6 }),
      new Uint8Array([...fflateGzip(new Uint8Array(0), { level: 0, mtime: 0 }), ...gzip(b, { level: 6 })]),
      'auto',
    ],
    // A zip whose unchanged deflated entry reaches the differ as a known copy, next to a spliced entry.
    [
      zipOf([
        ['code.js', code, true],
        ['same.js', unchanged, true],
      ]),
      zipOf([
        ['same.js', unchanged, true],
        ['code.js', codeEdited, true],
      ]),
      'always',
    ],
  ]
  const out: Case[] = []
  for (const [source, target, splice] of pairs) {
    const r = createArchiveDelta(source, target, { limits: LIMITS, splice })
    if ('delta' in r) out.push({ source, target, delta: r.delta })
  }
  // The inner differ is VCDIFF above (smallest for these pairs); DPAX's decoder runs inside DPAR too.
  const [source, target] = pairs[1]!
  const r = createArchiveDelta(source, target, { limits: LIMITS, differs: [approxDiffer] })
  if ('delta' in r) out.push({ source, target, delta: r.delta })
  // Whole-stream rebuilds through the engine (the agent's path), and level 9 from CHECKPOINT_MIN_RAW
  // (2 MiB) of content on: the smallest stream that gets checkpoints, when the engine can restart.
  if (engine)
    out.push(...engineCase(engine, { seed: 21, length: 200_000, editAt: 50_000, editSeed: 6, level: 6 }))
  if (engine?.deflateResumedSync) {
    const length = CHECKPOINT_MIN_RAW + 100_000
    out.push(...engineCase(engine, { seed: 22, length, editAt: 900_000, editSeed: 7, level: 9 }))
  }
  return out
}

function mutateBytes(delta: Uint8Array, r: () => number): Uint8Array {
  const d = delta.slice()
  const pick = () => Math.floor(r() * d.length)
  switch (Math.floor(r() * 5)) {
    case 0:
      d[pick()]! ^= 1 << Math.floor(r() * 8)
      return d
    case 1:
      for (let i = 0; i < 1 + r() * 8; i++) d[pick()] = Math.floor(r() * 256)
      return d
    case 2:
      return d.subarray(0, pick())
    case 3: {
      const at = pick()
      return new Uint8Array([...d.subarray(0, at), Math.floor(r() * 256), ...d.subarray(at)])
    }
    default: {
      const at = pick()
      return new Uint8Array([...d.subarray(0, at), ...d.subarray(at + 1 + Math.floor(r() * 16))])
    }
  }
}

/** Edits one decoded field so the container stays well-formed and the deeper checks are exercised. */
function mutateFields(delta: Uint8Array, r: () => number): Uint8Array {
  const c = decodeContainer(delta, LIMITS)
  // Small, plausible, or the sizes that provoke huge allocations (2^31, 2^32 - 1, 2^40): those must be
  // refused against the limits before anything is allocated.
  const big = () => {
    const pick = r()
    if (pick < 0.45) return Math.floor(r() * 64)
    if (pick < 0.9) return Math.floor(r() * 2 ** 24)
    return [2 ** 31, 2 ** 32 - 1, 2 ** 40][Math.floor(r() * 3)]!
  }
  // Mostly a stream's segment: most field edits below leave a literal segment as it was.
  const streams = c.segments.filter((s) => s.kind !== 'literal')
  const pool = streams.length > 0 && r() < 0.8 ? streams : c.segments
  const seg = pool[Math.floor(r() * pool.length)]
  const range = c.recipe[Math.floor(r() * c.recipe.length)]
  switch (Math.floor(r() * 13)) {
    case 12: {
      // A token segment's puffed length at, just past or far past what its stream can puff to
      // (MAX_PUFFED_PER_COMPRESSED_BYTE), the expanded length moved with it so the sums still hold:
      // only the ratio is a lie, refused when the container is decoded.
      const tokens = c.segments.find((s) => s.kind === 'tokens')
      if (tokens?.kind !== 'tokens') break
      const most = tokens.compressedLength * MAX_PUFFED_PER_COMPRESSED_BYTE
      const puffLength = most + [0, 1, Math.floor(r() * 2 ** 24)][Math.floor(r() * 3)]!
      c.expandedLength += puffLength - tokens.puffLength
      tokens.puffLength = puffLength
      break
    }
    case 10:
      // A stream's length at or just under the shortest it can be (2 bytes, 3 with content), the target's
      // length moved with it so the sums still hold: only the segment's length is a lie.
      if (seg && seg.kind !== 'literal') {
        const compressedLength = Math.floor(r() * 4)
        c.targetLength += compressedLength - seg.compressedLength
        seg.compressedLength = compressedLength
      }
      break
    case 11: {
      // The same reference in more entries: a range cut into one-byte ranges, a few (the same target) or
      // up to the table cap and past what the tables may cost of the expanded limit (archive-limit).
      if (!range || range.length < 2) break
      const at = c.recipe.indexOf(range)
      const n = Math.min(range.length - 1, 1 + Math.floor(r() * (r() < 0.5 ? 64 : 300_000)))
      const ones = Array.from({ length: n }, (_, i) => ({ offset: range.offset + i, length: 1 }))
      const rest = { offset: range.offset + n, length: range.length - n }
      c.recipe = [...c.recipe.slice(0, at), ...ones, rest, ...c.recipe.slice(at + 1)]
      break
    }
    case 8:
    case 9: {
      // Restart points (only a DeflateEngine with restarts uses them, piecewise): in range, for the
      // container's checks to pass, and wrong, for the rebuild's.
      if (seg?.kind !== 'deflate') break
      const points = []
      let raw = 0
      let bit = 0
      for (let n = 1 + Math.floor(r() * 4); n > 0; n--) {
        raw += 1 + Math.floor(r() * (seg.rawLength / 4))
        bit += 1 + Math.floor(r() * ((seg.compressedLength * 8) / 4))
        points.push({ raw, bit })
      }
      seg.checkpoints = points
      break
    }
    case 0:
      if (seg?.kind === 'deflate') seg.params = { ...seg.params, level: 1 + Math.floor(r() * 9) }
      else if (seg?.kind === 'reblocked') {
        // A block list that no longer fits the tokens: moved boundary, lost block, wrong type or end.
        const blocks = seg.blocks.map((b) => ({ ...b }))
        const b = blocks[Math.floor(r() * blocks.length)]!
        const what = Math.floor(r() * 4)
        if (what === 0) b.end = Math.max(0, b.end + Math.floor(r() * 7) - 3)
        else if (what === 1 && blocks.length > 1) blocks.splice(blocks.indexOf(b), 1)
        else if (what === 2) b.type = b.type === 2 ? 1 : 2
        else b.final = !b.final
        seg.blocks = blocks
      } else if (seg?.kind === 'spliced') {
        // A plan that no longer fits: runs moved, resized, dropped or added; zlib's blocks or none.
        const run = seg.runs[Math.floor(r() * seg.runs.length)]
        const what = Math.floor(r() * 5)
        if (run && what === 0) run.gap = big()
        else if (run && what === 1) run.source = big()
        else if (run && what === 2) run.count = big()
        else if (what === 3) seg.runs.push({ gap: big(), source: big(), count: 1 + big() })
        else seg.blocks = seg.blocks === 'zlib' ? [{ type: 2, final: true, end: big() }] : 'zlib'
      }
      break
    case 1:
      if (seg && seg.kind !== 'literal') seg.compressedLength = 1 + big()
      else c.sourcePuffed = !c.sourcePuffed
      break
    case 2:
      if (seg?.kind === 'literal') seg.length = 1 + big()
      else if (seg?.kind === 'tokens') seg.puffLength = 1 + big()
      else if (seg) seg.rawLength = big()
      break
    case 3:
      if (range) range.offset = big()
      break
    case 4:
      if (range) range.length = big()
      break
    case 5:
      c.expandedLength = big()
      break
    case 6:
      c.differId = r() < 0.5 ? 'approx' : 'vcdiff'
      break
    default:
      c.innerLength = big()
  }
  return encodeContainer(c)
}

/** Parsers see archives at create time; damaged ones must be rejected with typed errors too. */
function fuzzParsers(c: Case, r: () => number, report: FuzzReport): void {
  const archive = mutateBytes(r() < 0.5 ? c.source : c.target, r)
  const kind = detectArchive(archive)
  if (!kind) return
  try {
    expand(kind, archive, inflateAll, LIMITS.maxExpandedBytes)
  } catch (err) {
    if (!(err instanceof DeltaFormatError)) report.failures.push(`parser (${kind}): ${String(err)}`)
  }
}

/**
 * Applies each mutation in memory or streaming (they fail through different code paths). With `engine`
 * (the agent's native one, from scripts/fuzz.ts), half the applies rebuild with it: its inflate for
 * the inner DPAX streams, its deflate, and its piecewise restarts at checkpoints.
 */
export async function fuzzArchive(
  seconds: number,
  seed = 0x5eed,
  engine?: DeflateEngine,
): Promise<FuzzReport> {
  const all = seedCases(engine)
  const report: FuzzReport = { seeds: all.length, iterations: 0, rejected: 0, accepted: 0, failures: [] }
  if (all.length === 0) return { ...report, failures: ['could not build seed deltas'] }
  const r = rng(seed)
  const deadline = Date.now() + seconds * 1000
  while (Date.now() < deadline) {
    const base = all[report.iterations % all.length]!
    report.iterations++
    if (r() < 0.2) {
      fuzzParsers(base, r, report)
      continue
    }
    let delta: Uint8Array
    try {
      delta = r() < 0.6 ? mutateBytes(base.delta, r) : mutateFields(base.delta, r)
    } catch {
      continue // a field mutation that the encoder itself refuses is not a decoder test
    }
    try {
      let out: Uint8Array
      const using = engine && r() < 0.5 ? engine : undefined
      // Chosen at random: by iteration parity, an even number of seeds would give each seed one mode only.
      if (r() < 0.5) out = applyArchiveDelta(base.source, delta, LIMITS, undefined, using)
      else {
        const sink = collectingSink()
        await applyArchiveDeltaToSink(base.source, delta, sink, LIMITS, undefined, using)
        out = sink.bytes()
      }
      if (out.length === base.target.length && out.every((b, i) => b === base.target[i])) report.accepted++
      else report.failures.push(`wrong output accepted (iteration ${report.iterations})`)
    } catch (err) {
      if (err instanceof DeltaFormatError) report.rejected++
      else report.failures.push(`iteration ${report.iterations}: ${String(err)}`)
    }
  }
  return report
}
