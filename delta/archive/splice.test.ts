import { execFileSync } from 'node:child_process'
import { gzip } from 'pako'
import { describe, expect, it } from 'vitest'
import { parseDeflate } from '../deflate/parse.ts'
import { DeltaFormatError } from '../errors.ts'
import { sourceLikeText } from '../fuzz-input.ts'
import { collectingSink } from '../io.ts'
import { applyArchiveDelta, applyArchiveDeltaToSink } from './apply.ts'
import { decodeContainer, encodeContainer } from './container.ts'
import { createArchiveDelta } from './create.ts'
import { type DeflateEngine, pakoEngine } from './deflate-engine.ts'
import { expand, inflateAll, type Segment } from './expand.ts'
import { zipOf } from './fuzz.ts'
import { parseGzip } from './gzip.ts'
import { inflateRawPrefix } from './inflate.ts'
import { resolveArchiveLimits } from './limits.ts'
import { RebuildSink } from './rebuild-sink.ts'
import { contentBytes, splicedTokens, spliceReads, tokenBytes } from './splice.ts'
import { findSplice, SourceTokenIndex, spliceMayPay, spliceWorthIt } from './splice-plan.ts'

function rng(seed: number): () => number {
  let s = seed >>> 0
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0
    return s / 2 ** 32
  }
}

/** Source-code-like lines: a vocabulary large enough that deflate finds real, local matches. */
function lines(seed: number, count: number): string[] {
  const r = rng(seed)
  const words = Array.from({ length: 400 }, (_, i) => `id${(i * 7919) % 1000}${'xyzw'[i % 4]}`)
  const pick = () => words[Math.floor(r() * words.length)]!
  return Array.from(
    { length: count },
    (_, i) => `  const ${pick()} = ${pick()}(${pick()}, ${i % 97}); // ${pick()}\n`,
  )
}

const encoder = new TextEncoder()
const base = lines(1, 12_000)
/** A release with a handful of local edits: a changed line, an inserted block, a deleted block. */
function edited(): string[] {
  const out = [...base]
  out[2_000] = '  const changed = true\n'
  out.splice(6_000, 0, ...lines(2, 40))
  out.splice(9_000, 25)
  return out
}
const sourceContent = encoder.encode(base.join(''))
const targetContent = encoder.encode(edited().join(''))
const LIMITS = resolveArchiveLimits()
/** These streams are small enough that a fresh process recompresses them faster (spliceWorthIt). */
const ALWAYS = { splice: 'always' } as const

function splicedSegments(delta: Uint8Array): Extract<Segment, { kind: 'spliced' }>[] {
  return decodeContainer(delta, LIMITS).segments.filter((s) => s.kind === 'spliced')
}

async function applyBothWays(source: Uint8Array, delta: Uint8Array): Promise<Uint8Array[]> {
  const sink = collectingSink()
  await applyArchiveDeltaToSink(source, delta, sink)
  return [applyArchiveDelta(source, delta), sink.bytes()]
}

/** The source and target gzipped at level 6: the source expanded with its tokens, the target's stream parsed. */
function level6Streams() {
  const source = gzip(sourceContent, { level: 6 })
  const target = gzip(targetContent, { level: 6 })
  const src = expand('gzip', source, inflateAll, LIMITS.maxExpandedBytes, undefined, true)
  const member = parseGzip(target, LIMITS.maxExpandedBytes).members[0]!
  const compressed = target.subarray(member.dataStart, member.dataEnd)
  const parse = parseDeflate(compressed, member.content.length, 'test')
  return { src, member, compressed, parse }
}

