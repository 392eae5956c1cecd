import { deflateRawSync } from 'node:zlib'
import * as pako from 'pako'
import { describe, expect, it } from 'vitest'
import { expectSameBytes } from '../../client-agent/test/fixtures.ts'
import { prng } from '../approx/fuzz.ts'
import { DeltaFormatError } from '../errors.ts'
import { encodeDeflate, encodeZlibDeflate } from './encode.ts'
import { parseDeflate } from './parse.ts'
import { BLOCK_DYNAMIC, BLOCK_FIXED, BLOCK_STORED, type Block, type DeflateParse } from './parse-types.ts'
import { deflateSample } from './testing.ts'
import { blocksEqual, zlibBlocks } from './zlib-blocks.ts'

type Rand = () => number

/** Incompressible bytes: zlib stores them (when the window still holds them). */
function random(r: Rand, n: number): Uint8Array {
  const out = new Uint8Array(n)
  for (let i = 0; i < n; i++) out[i] = (r() * 256) | 0
  return out
}

/** Text and random stretches of `chunk` bytes in turn: stored blocks between Huffman ones. */
function mixed(r: Rand, n: number, chunk: number): Uint8Array {
  const out = new Uint8Array(n)
  for (let at = 0, k = 0; at < n; at += chunk, k++) {
    const len = Math.min(chunk, n - at)
    out.set(k % 2 === 0 ? deflateSample(r, len) : random(r, len), at)
  }
  return out
}

/** Highly repetitive: a short pattern with rare changes (long matches, tiny blocks in bytes). */
function repetitive(r: Rand, n: number): Uint8Array {
  const out = new Uint8Array(n)
  const pattern = [97, 98, 99, 100, 97, 98]
  for (let i = 0; i < n; i++) out[i] = r() < 0.001 ? (r() * 256) | 0 : pattern[i % pattern.length]!
  return out
}

function perBlock(memLevel: number): number {
  return 2 ** (memLevel + 6) - 1
}

function blockStart(blocks: readonly Block[], i: number): number {
  return i === 0 ? 0 : blocks[i - 1]!.end
}

function describeBlocks(blocks: readonly Block[]): string {
  return blocks.map((b) => `${'SFD'[b.type]}${b.final ? '!' : ''}@${b.end}`).join(' ')
}

/**
 * 'same': zlibBlocks gives the stream's own blocks, and they re-encode to its bytes.
 * 'hidden': they agree up to a stored block whose bytes zlib had counted as fewer symbols (it held
 * back-references zlib then sent as plain bytes, so the parse shows one literal per byte); that
 * block holds more tokens than zlib's buffer, or is the final one. Anything else: a description.
 */
function compare(
  raw: Uint8Array,
  parse: DeflateParse,
  memLevel: number,
  level: number,
  windowBits = 15,
): string {
  const blocks = zlibBlocks(parse.tokens, memLevel, { level, windowBits })
  const fused = sameEncoding(parse.tokens, blocks, memLevel, { level, windowBits })
  if (fused !== 'same') return fused
  if (blocksEqual(blocks, parse.blocks)) {
    return Buffer.compare(encodeDeflate({ tokens: parse.tokens, blocks }), raw) === 0
      ? 'same'
      : 'bytes differ'
  }
  let i = 0
  while (i < blocks.length && i < parse.blocks.length && blocksEqual([blocks[i]!], [parse.blocks[i]!])) i++
  const own = parse.blocks[i]
  if (
    own?.type === BLOCK_STORED &&
    (own.final || own.end - blockStart(parse.blocks, i) > perBlock(memLevel))
  ) {
    return 'hidden'
  }
  const from = Math.max(0, i - 1)
  return `block ${i}: stream ${describeBlocks(parse.blocks.slice(from, i + 2))}, zlibBlocks ${describeBlocks(blocks.slice(from, i + 2))}`
}

/**
 * encodeZlibDeflate (cut and write in one walk) against encodeDeflate over zlibBlocks' list: the same
 * bytes, or the same DeltaFormatError message. 'same' or a description of the difference.
 */
