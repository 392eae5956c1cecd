import { deflateRawSync, inflateRawSync } from 'node:zlib'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { prng } from '../approx/fuzz.ts'
import { DeltaFormatError } from '../errors.ts'
import { encodeDeflate, zlibHeaderFor } from './encode.ts'
import { parseDeflate } from './parse.ts'
import {
  BLOCK_DYNAMIC,
  BLOCK_FIXED,
  BLOCK_STORED,
  type Block,
  type HeaderBits,
  type Tokens,
} from './parse-types.ts'
import { tokensToContent, ZLIB_STRATEGIES } from './testing.ts'

type Rand = () => number

/** Small-alphabet bytes with repeats, so streams hold every block type and plenty of matches. */
function sample(r: Rand, n: number): Uint8Array {
  const out = new Uint8Array(n)
  for (let i = 0; i < n; ) {
    if (i > 8 && r() < 0.4) {
      const from = i - 1 - Math.floor(r() * Math.min(i - 1, 5000))
      const len = Math.min(n - i, 3 + Math.floor(r() * 80))
      for (let k = 0; k < len; k++) out[i + k] = out[from + k]!
      i += len
    } else out[i++] = 97 + Math.floor(r() * r() * 26)
  }
  return out
}

/** Runs `run`; any exception other than DeltaFormatError fails the test. Returns whether it threw. */
function rejects(run: () => void): boolean {
  try {
    run()
    return false
  } catch (e) {
    if (!(e instanceof DeltaFormatError)) throw e
    expect(e.code).toBe('bad-stream')
    return true
  }
}

function zlibInflate(raw: Uint8Array): Uint8Array | undefined {
  try {
    return new Uint8Array(inflateRawSync(raw))
  } catch {
    return undefined
  }
}

describe('parseDeflate on hostile streams', () => {
  it('throws only DeltaFormatError, and whatever it accepts zlib inflates the same and re-encodes exactly', () => {
    let accepted = 0
    let rejected = 0
    fc.assert(
      fc.property(
        fc.integer(),
        fc.integer({ min: 0, max: 3000 }),
        fc.integer({ min: 0, max: 9 }),
        fc.array(
          fc.record({
            kind: fc.constantFrom('flip', 'set', 'cut', 'insert', 'delete'),
            at: fc.nat(),
            value: fc.integer({ min: 0, max: 255 }),
          }),
          { minLength: 1, maxLength: 3 },
        ),
        (seed, size, level, mutations) => {
          const data = sample(prng(seed), size)
          let raw = new Uint8Array(deflateRawSync(data, { level, strategy: ZLIB_STRATEGIES[seed & 3]! }))
          for (const m of mutations) {
            const at = raw.length === 0 ? 0 : m.at % raw.length
            if (m.kind === 'flip' && raw.length > 0) raw[at]! ^= 1 << (m.value & 7)
            else if (m.kind === 'set' && raw.length > 0) raw[at] = m.value
            else if (m.kind === 'cut') raw = raw.slice(0, at)
            else if (m.kind === 'insert')
              raw = Uint8Array.of(...raw.subarray(0, at), m.value, ...raw.subarray(at))
            else raw = Uint8Array.of(...raw.subarray(0, at), ...raw.subarray(at + 1))
          }
          const reference = zlibInflate(raw)
          for (const expected of new Set([reference?.length ?? data.length, data.length, data.length + 1])) {
            let parse: ReturnType<typeof parseDeflate> | undefined
            if (rejects(() => (parse = parseDeflate(raw, expected, 'fuzz')))) {
              rejected++
              continue
            }
            accepted++
            if (parse === undefined) throw new Error('unreachable')
            expect(reference).toBeDefined()
            expect(Buffer.compare(parse.content, reference ?? new Uint8Array(0))).toBe(0)
            expect(Buffer.compare(tokensToContent(parse.tokens), parse.content)).toBe(0)
            expect(Buffer.compare(encodeDeflate(parse), raw)).toBe(0)
          }
        },
      ),
      { numRuns: 500, seed: 1951 },
    )
    expect(accepted).toBeGreaterThan(0)
    expect(rejected).toBeGreaterThan(0)
  })
})

/** A random valid token list: literals and matches no further back than the content so far. */
function randomTokens(r: Rand, n: number): Uint32Array {
  const tokens = new Uint32Array(n)
  let content = 0
  for (let i = 0; i < n; i++) {
    if (content > 0 && r() < 0.35) {
      const length = r() < 0.1 ? 258 : 3 + Math.floor(r() * r() * 256)
      const distance = 1 + Math.floor(r() * r() * Math.min(content, 32768))
      tokens[i] = (length << 16) | distance
      content += length
    } else {
      tokens[i] = Math.floor(r() * r() * 256)
      content++
    }
  }
  return tokens
}

function randomHeader(r: Rand, tokens: Tokens, start: number, end: number): HeaderBits {
  const pick = r()
  if (pick < 0.4) return zlibHeaderFor(tokens, 0, tokens.length) // covers every symbol used
  if (pick < 0.6) {
    // Another range's code: may lack symbols this block uses.
    const a = Math.floor(r() * (tokens.length + 1))
    const b = Math.floor(r() * (tokens.length + 1))
    return zlibHeaderFor(tokens, Math.min(a, b), Math.max(a, b))
  }
  if (pick < 0.8) {
    const h = zlibHeaderFor(tokens, start, end)
    const bytes = h.bytes.slice()
    if (bytes.length > 0) bytes[Math.floor(r() * bytes.length)]! ^= 1 << Math.floor(r() * 8)
    return { bytes, bitLength: h.bitLength + (r() < 0.2 ? 1 : 0) }
  }
  const bytes = new Uint8Array(Math.floor(r() * 80))
  for (let i = 0; i < bytes.length; i++) bytes[i] = (r() * 256) | 0
  return { bytes, bitLength: Math.floor(r() * (bytes.length * 8 + 3)) }
}