describe('spliced archive deltas', () => {
  it('rebuild a lightly edited gzip from the source tokens, in memory and streaming', async () => {
    const source = gzip(sourceContent, { level: 9 })
    const target = gzip(targetContent, { level: 9 })
    const r = createArchiveDelta(source, target, ALWAYS)
    if (!('delta' in r)) throw new Error(r.notApplicable)
    expect(r.details.spliced).toBe(1)
    const [s] = splicedSegments(r.delta)
    expect(s?.blocks).toBe('zlib')
    // One run before the first edit and one after each, give or take a split run.
    expect(s?.runs.length).toBeGreaterThanOrEqual(3)
    for (const out of await applyBothWays(source, r.delta)) expect(out).toEqual(target)
  })

  it('copy exactly the target tokens: splicedTokens equals the stream parse', () => {
    const { src, member, compressed, parse } = level6Streams()
    const params = { level: 6, memLevel: 8, windowBits: 15, strategy: 0, legacyHash: false }
    const splice = findSplice(
      member.content,
      compressed,
      parse,
      new SourceTokenIndex(src.tokens!),
      [params],
      undefined,
      false,
    )
    expect(splice).not.toBeNull()
    expect(splicedTokens(member.content, splice!, src.tokens!)).toEqual(parse.tokens)
  })

  it('take the source index only when some setting reproduces the stream start', () => {
    const { src, member, compressed, parse } = level6Streams()
    const right = { level: 6, memLevel: 8, windowBits: 15, strategy: 0, legacyHash: false }
    let built = 0
    const index = () => {
      built++
      return new SourceTokenIndex(src.tokens!)
    }
    // Settings whose tokens part from the stream's at once: nothing to match, no index built.
    const wrong = [
      { ...right, level: 9 },
      { ...right, legacyHash: true },
    ]
    expect(findSplice(member.content, compressed, parse, index, wrong, undefined, false)).toBeNull()
    expect(built).toBe(0)
    // The same plan as with the index handed over built.
    const splice = findSplice(member.content, compressed, parse, index, [...wrong, right], undefined, false)
    expect(built).toBe(1)
    const eager = new SourceTokenIndex(src.tokens!)
    expect(splice).toEqual(findSplice(member.content, compressed, parse, eager, [right], undefined, false))
    expect(splice?.params).toEqual(right)
  })

  it('keep the recorded blocks of a stream zlib would have cut differently (fixed Huffman)', async () => {
    const source = gzip(sourceContent, { level: 9, strategy: 4 })
    const target = gzip(targetContent, { level: 9, strategy: 4 })
    const r = createArchiveDelta(source, target, ALWAYS)
    if (!('delta' in r)) throw new Error(r.notApplicable)
    const [s] = splicedSegments(r.delta)
    expect(Array.isArray(s?.blocks)).toBe(true)
    for (const out of await applyBothWays(source, r.delta)) expect(out).toEqual(target)
  })

  it('splice GNU gzip streams (zlib tokens with the classic hash)', async () => {
    let gnu: (content: Uint8Array) => Uint8Array
    try {
      execFileSync('gzip', ['--version'])
      gnu = (content) => new Uint8Array(execFileSync('gzip', ['-9nc'], { input: content }))
    } catch {
      return // no GNU gzip on this machine; .ci/run installs it
    }
    const source = gnu(sourceContent)
    const target = gnu(targetContent)
    const r = createArchiveDelta(source, target, ALWAYS)
    if (!('delta' in r)) throw new Error(r.notApplicable)
    expect(r.details.spliced).toBe(1)
    // Level 9 with the classic hash; GNU gzip's 32767-symbol buffer makes its blocks look like memLevel 9.
    expect(r.details.params).toEqual([expect.stringMatching(/^9\/[89]\/15\/0\/zlib$/)])
    for (const out of await applyBothWays(source, r.delta)) expect(out).toEqual(target)
  })

  it('splice zip entries from one shared source token sequence, unchanged ones without gaps', async () => {
    const other = encoder.encode(lines(3, 3_000).join(''))
    const source = zipOf([
      ['a.js', sourceContent, true],
      ['b.js', other, true],
    ])
    const target = zipOf([
      ['b.js', other, true],
      ['a.js', targetContent, true],
    ])
    const r = createArchiveDelta(source, target, ALWAYS)
    if (!('delta' in r)) throw new Error(r.notApplicable)
    expect(r.details.spliced).toBe(2)
    const [unchanged, edited] = splicedSegments(r.delta)
    // The unchanged entry is one run of the second source stream's tokens, nothing deflated.
    expect(unchanged?.runs).toEqual([{ gap: 0, source: expect.any(Number), count: expect.any(Number) }])
    expect(unchanged!.runs[0]!.source).toBeGreaterThan(0)
    expect(edited!.runs.length).toBeGreaterThanOrEqual(3)
    for (const out of await applyBothWays(source, r.delta)) expect(out).toEqual(target)
  })

  it('recompress as before when the source shares too little', async () => {
    const source = gzip(encoder.encode(lines(7, 12_000).join('')), { level: 9 })
    const target = gzip(targetContent, { level: 9 })
    const r = createArchiveDelta(source, target, ALWAYS)
    if (!('delta' in r)) throw new Error(r.notApplicable)
    expect(r.details.spliced).toBe(0)
    expect(r.details.reproduced).toBe(1)
    for (const out of await applyBothWays(source, r.delta)) expect(out).toEqual(target)
  })

  it('keep only the content their gaps read, whatever pieces the inner delta writes', async () => {
    const source = gzip(sourceContent, { level: 9 })
    const target = gzip(targetContent, { level: 9 })
    const r = createArchiveDelta(source, target, ALWAYS)
    if (!('delta' in r)) throw new Error(r.notApplicable)
    const c = decodeContainer(r.delta, LIMITS)
    const sourceTokens = expand('gzip', source, inflateAll, LIMITS.maxExpandedBytes, undefined, true).tokens!
    const expanded = expand('gzip', target, inflateAll, LIMITS.maxExpandedBytes).expanded
    const [s] = splicedSegments(r.delta)
    // Most of the stream is copied runs, whose content the rebuild never reads.
    const planned = spliceReads(s!.rawLength, s!, sourceTokens)
    const kept = planned.reads.reduce((n, x) => n + x.to - x.from, 0)
    expect(kept).toBeLessThan(s!.rawLength / 2)
    // The rebuild takes each run's content bytes from this walk instead of walking its tokens again.
    expect([...planned.runBytes]).toEqual(
      s!.runs.map((run) =>
        [...sourceTokens.subarray(run.source, run.source + run.count)].reduce((n, t) => n + tokenBytes(t), 0),
      ),
    )
    const pick = rng(7)
    for (const piece of [1, 4093, 65_536, 1 << 20, 0]) {
      const sink = collectingSink()
      const out = new RebuildSink(c.segments, sink, undefined, sourceTokens)
      for (let at = 0; at < expanded.length; ) {
        const n = piece > 0 ? piece : 1 + Math.floor(pick() * 50_000) // 0: random pieces
        await out.write(expanded.subarray(at, at + n))
        at += n
      }
      await out.finish()
      expect(sink.bytes()).toEqual(target)
    }
  })

  it('reject hostile plans with DeltaFormatError, never wrong bytes', async () => {
    const source = gzip(sourceContent, { level: 9 })
    const target = gzip(targetContent, { level: 9 })
    const r = createArchiveDelta(source, target, ALWAYS)
    if (!('delta' in r)) throw new Error(r.notApplicable)
    const edits: ((s: Extract<Segment, { kind: 'spliced' }>) => void)[] = [
      (s) => {
        s.runs[0]!.source = 1e9
      },
      (s) => {
        s.runs[0]!.count = 1
      },
      (s) => {
        s.runs[1]!.source += 1
      },
      (s) => {
        s.runs[0]!.gap += 1
      },
      (s) => {
        s.runs.push({ gap: 0, source: 0, count: 2000 })
      },
      (s) => {
        s.blocks = [{ type: 2, final: true, end: 5 }]
      },
    ]
    for (const edit of edits) {
      const c = decodeContainer(r.delta, LIMITS)
      const s = c.segments.find((x) => x.kind === 'spliced')!
      edit(s)
      const delta = encodeContainer(c)
      expect(() => applyArchiveDelta(source, delta)).toThrow(DeltaFormatError)
      await expect(applyArchiveDeltaToSink(source, delta, collectingSink())).rejects.toThrow(DeltaFormatError)
    }
  })
})