function sameEncoding(
  tokens: Uint32Array,
  blocks: Block[],
  memLevel: number,
  options: { level: number; windowBits: number },
): string {
  const outcome = (f: () => Uint8Array): Uint8Array | string => {
    try {
      return f()
    } catch (err) {
      if (err instanceof DeltaFormatError) return err.message
      throw err
    }
  }
  const separate = outcome(() => encodeDeflate({ tokens, blocks }))
  const fused = outcome(() => encodeZlibDeflate(tokens, memLevel, options))
  if (typeof separate === 'string' || typeof fused === 'string') {
    return separate === fused
      ? 'same'
      : `encodeZlibDeflate: ${String(fused)}; encodeDeflate: ${String(separate)}`
  }
  return Buffer.compare(fused, separate) === 0 ? 'same' : 'encodeZlibDeflate bytes differ from encodeDeflate'
}

interface Tally {
  same: number
  hidden: number
  failures: string[]
}

function tally(): Tally {
  return { same: 0, hidden: 0, failures: [] }
}

function record(t: Tally, what: string, outcome: string): void {
  if (outcome === 'same') t.same++
  else if (outcome === 'hidden') t.hidden++
  else t.failures.push(`${what}: ${outcome}`)
}

function parsed(raw: Uint8Array, size: number): DeflateParse {
  return parseDeflate(raw, size, 'zlib-blocks test')
}

const r0 = prng(20_250_901)
const gridInputs: [string, Uint8Array][] = [
  ['empty', new Uint8Array(0)],
  ['1 byte', Uint8Array.of(42)],
  ['2 bytes', Uint8Array.of(42, 42)],
  ['3 bytes', Uint8Array.of(1, 2, 3)],
  ['text', deflateSample(r0, 40_000)],
  ['mixed', mixed(r0, 48_000, 8_000)],
  ['repetitive', repetitive(r0, 16_000)],
]

