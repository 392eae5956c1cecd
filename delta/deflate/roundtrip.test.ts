import { spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { constants, createDeflateRaw, deflateRawSync, inflateRawSync } from 'node:zlib'
import { deflateSync as fflateDeflate } from 'fflate'
import * as pako from 'pako'
import { describe, expect, it } from 'vitest'
import { expectSameBytes } from '../../client-agent/test/fixtures.ts'
import { prng } from '../approx/fuzz.ts'
import { DeltaFormatError } from '../errors.ts'
import { BitWriter } from './bits.ts'
import { encodeDeflate, zlibHeaderFor } from './encode.ts'
import { parseDeflate, parseDeflatePrefix, tokenizeDeflate, tokenizeDeflatePrefix } from './parse.ts'
import { BLOCK_DYNAMIC, BLOCK_FIXED, BLOCK_STORED, type DeflateParse } from './parse-types.ts'
import { FIXED_LIT_CODES, FIXED_LIT_LENS } from './tables.ts'
import { deflateSample, tokensToContent } from './testing.ts'
import { zlibDynamicCode } from './zlib-trees.ts'

/** A tar of a real package directory: what archive deltas see. */
function tarOfPackage(name: string): Uint8Array {
  const run = spawnSync('tar', ['-cf', '-', '-C', 'node_modules', name], { maxBuffer: 1 << 28 })
  expect(run.status).toBe(0)
  return new Uint8Array(run.stdout)
}

function expectSame(actual: Uint8Array, expected: Uint8Array): void {
  expect(actual.length).toBe(expected.length)
  expect(Buffer.compare(actual, expected)).toBe(0)
}

/** Parses, checks content and tokens, re-encodes bit for bit; returns the parse. */
function roundTrip(raw: Uint8Array, content: Uint8Array): DeflateParse {
  const parse = parseDeflate(raw, content.length, 'test')
  expectSame(parse.content, content)
  expectSame(tokensToContent(parse.tokens), content)
  expectSame(encodeDeflate(parse), raw)
  return parse
}

function explicitHeaders(parse: DeflateParse): number {
  return parse.blocks.filter((b) => b.header !== undefined).length
}

function count(parse: DeflateParse, type: number): number {
  return parse.blocks.filter((b) => b.type === type).length
}

/** The raw DEFLATE stream inside a gzip member (RFC 1952 header and trailer stripped). */
function gzipBody(gz: Uint8Array): Uint8Array {
  expect(gz[0]).toBe(0x1f)
  expect(gz[1]).toBe(0x8b)
  const flags = gz[3]!
  let p = 10
  if (flags & 4) p += 2 + (gz[p]! | (gz[p + 1]! << 8))
  if (flags & 8) while (gz[p++] !== 0);
  if (flags & 16) while (gz[p++] !== 0);
  if (flags & 2) p += 2
  return gz.subarray(p, gz.length - 8)
}

function gnuGzip(data: Uint8Array, level: number): Uint8Array {
  const run = spawnSync('gzip', ['-c', '-n', `-${level}`], { input: data, maxBuffer: 1 << 28 })
  expect(run.status).toBe(0)
  return gzipBody(new Uint8Array(run.stdout))
}

const r = prng(1951)
const text = deflateSample(r, 300_000)
const tar = tarOfPackage('pako')

describe('parseDeflate + encodeDeflate round trip', () => {
  it('Node zlib: every level, strategy, memLevel and windowBits, with no explicit headers', () => {
    const settings: { level?: number; strategy?: number; memLevel?: number; windowBits?: number }[] = []
    for (let level = 0; level <= 9; level++) settings.push({ level })
    for (const strategy of [
      constants.Z_FILTERED,
      constants.Z_HUFFMAN_ONLY,
      constants.Z_RLE,
      constants.Z_FIXED,
    ]) {
      settings.push({ strategy }, { strategy, level: 1 }, { strategy, level: 9 })
    }
    for (const memLevel of [1, 8, 9]) settings.push({ memLevel }, { memLevel, level: 2 })
    for (const windowBits of [9, 12, 15]) settings.push({ windowBits }, { windowBits, level: 9 })
    let dynamic = 0
    for (const options of settings) {
      for (const data of [text, tar.subarray(0, 400_000)]) {
        const parse = roundTrip(new Uint8Array(deflateRawSync(data, options)), data)
        expect(explicitHeaders(parse), JSON.stringify(options)).toBe(0)
        dynamic += count(parse, BLOCK_DYNAMIC)
        if (options.level === 0) expect(count(parse, BLOCK_STORED)).toBe(parse.blocks.length)
        if (options.strategy === constants.Z_FIXED) expect(count(parse, BLOCK_DYNAMIC)).toBe(0)
      }
    }
    expect(dynamic).toBeGreaterThan(100)
  })

  it('pako (both hashes) at several settings, with no explicit headers', () => {
    const settings: pako.DeflateOptions[] = [
      { level: 1 },
      { level: 6 },
      { level: 9 },
      { level: 6, legacyHash: true },
      { level: 9, legacyHash: true, memLevel: 9 },
      { level: 4, memLevel: 2, windowBits: 10 },
      { level: 6, strategy: pako.Z_RLE },
      { level: 6, strategy: pako.Z_HUFFMAN_ONLY },
      { level: 6, strategy: pako.Z_FILTERED },
    ]
    for (const options of settings) {
      const parse = roundTrip(pako.deflateRaw(text, options), text)
      expect(explicitHeaders(parse), JSON.stringify(options)).toBe(0)
    }
  })

  it('GNU gzip -1, -6 and -9: its trees are zlib’s (no explicit headers)', () => {
    for (const level of [1, 6, 9]) {
      for (const data of [tar, text]) {
        const parse = roundTrip(gnuGzip(data, level), data)
        expect(count(parse, BLOCK_DYNAMIC)).toBeGreaterThan(0)
        expect(explicitHeaders(parse), `gzip -${level}`).toBe(0)
      }
    }
  })

  it('fflate: its own trees, so most dynamic blocks keep their header', () => {
    for (const level of [1, 6, 9] as const) {
      const data = tar.subarray(0, 400_000)
      const raw = fflateDeflate(data, { level })
      const parse = roundTrip(raw, data)
      expect(explicitHeaders(parse)).toBeGreaterThan(count(parse, BLOCK_DYNAMIC) / 2)
      // tokenizeDeflatePrefix skips the header comparison only.
      const tokenized = tokenizeDeflatePrefix(raw, data.length, 'test', data.length)
      expect(tokenized.consumed).toBe(raw.length)
      expect(tokenized.parse.tokens).toEqual(parse.tokens)
      expectSameBytes(tokenized.parse.content, data)
      expect(tokenized.parse.blocks).toEqual(parse.blocks.map(({ header: _, ...b }) => b))
    }
  })

  it('mid-stream flushes: empty stored and empty fixed blocks (pako push)', () => {
    const flushes = [
      pako.Z_SYNC_FLUSH,
      pako.Z_FULL_FLUSH,
      pako.Z_PARTIAL_FLUSH,
      pako.Z_BLOCK,
      pako.Z_NO_FLUSH,
    ]
    for (const level of [0, 1, 6]) {
      const deflate = new pako.Deflate({ raw: true, level })
      let at = 0
      for (let k = 0; at < text.length; k++) {
        const next = Math.min(text.length, at + 1 + Math.floor(r() * 30_000))
        deflate.push(
          text.subarray(at, next),
          next === text.length ? pako.Z_FINISH : flushes[k % flushes.length]!,
        )
        at = next
      }
      const parse = roundTrip(deflate.result, text)
      expect(explicitHeaders(parse)).toBe(0)
      // Sync and full flushes end in an empty stored block, partial flushes (level > 0) in an empty fixed one.
      let start = 0
      const empty = new Set<number>()
      for (const b of parse.blocks) {
        if (b.end === start) empty.add(b.type)
        start = b.end
      }
      expect(empty.has(BLOCK_STORED)).toBe(true)
      if (level > 0) expect(empty.has(BLOCK_FIXED)).toBe(true)
    }
  })

  it('mid-stream flushes from Node zlib streaming', async () => {
    const deflate = createDeflateRaw({ level: 6 })
    const chunks: Buffer[] = []
    deflate.on('data', (c: Buffer) => chunks.push(c))
    const kinds = [constants.Z_SYNC_FLUSH, constants.Z_FULL_FLUSH, constants.Z_PARTIAL_FLUSH]
    for (let k = 0; k < 9; k++) {
      deflate.write(text.subarray(k * 30_000, (k + 1) * 30_000))
      await new Promise<void>((done) => deflate.flush(kinds[k % kinds.length]!, () => done()))
    }
    deflate.end(text.subarray(270_000))
    await once(deflate, 'end')
    const parse = roundTrip(new Uint8Array(Buffer.concat(chunks)), text)
    expect(explicitHeaders(parse)).toBe(0)
    expect(parse.blocks.length).toBeGreaterThan(9)
  })

  it('edge cases: empty, one byte, a 70 KB zero run, incompressible bytes, skewed frequencies', () => {
    const random = new Uint8Array(200_000)
    for (let i = 0; i < random.length; i++) random[i] = (r() * 256) | 0
    // Symbol i occurs fib(i) times, shuffled: the optimal code is a chain 21 deep, so zlib's
    // length-limit repair runs; 28656 symbols fit one Huffman-only block at memLevel 9.
    const fib: number[] = [1, 1]
    while (fib.length < 21) fib.push(fib[fib.length - 1]! + fib[fib.length - 2]!)
    const skewed: number[] = []
    fib.forEach((n, sym) => {
      for (let k = 0; k < n; k++) skewed.push(sym)
    })
    for (let i = skewed.length - 1; i > 0; i--) {
      const j = Math.floor(r() * (i + 1))
      ;[skewed[i], skewed[j]] = [skewed[j]!, skewed[i]!]
    }
    const cases = [
      new Uint8Array(0),
      Uint8Array.of(42),
      new Uint8Array(70_000),
      random,
      Uint8Array.from(skewed),
    ]
    for (const data of cases) {
      for (const options of [
        {},
        { level: 0 },
        { level: 1 },
        { level: 9 },
        { strategy: constants.Z_HUFFMAN_ONLY, memLevel: 9 },
      ]) {
        const parse = roundTrip(new Uint8Array(deflateRawSync(data, options)), data)
        expect(explicitHeaders(parse)).toBe(0)
      }
      for (const level of [1, 9]) expect(explicitHeaders(roundTrip(gnuGzip(data, level), data))).toBe(0)
    }
    // Incompressible content goes in stored blocks (65535 bytes at most each).
    const stored = parseDeflate(new Uint8Array(deflateRawSync(random)), random.length, 'test')
    expect(count(stored, BLOCK_STORED)).toBeGreaterThan(0)
    // The skewed content is one dynamic block whose lengths were limited to 15 bits.
    const huffman = new Uint8Array(
      deflateRawSync(Uint8Array.from(skewed), { strategy: constants.Z_HUFFMAN_ONLY, memLevel: 9 }),
    )
    const one = parseDeflate(huffman, skewed.length, 'test')
    expect(one.blocks.map((b) => b.type)).toEqual([BLOCK_DYNAMIC])
    const freq = new Int32Array(286)
    for (const s of skewed) freq[s]!++
    freq[256] = 1
    const lens = zlibDynamicCode(freq, new Int32Array(30)).litLens
    expect(Math.max(...lens)).toBeLessThanOrEqual(15)
    expect(lens.reduce((kraft, len) => kraft + (len ? 2 ** -len : 0), 0)).toBe(1)
  })

  it('keeps a header zlib would not send, and re-encodes with it', () => {
    const raw = new Uint8Array(deflateRawSync(text, { level: 6 }))
    const parse = parseDeflate(raw, text.length, 'test')
    const index = parse.blocks.findIndex((b) => b.type === BLOCK_DYNAMIC)
    expect(index).toBeGreaterThanOrEqual(0)
    // The whole stream's code covers every symbol any block uses, but is not this block's own.
    const blocks = parse.blocks.map((b) => ({ ...b }))
    blocks[index]!.header = zlibHeaderFor(parse.tokens, 0, parse.tokens.length)
    const other = encodeDeflate({ tokens: parse.tokens, blocks })
    expect(Buffer.compare(other, raw)).not.toBe(0)
    expectSame(new Uint8Array(inflateRawSync(other)), text)
    const reparsed = roundTrip(other, text)
    expect(explicitHeaders(reparsed)).toBe(1)
    expect(reparsed.blocks[index]!.header).toEqual(blocks[index]!.header)
    // A header lacking a code for a symbol the block uses is refused.
    const empty = new Uint32Array(0)
    blocks[index]!.header = zlibHeaderFor(empty, 0, 0)
    expect(() => encodeDeflate({ tokens: parse.tokens, blocks })).toThrow(DeltaFormatError)
  })

  it('rejects valid streams a token list cannot reproduce', () => {
    const rejects = (raw: Uint8Array, size: number, message: RegExp) => {
      expect(new Uint8Array(inflateRawSync(raw)).length).toBe(size) // zlib accepts it
      expect(() => parseDeflate(raw, size, 'test')).toThrow(DeltaFormatError)
      expect(() => parseDeflate(raw, size, 'test')).toThrow(message)
      // The header-less parse refuses the same streams: an archive source's token sequence (which
      // spliced targets index into) must hold the same streams at make and apply time.
      expect(() => tokenizeDeflatePrefix(raw, size, 'test', size)).toThrow(message)
    }
    // Length 258 as symbol 284 + 31 extra bits, in a fixed block: 'a', then 258 × 'a'.
    const w = new BitWriter(64)
    w.put(1 | (1 << 1), 3)
    w.put(FIXED_LIT_CODES[97]!, FIXED_LIT_LENS[97]!)
    w.put(FIXED_LIT_CODES[284]!, FIXED_LIT_LENS[284]!)
    w.put(31, 5)
    w.put(0, 5) // distance symbol 0: distance 1
    w.put(FIXED_LIT_CODES[256]!, FIXED_LIT_LENS[256]!)
    w.align()
    rejects(w.bytes.slice(0, w.pos), 259, /cannot be re-encoded: length 258/)
    // The same with symbol 285 round-trips.
    roundTrip(
      new Uint8Array(deflateRawSync(new Uint8Array(259).fill(97), { strategy: constants.Z_FIXED })),
      new Uint8Array(259).fill(97),
    )

    // Nonzero padding after the final block: 'a' in a fixed block takes 18 bits.
    const one = new Uint8Array(deflateRawSync(Uint8Array.of(97)))
    expect(one.length).toBe(3)
    const padded = one.slice()
    padded[2]! |= 0x80
    rejects(padded, 1, /nonzero padding bits after the final block/)

    // Nonzero bits between a stored block's type and its LEN.
    const storedRaw = new Uint8Array(deflateRawSync(Uint8Array.of(1, 2, 3), { level: 0 }))
    expect(storedRaw[0]).toBe(1)
    const dirty = storedRaw.slice()
    dirty[0] = 0x81
    rejects(dirty, 3, /nonzero padding bits before a stored block/)
  })

  it('rejects wrong sizes, trailing bytes and truncation', () => {
    const raw = new Uint8Array(deflateRawSync(text.subarray(0, 50_000)))
    const size = 50_000
    expect(() => parseDeflate(raw, size - 1, 'test')).toThrow(DeltaFormatError)
    expect(() => parseDeflate(raw, size + 1, 'test')).toThrow(DeltaFormatError)
    expect(() => parseDeflate(Uint8Array.of(...raw, 0), size, 'test')).toThrow(DeltaFormatError)
    for (const cut of [0, 1, 2, raw.length >> 1, raw.length - 1]) {
      expect(() => parseDeflate(raw.subarray(0, cut), size, 'test')).toThrow(DeltaFormatError)
    }
    expect(() => parseDeflate(raw, -1, 'test')).toThrow(DeltaFormatError)
    expect(() => parseDeflate(Uint8Array.of(0x07), 1, 'test')).toThrow(/reserved block type/)
  })

  it('parses a stream at the start of more bytes (a gzip member): same parse, its length, any size hint', () => {
    const content = text.subarray(0, 120_000)
    const raw = new Uint8Array(deflateRawSync(content, { level: 9 }))
    const exact = parseDeflate(raw, content.length, 'test')
    const followed = Uint8Array.of(...raw, 1, 2, 3, 4, 5, 6, 7, 8)
    // Exact, too small (restarts with twice the room until it fits) and too large size hints.
    for (const hint of [content.length, 1000, 10 * content.length]) {
      const { parse, consumed } = parseDeflatePrefix(followed, 1 << 20, 'test', hint)
      expect(consumed).toBe(raw.length)
      expect(parse.tokens).toEqual(exact.tokens)
      expect(parse.blocks).toEqual(exact.blocks)
      expectSameBytes(parse.content, content)
    }
    // Tokens only (an archive source's streams): the same tokens, content and length.
    for (const hint of [content.length, 1000]) {
      const { parse, consumed } = tokenizeDeflatePrefix(followed, 1 << 20, 'test', hint)
      expect(consumed).toBe(raw.length)
      expect(parse.tokens).toEqual(exact.tokens)
      expectSameBytes(parse.content, content)
    }
    // A whole stream, tokens only (a spliced gap's deflate), with and without a preset dictionary.
    expect(tokenizeDeflate(raw, content.length, 'test').tokens).toEqual(exact.tokens)
    const dictionary = text.subarray(200_000, 232_768)
    const withDictionary = new Uint8Array(deflateRawSync(content, { level: 9, dictionary }))
    const expected = parseDeflate(withDictionary, content.length, 'test', dictionary).tokens
    expect(expected.some((t) => t > 255)).toBe(true)
    expect(tokenizeDeflate(withDictionary, content.length, 'test', dictionary).tokens).toEqual(expected)
    expect(() => tokenizeDeflate(withDictionary, content.length, 'test')).toThrow(DeltaFormatError)
    // A bomb guard: never more output than allowed, whatever the hint.
    expect(() => parseDeflatePrefix(followed, content.length - 1, 'test', 1000)).toThrow(/inflates past/)
    expect(() => parseDeflatePrefix(raw.subarray(0, raw.length >> 1), 1 << 20, 'test', 0)).toThrow(
      DeltaFormatError,
    )
  })
})