describe('taking the source apart at delta creation', () => {
  it('happens only once a target stream could splice: the source is inflated otherwise', () => {
    // Just over the size where splicing could pay without a native restart (spliceWorthIt).
    const content = sourceLikeText(5, 1_400_000)
    const edited = content.slice()
    edited.set(encoder.encode('/* edited */'), 700_000)
    const gzSource = gzip(content, { level: 9 })
    // The engine's inflate counts the source streams it is handed; taking a stream apart into tokens
    // (our parser) does not go through it.
    let sourceInflates = 0
    const counting: DeflateEngine = {
      ...pakoEngine,
      name: 'counting',
      inflateRaw(input, maxOutput) {
        if (input.buffer === gzSource.buffer) sourceInflates++
        return inflateRawPrefix(input, maxOutput, 'archive-stream')
      },
    }
    // Level 8 under a level-9 header (XFL 2): splicing may pay (spliceMayPay), but level 9's tokens
    // part from the stream's at its start, so no plan is looked for and the source's tokens are never
    // needed.
    const level8 = gzip(edited, { level: 8 })
    level8[8] = 2
    expect(spliceMayPay('gzip', level8, counting)).toBe(true)
    const ruledOut = createArchiveDelta(gzSource, level8, { deflateEngine: counting })
    if (!('delta' in ruledOut)) throw new Error(ruledOut.notApplicable)
    expect(ruledOut.details.spliced).toBe(0)
    expect(sourceInflates).toBe(1)
    // A level-9 target splices: the source is taken apart once, and never inflated.
    sourceInflates = 0
    const level9 = gzip(edited, { level: 9 })
    const spliced = createArchiveDelta(gzSource, level9, { deflateEngine: counting })
    if (!('delta' in spliced)) throw new Error(spliced.notApplicable)
    expect(spliced.details.spliced).toBe(1)
    expect(sourceInflates).toBe(0)
    expect(applyArchiveDelta(gzSource, ruledOut.delta)).toEqual(level8)
    expect(applyArchiveDelta(gzSource, spliced.delta)).toEqual(level9)
  })
})