describe('zlibBlocks', () => {
  it('gives pako 3 blocks for levels 1..9 × memLevels × default/filtered × both hashes', () => {
    const t = tally()
    // Streams in which a short match was sent inside a stored block (see compare), per setting.
    const hiddenWhere = new Set<string>()
    for (let level = 1; level <= 9; level++) {
      for (const memLevel of [1, 4, 8, 9]) {
        for (const strategy of [0, 1] as const) {
          for (const legacyHash of [false, true]) {
            for (const [name, data] of gridInputs) {
              const raw = pako.deflateRaw(data, { level, memLevel, strategy, legacyHash })
              const what = `${name} level ${level} memLevel ${memLevel} strategy ${strategy} legacy ${legacyHash}`
              const outcome = compare(raw, parsed(raw, data.length), memLevel, level)
              record(t, what, outcome)
              if (outcome === 'hidden') {
                hiddenWhere.add(
                  `${name} ${level >= 4 ? 'lazy' : 'fast'} ${strategy} ${legacyHash ? 'classic' : 'default'}`,
                )
              }
            }
          }
        }
      }
    }
    expect(t.failures).toEqual([])
    expect(t.same + t.hidden).toBe(9 * 4 * 2 * 2 * gridInputs.length)
    // Only incompressible stretches get stored; the classic hash finds 3-byte matches there (the
    // default one reads 4 bytes, so it rarely does), and filtered drops them at levels 4..9.
    for (const where of hiddenWhere) expect(where).toMatch(/^mixed (fast [01]|lazy 0) classic$/)
    expect(t.hidden).toBeLessThan(t.same / 10)
  })

  it('gives node:zlib (Chromium zlib) blocks for the same grid', () => {
    const t = tally()
    for (let level = 1; level <= 9; level++) {
      for (const memLevel of [1, 4, 8, 9]) {
        for (const strategy of [0, 1] as const) {
          for (const [name, data] of gridInputs) {
            const raw = deflateRawSync(data, { level, memLevel, strategy })
            const what = `${name} level ${level} memLevel ${memLevel} strategy ${strategy}`
            record(t, what, compare(raw, parsed(raw, data.length), memLevel, level))
          }
        }
      }
    }
    expect(t.failures).toEqual([])
    expect(t.same + t.hidden).toBe(9 * 4 * 2 * gridInputs.length)
    // Chromium's hash reads 4 bytes, so it rarely finds a 3-byte match in random bytes.
    expect(t.hidden).toBeLessThan(t.same / 20)
  })

  it('cuts multi-block streams of a few MB as zlib does, stored stretches included', () => {
    const r = prng(77)
    const data = mixed(r, 1_500_000, 100_000)
    const t = tally()
    const hidden: string[] = []
    for (const memLevel of [8, 9]) {
      const streams: [string, Uint8Array, number][] = [
        ['pako filtered', pako.deflateRaw(data, { level: 6, memLevel, strategy: 1 }), 6],
        ['pako filtered', pako.deflateRaw(data, { level: 9, memLevel, strategy: 1 }), 9],
        ['pako classic hash', pako.deflateRaw(data, { level: 9, memLevel, legacyHash: true }), 9],
        ['pako filtered', pako.deflateRaw(data, { level: 1, memLevel, strategy: 1 }), 1],
        ['node filtered', deflateRawSync(data, { level: 9, memLevel, strategy: 1 }), 9],
        ['node', deflateRawSync(data, { level: 9, memLevel }), 9],
      ]
      for (const [name, raw, level] of streams) {
        const parse = parsed(raw, data.length)
        expect(parse.blocks.length).toBeGreaterThan(10)
        const what = `${name} level ${level} memLevel ${memLevel}`
        const outcome = compare(raw, parse, memLevel, level)
        record(t, what, outcome)
        if (outcome === 'hidden') hidden.push(what)
      }
    }
    expect(t.failures).toEqual([])
    // Filtered drops the short matches at levels 4..9, so only the others can hide one.
    for (const what of hidden) expect(what).not.toMatch(/filtered level [4-9]/)
    expect(t.same).toBeGreaterThanOrEqual(6)

    // Both stored and Huffman blocks, and the bytes are zlib's.
    const raw = pako.deflateRaw(data, { level: 6, memLevel: 8, strategy: 1 })
    const parse = parsed(raw, data.length)
    const blocks = zlibBlocks(parse.tokens, 8)
    expect(new Set(blocks.map((b) => b.type))).toEqual(new Set([BLOCK_STORED, BLOCK_DYNAMIC]))
    expectSameBytes(encodeDeflate({ tokens: parse.tokens, blocks }), raw)
  })

  it('keeps memLevel 9 incompressible blocks out of stored form once the window has slid past their start', () => {
    // 32767-byte blocks of random bytes: from the second on, zlib's window has dropped the block's
    // first byte by the time the block ends, so it sends a Huffman block although storing is smaller.
    const r = prng(5)
    const data = random(r, 2_000_000)
    const raw = pako.deflateRaw(data, { level: 6, memLevel: 9, strategy: 1 })
    const parse = parsed(raw, data.length)
    const types = parse.blocks.map((b) => b.type)
    expect(types.length).toBe(62)
    expect(types[0]).toBe(BLOCK_STORED)
    expect(types.slice(1, -1).every((type) => type !== BLOCK_STORED)).toBe(true)
    const started = performance.now()
    const blocks = zlibBlocks(parse.tokens, 9, { level: 6 })
    const elapsed = performance.now() - started
    expect(describeBlocks(blocks)).toBe(describeBlocks(parse.blocks))
    expectSameBytes(encodeDeflate({ tokens: parse.tokens, blocks }), raw)
    // About 10 ms for these 2 M tokens; generous for a shared machine.
    expect(elapsed).toBeLessThan(500)

    // Same with the window ending exactly at the slide point: 65274 bytes slide (dynamic final
    // block), 65273 do not (stored), for Chromium's zlib and pako alike, and at levels 1..3 too.
    for (const [size, final] of [
      [65_273, BLOCK_STORED],
      [65_274, BLOCK_DYNAMIC],
    ] as const) {
      const input = data.subarray(0, size)
      for (const raw of [
        pako.deflateRaw(input, { level: 6, memLevel: 9, strategy: 1 }),
        deflateRawSync(input, { level: 6, memLevel: 9, strategy: 1 }),
      ]) {
        const parse = parsed(raw, size)
        expect(parse.blocks.map((b) => b.type)).toEqual([BLOCK_STORED, final])
        expect(compare(raw, parse, 9, 6)).toBe('same')
      }
    }
  })

  it('follows the window size (windowBits 9..15) in the slide rule, at both loop kinds', () => {
    // Small windows slide every few hundred bytes; with 255-byte blocks (memLevel 2) a slide lands
    // one byte before some blocks' flush, so where deflate_slow (one byte behind its tokens) and
    // deflate_fast flush relative to their loop tops decides between stored and Huffman.
    const r = prng(11)
    const data = random(r, 100_000)
    const t = tally()
    const hidden: string[] = []
    const types = new Set<number>()
    for (const windowBits of [9, 10, 11, 12, 15]) {
      for (const memLevel of [2, 3, 9]) {
        for (const level of [1, 6]) {
          const options = { level, memLevel, strategy: 1 as const, windowBits }
          for (const [engine, raw] of [
            ['pako', pako.deflateRaw(data, options)],
            ['node', deflateRawSync(data, options)],
          ] as const) {
            const parse = parsed(raw, data.length)
            for (const b of parse.blocks) types.add(b.type)
            const what = `${engine} windowBits ${windowBits} memLevel ${memLevel} level ${level}`
            const outcome = compare(raw, parse, memLevel, level, windowBits)
            record(t, what, outcome)
            if (outcome === 'hidden') hidden.push(what)
          }
        }
      }
    }
    expect(t.failures).toEqual([])
    // Level 1 keeps the odd 4-byte match a random 32 KiB window holds; filtered level 6 drops it.
    for (const what of hidden) expect(what).toMatch(/windowBits 15 .* level 1$/)
    expect(types).toEqual(new Set([BLOCK_STORED, BLOCK_FIXED, BLOCK_DYNAMIC]))
  })

  describe('token counts that are an exact multiple of the buffer', () => {
    /**
     * A stream of exactly 2 buffers of tokens: random bytes (one literal each at filtered levels
     * 4..9, where short matches are dropped) and, with `tail`, a copy that ends the input in a
     * back-reference.
     */
    function exactMultiple(
      level: number,
      memLevel: number,
      tail: boolean,
    ): { raw: Uint8Array; parse: DeflateParse } {
      const r = prng(level * 100 + memLevel + (tail ? 7 : 0))
      const len = 2 * perBlock(memLevel) - (tail ? 1 : 0)
      for (let attempt = 0; attempt < 20; attempt++) {
        const head = random(r, len)
        const data = new Uint8Array(len + (tail ? 12 : 0))
        data.set(head)
        if (tail) data.set(head.subarray(5, 17), len)
        const raw = pako.deflateRaw(data, { level, memLevel, strategy: 1 })
        const parse = parsed(raw, data.length)
        // One token per random byte (no match among them), plus the copy's back-reference.
        const last = parse.tokens[parse.tokens.length - 1]!
        if (parse.tokens.length === 2 * perBlock(memLevel) && last > 255 === tail) return { raw, parse }
      }
      throw new Error('no input found')
    }

    it('levels 4..9 end with the last buffer as the final block when the last token is a literal', () => {
      for (const level of [4, 6, 9]) {
        const { raw, parse } = exactMultiple(level, 1, false)
        expect(describeBlocks(parse.blocks)).toBe('S@127 S!@254')
        expect(compare(raw, parse, 1, level)).toBe('same')
      }
    })

    it('add an empty fixed final block after a full buffer that ends in a back-reference', () => {
      for (const level of [4, 6, 9]) {
        const { raw, parse } = exactMultiple(level, 1, true)
        expect(parse.blocks.at(-1)).toEqual({ type: BLOCK_FIXED, final: true, end: 254 })
        expect(parse.blocks.at(-2)?.end).toBe(254)
        expect(compare(raw, parse, 1, level)).toBe('same')
      }
    })

    it('levels 1..3 always add the empty final block, which the level option selects', () => {
      // deflate_fast tallies every token inside its loop, so a full buffer always flushes there.
      const r = prng(3)
      const data = random(r, 2 * perBlock(1))
      const raw = pako.deflateRaw(data, { level: 1, memLevel: 1, strategy: 1 })
      const parse = parsed(raw, data.length)
      expect(parse.tokens.length).toBe(254)
      expect(describeBlocks(parse.blocks)).toBe('S@127 S@254 F!@254')
      expect(compare(raw, parse, 1, 1)).toBe('same')
      // Without the level, zlibBlocks assumes 6 and cannot know: the bytes then differ.
      expect(describeBlocks(zlibBlocks(parse.tokens, 1))).toBe('S@127 S!@254')
    })
  })

  it('documents what a parse cannot show: short matches zlib sent inside stored blocks', () => {
    // The classic hash finds 3-byte matches in random bytes (levels 1..3 take any of them), so zlib's
    // 127-symbol buffer covers a few more bytes than 127 in some blocks; it stores them, and the
    // parse shows one literal per byte, so the block holds more tokens than the buffer. zlibBlocks
    // cuts after 127 tokens there and every later boundary moves (callers check the bytes).
    const r = prng(1)
    const data = random(r, 60_000)
    const raw = pako.deflateRaw(data, { level: 1, memLevel: 1, legacyHash: true })
    const parse = parsed(raw, data.length)
    const longer = parse.blocks.findIndex((b, i) => !b.final && b.end - blockStart(parse.blocks, i) > 127)
    expect(longer).toBeGreaterThan(0)
    expect(parse.blocks[longer]!.type).toBe(BLOCK_STORED)
    const blocks = zlibBlocks(parse.tokens, 1, { level: 1 })
    expect(blocksEqual(blocks.slice(0, longer), parse.blocks.slice(0, longer))).toBe(true)
    expect(blocks[longer]!.end).toBe(blockStart(parse.blocks, longer) + 127)
    expect(compare(raw, parse, 1, 1)).toBe('hidden')
  })

  it('gives one empty fixed final block for no tokens', () => {
    expect(zlibBlocks(new Uint32Array(0), 8)).toEqual([{ type: BLOCK_FIXED, final: true, end: 0 }])
    expect(zlibBlocks(new Uint32Array(0), 1, { level: 1 })).toEqual([
      { type: BLOCK_FIXED, final: true, end: 0 },
    ])
  })

  it('rejects settings outside zlib’s ranges and malformed tokens', () => {
    const tokens = Uint32Array.of(1, 2, 3)
    for (const memLevel of [0, 10, 1.5, Number.NaN]) {
      expect(() => zlibBlocks(tokens, memLevel)).toThrow(DeltaFormatError)
    }
    expect(() => zlibBlocks(tokens, 8, { level: 0 })).toThrow(DeltaFormatError)
    expect(() => zlibBlocks(tokens, 8, { level: 10 })).toThrow(DeltaFormatError)
    expect(() => zlibBlocks(tokens, 8, { windowBits: 16 })).toThrow(DeltaFormatError)
    expect(() => zlibBlocks(tokens, 8, { windowBits: 7 })).toThrow(DeltaFormatError)
    // Tokens that are neither a literal nor a match (length 3..258, distance 1..32768).
    for (const bad of [256, (2 << 16) | 1, (259 << 16) | 1, 3 << 16, (3 << 16) | 0xffff]) {
      expect(() => zlibBlocks(Uint32Array.of(1, 2, bad), 8)).toThrow(DeltaFormatError)
    }
    expect(zlibBlocks(Uint32Array.of(1, 2, (258 << 16) | 2, (3 << 16) | 32768), 8)).toHaveLength(1)
  })
})