/** Splits the tokens into blocks of fitting types, then (sometimes) breaks something. */
function randomParse(r: Rand): { tokens: Uint32Array; blocks: Block[] } {
  let tokens = randomTokens(r, Math.floor(r() * 600))
  const cuts = [0]
  const nblocks = 1 + Math.floor(r() * 5)
  for (let i = 1; i < nblocks; i++) cuts.push(Math.floor(r() * (tokens.length + 1)))
  cuts.sort((a, b) => a - b)
  cuts.push(tokens.length)
  const blocks: Block[] = []
  for (let i = 0; i < nblocks; i++) {
    const start = cuts[i]!
    const end = cuts[i + 1]!
    const literalsOnly = tokens.subarray(start, end).every((t) => t < 256)
    const pick = r()
    const type = literalsOnly && pick < 0.3 ? BLOCK_STORED : pick < 0.6 ? BLOCK_FIXED : BLOCK_DYNAMIC
    const block: Block = { type, final: i === nblocks - 1, end }
    if (type === BLOCK_DYNAMIC && r() < 0.4) block.header = randomHeader(r, tokens, start, end)
    blocks.push(block)
  }
  if (r() < 0.5) {
    const b = blocks[Math.floor(r() * blocks.length)]!
    const t = Math.floor(r() * 12)
    if (t === 0) b.final = !b.final
    else if (t === 1) b.end = Math.floor(r() * (tokens.length + 3)) - 1
    else if (t === 2) b.end = 2 ** 40
    else if (t === 3) b.type = BLOCK_STORED
    else if (t === 4) (b as { type: number }).type = 3
    else if (t === 5) b.header = randomHeader(r, tokens, 0, tokens.length)
    else if (t === 6 && tokens.length > 0) tokens[Math.floor(r() * tokens.length)] = (r() * 2 ** 32) >>> 0
    else if (t === 7 && tokens.length > 0) tokens[Math.floor(r() * tokens.length)] = (259 << 16) | 1
    else if (t === 8 && tokens.length > 0)
      tokens[0] = (3 << 16) | 1 // before the content's start
    else if (t === 9) blocks.pop()
    else if (t === 10) tokens = Uint32Array.of(...tokens, 65)
    else {
      const count = 70_000
      tokens = new Uint32Array(count).fill(66)
      blocks.splice(0, blocks.length, { type: BLOCK_STORED, final: true, end: count })
    }
  }
  return { tokens, blocks }
}

describe('encodeDeflate on hostile parses', () => {
  it('throws only DeltaFormatError, or writes a stream zlib inflates to the tokens’ content', () => {
    let written = 0
    let refused = 0
    fc.assert(
      fc.property(fc.integer(), (seed) => {
        const parse = randomParse(prng(seed))
        let raw: Uint8Array | undefined
        if (rejects(() => (raw = encodeDeflate(parse)))) {
          refused++
          return
        }
        written++
        if (raw === undefined) throw new Error('unreachable')
        const content = tokensToContent(parse.tokens)
        expect(Buffer.compare(new Uint8Array(inflateRawSync(raw)), content)).toBe(0)
        // And the parse of what was written gives the same tokens and blocks back.
        const again = parseDeflate(raw, content.length, 'fuzz')
        expect(
          Buffer.compare(
            Buffer.from(again.tokens.buffer, again.tokens.byteOffset, again.tokens.byteLength),
            Buffer.from(parse.tokens.buffer, parse.tokens.byteOffset, parse.tokens.byteLength),
          ),
        ).toBe(0)
        expect(again.blocks.map((b) => [b.type, b.final, b.end])).toEqual(
          parse.blocks.map((b) => [b.type, b.final, b.end]),
        )
        expect(Buffer.compare(encodeDeflate(again), raw)).toBe(0)
      }),
      { numRuns: 600, seed: 1952 },
    )
    expect(written).toBeGreaterThan(50)
    expect(refused).toBeGreaterThan(50)
  })

  it('rejects non-parses: no blocks, a non-final end, headers on the wrong blocks, oversized stored blocks', () => {
    const tokens = Uint32Array.of(65, 66, (3 << 16) | 2)
    const bad = (blocks: Block[], t: Uint32Array = tokens) =>
      expect(rejects(() => encodeDeflate({ tokens: t, blocks }))).toBe(true)
    bad([])
    bad([{ type: BLOCK_FIXED, final: false, end: 3 }])
    bad([
      { type: BLOCK_FIXED, final: true, end: 1 },
      { type: BLOCK_FIXED, final: true, end: 3 },
    ])
    bad([{ type: BLOCK_FIXED, final: true, end: 2 }])
    bad([{ type: BLOCK_STORED, final: true, end: 3 }])
    bad([{ type: BLOCK_FIXED, final: true, end: 3, header: zlibHeaderFor(tokens, 0, 3) }])
    bad([{ type: BLOCK_STORED, final: true, end: 65_536 }], new Uint32Array(65_536))
    bad([{ type: BLOCK_DYNAMIC, final: true, end: 3, header: { bytes: new Uint8Array(2), bitLength: 17 } }])
    bad([{ type: BLOCK_FIXED, final: true, end: 3 }], Uint32Array.of((3 << 16) | 1, 65, 66))
    // A stored block of 65535 bytes is fine.
    const big = new Uint32Array(65_535).fill(7)
    const raw = encodeDeflate({ tokens: big, blocks: [{ type: BLOCK_STORED, final: true, end: big.length }] })
    expect(raw.length).toBe(65_535 + 5)
  })
})