describe('contentBytes', () => {
  it('sums tokenBytes over any 32-bit values, literals and back-references alike', () => {
    const edges = [
      0,
      1,
      255,
      256,
      257,
      65_535,
      65_536,
      (3 << 16) | 1,
      (258 << 16) | 32_768,
      2 ** 31,
      0x8002_0000,
      0xfffe_0000,
      2 ** 32 - 1,
    ]
    const pick = rng(11)
    const random = Array.from({ length: 5000 }, () =>
      pick() < 0.5
        ? Math.floor(pick() * 256)
        : ((3 + Math.floor(pick() * 256)) << 16) | (1 + Math.floor(pick() * 32_768)),
    )
    for (const values of [edges, random, []]) {
      const tokens = Uint32Array.from(values)
      expect(contentBytes(tokens)).toBe([...tokens].reduce((n, t) => n + tokenBytes(t), 0))
    }
    for (const t of edges) expect(contentBytes(Uint32Array.of(t))).toBe(tokenBytes(t))
  })
})

describe('whether splicing pays', () => {
  it("weighs the whole deflate by its level: npm's level 6 searches a third as long as level 9", () => {
    // In pako (60 ns a byte at level 9) a 3 MB stream is worth splicing; at level 6 it is not.
    expect(spliceWorthIt(3_000_000, 0, 1, false, 9)).toBe(true)
    expect(spliceWorthIt(3_000_000, 0, 1, false, 6)).toBe(false)
    // Natively (40 ns, on two cores with checkpoints) only bigger streams pay, and level 6 never here.
    expect(spliceWorthIt(3_000_000, 0, 1, true, 9)).toBe(false)
    expect(spliceWorthIt(10_000_000, 0, 1, true, 9)).toBe(true)
    expect(spliceWorthIt(10_000_000, 0, 1, true, 6)).toBe(false)
    // Gaps are deflated at the same level, so they cost what the stream would per byte.
    expect(spliceWorthIt(3_000_000, 1_500_000, 20, false, 9)).toBe(false)
  })

  it("is judged from the target's headers before the source is taken apart", async () => {
    const content = sourceLikeText(5, 2_000_000)
    expect(spliceMayPay('gzip', gzip(content, { level: 9 }))).toBe(true)
    expect(spliceMayPay('gzip', gzip(content, { level: 6 }))).toBe(false)
    expect(spliceMayPay('gzip', gzip(content.subarray(0, 500_000), { level: 9 }))).toBe(false)
    // ISIZE names the last member only: two members, the first big, cannot be ruled out.
    const small = gzip(content.subarray(0, 1000), { level: 9 })
    const big = gzip(content, { level: 9 })
    const twoMembers = new Uint8Array(big.length + small.length)
    twoMembers.set(big)
    twoMembers.set(small, big.length)
    expect(spliceMayPay('gzip', twoMembers)).toBe(true)
    // A zip directory gives sizes but not levels: a big deflated entry may pay, small ones do not.
    expect(spliceMayPay('zip', zipOf([['big.js', content, true]]))).toBe(true)
    expect(spliceMayPay('zip', zipOf([['a.js', content.subarray(0, 200_000), true]]))).toBe(false)
    // A level-6 release is recompressed whole under 'auto'; 'always' still splices it.
    const target = content.slice()
    target.set(encoder.encode('/* edited */'), 1_000_000)
    const [gzSource, gzTarget] = [gzip(content, { level: 6 }), gzip(target, { level: 6 })]
    const auto = createArchiveDelta(gzSource, gzTarget)
    const always = createArchiveDelta(gzSource, gzTarget, ALWAYS)
    if (!('delta' in auto) || !('delta' in always)) throw new Error('expected archive deltas')
    expect([auto.details.spliced, auto.details.reproduced]).toEqual([0, 1])
    expect(always.details.spliced).toBe(1)
    for (const r of [auto, always])
      for (const out of await applyBothWays(gzSource, r.delta)) expect(out).toEqual(gzTarget)
  })
})