describe('encodeZlibDeflate', () => {
  it('writes what encodeDeflate writes for zlibBlocks’ list, also on tokens zlib never made', () => {
    // The grids above compare the two on real streams (compare); here token mixes with fixed,
    // stored and dynamic blocks at tiny memLevels, chosen at random.
    const r = prng(20_261_126)
    for (let round = 0; round < 200; round++) {
      const n = (r() * 3000) | 0
      const tokens = new Uint32Array(n)
      let content = 0
      for (let i = 0; i < n; i++) {
        if (content > 3 && r() < 0.3) {
          const length = 3 + ((r() * 256) | 0)
          const distance = 1 + ((r() * Math.min(content, 32768)) | 0)
          tokens[i] = (length << 16) | distance
          content += length
        } else {
          tokens[i] = r() < 0.5 ? (r() * 256) | 0 : 97 + ((r() * 4) | 0)
          content++
        }
      }
      const memLevel = 1 + ((r() * 3) | 0)
      const options = { level: 1 + ((r() * 9) | 0), windowBits: 9 + ((r() * 7) | 0) }
      const blocks = zlibBlocks(tokens, memLevel, options)
      expect(sameEncoding(tokens, blocks, memLevel, options), `round ${round}`).toBe('same')
    }
  })

  it('refuses what encodeDeflate refuses: a distance before the content, a malformed token', () => {
    const early = Uint32Array.of(1, 2, (3 << 16) | 3)
    expect(() => encodeZlibDeflate(early, 8, {})).toThrow(/refers back before/)
    expect(() => encodeDeflate({ tokens: early, blocks: zlibBlocks(early, 8) })).toThrow(/refers back before/)
    expect(() => encodeZlibDeflate(Uint32Array.of(1, 2, (2 << 16) | 1), 8, {})).toThrow(DeltaFormatError)
    expect(encodeZlibDeflate(Uint32Array.of(1, 2, (3 << 16) | 2), 8, {})).toEqual(
      encodeDeflate({
        tokens: Uint32Array.of(1, 2, (3 << 16) | 2),
        blocks: zlibBlocks(Uint32Array.of(1, 2, (3 << 16) | 2), 8),
      }),
    )
  })
})

describe('blocksEqual', () => {
  const header = (bytes: number[], bitLength: number) => ({ bytes: Uint8Array.from(bytes), bitLength })

  it('compares type, final flag, end and header bits', () => {
    const a: Block[] = [
      { type: BLOCK_DYNAMIC, final: false, end: 10 },
      { type: BLOCK_FIXED, final: true, end: 12 },
    ]
    expect(
      blocksEqual(
        a,
        a.map((b) => ({ ...b })),
      ),
    ).toBe(true)
    expect(blocksEqual(a, a.slice(0, 1))).toBe(false)
    expect(blocksEqual(a, [a[0]!, { ...a[1]!, type: BLOCK_DYNAMIC }])).toBe(false)
    expect(blocksEqual(a, [a[0]!, { ...a[1]!, final: false }])).toBe(false)
    expect(blocksEqual(a, [a[0]!, { ...a[1]!, end: 13 }])).toBe(false)
    expect(blocksEqual([], [])).toBe(true)
  })

  it('compares headers bit for bit, ignoring bits past their length', () => {
    const with_ = (h: { bytes: Uint8Array; bitLength: number } | undefined): Block[] => [
      { type: BLOCK_DYNAMIC, final: true, end: 5, header: h },
    ]
    expect(blocksEqual(with_(header([0xab, 0x05], 11)), with_(header([0xab, 0xfd], 11)))).toBe(true)
    expect(blocksEqual(with_(header([0xab, 0x05], 11)), with_(header([0xab, 0x01], 11)))).toBe(false)
    expect(blocksEqual(with_(header([0xab, 0x05], 11)), with_(header([0xab, 0x05], 12)))).toBe(false)
    expect(blocksEqual(with_(header([0xab], 8)), with_(undefined))).toBe(false)
    expect(blocksEqual(with_(undefined), with_(header([0xab], 8)))).toBe(false)
    expect(blocksEqual(with_(undefined), with_(undefined))).toBe(true)
  })
})
