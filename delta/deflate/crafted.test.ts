/**
 * Hand-built hostile DEFLATE streams, one per rule a decoder must enforce (RFC 1951 and zlib's inflate),
 * fed to every raw-deflate decoder in delta/: the parse (parse.ts), DPAX's inflater (raw-inflate.ts)
 * and the archive expander's (pako, archive/inflate.ts). Mutating real streams (hostile.test.ts) rarely
 * lands exactly on these edges, so each gets a stream of its own.
 */
import { inflateRawSync } from 'node:zlib'
import { describe, expect, it } from 'vitest'
import { inflateRawInto } from '../approx/raw-inflate.ts'
import { inflateRawPrefix } from '../archive/inflate.ts'
import { DeltaFormatError } from '../errors.ts'
import { BitWriter } from './bits.ts'
import { parseDeflate } from './parse.ts'
import { CLEN_ORDER, canonicalCodes, FIXED_DIST_CODES, FIXED_LIT_CODES, FIXED_LIT_LENS } from './tables.ts'

/** BitWriter.put does not grow its buffer (the encoder calls ensure first): room for any stream here. */
function writer(): BitWriter {
  return new BitWriter(1 << 16)
}

/** Puts a code from canonicalCodes (already bit-reversed) of `len` bits. */
function putCode(w: BitWriter, code: number, len: number): void {
  for (let k = 0; k < len; k++) w.put((code >>> k) & 1, 1)
}

function codesOf(lens: readonly number[]): Uint16Array {
  const codes = new Uint16Array(lens.length)
  canonicalCodes(Uint8Array.from(lens), lens.length, codes)
  return codes
}

/** Code-length code: 0..12 and the three repeat symbols at 4 bits (16 codes: complete). */
const CLENS: number[] = Array.from({ length: 19 }, (_, s) => (s <= 12 || s >= 16 ? 4 : 0))

interface DynamicSpec {
  /** HLIT, HDIST, HCLEN as sent (defaults: from the lengths). */
  hlit?: number
  hdist?: number
  hclen?: number
  clens?: number[]
  /**
   * The code-length symbols as sent, [symbol, extra bits value] ([-n, v]: the n raw bits v); default
   * each length plainly.
   */
  sequence?: [number, number][]
  lit: number[]
  dist: number[]
}

/** A dynamic block header (after BFINAL/BTYPE); returns the literal/length and distance codes. */
function dynamicHeader(w: BitWriter, spec: DynamicSpec): { lit: Uint16Array; dist: Uint16Array } {
  const clens = spec.clens ?? CLENS
  w.put(spec.hlit ?? spec.lit.length - 257, 5)
  w.put(spec.hdist ?? spec.dist.length - 1, 5)
  const hclen = spec.hclen ?? 15
  w.put(hclen, 4)
  for (let i = 0; i < hclen + 4; i++) w.put(clens[CLEN_ORDER[i]!]!, 3)
  const clenCodes = codesOf(clens)
  const sequence = spec.sequence ?? [...spec.lit, ...spec.dist].map((l): [number, number] => [l, 0])
  for (const [sym, extra] of sequence) {
    if (sym < 0) {
      w.put(extra, -sym) // raw bits: a code the code-length code does not have
      continue
    }
    putCode(w, clenCodes[sym]!, clens[sym]!)
    if (sym === 16) w.put(extra, 2)
    else if (sym === 17) w.put(extra, 3)
    else if (sym === 18) w.put(extra, 7)
  }
  return { lit: codesOf(spec.lit), dist: codesOf(spec.dist) }
}

function lengths(n: number, set: Record<number, number>): number[] {
  return Array.from({ length: n }, (_, s) => set[s] ?? 0)
}

function done(w: BitWriter): Uint8Array {
  w.align()
  return w.bytes.slice(0, w.pos)
}

/** A fixed-code symbol (0..287, 286 and 287 included) with its extra bits. */
function fixed(w: BitWriter, sym: number, extra = 0, extraBits = 0): void {
  putCode(w, FIXED_LIT_CODES[sym]!, FIXED_LIT_LENS[sym]!)
  if (extraBits > 0) w.put(extra, extraBits)
}

function fixedDistance(w: BitWriter, sym: number, extra = 0, extraBits = 0): void {
  // Distance symbols 30 and 31 have fixed 5-bit codes too (bit-reversed like the others).
  putCode(w, FIXED_DIST_CODES[sym] ?? reverse5(sym), 5)
  if (extraBits > 0) w.put(extra, extraBits)
}

function reverse5(v: number): number {
  let r = 0
  for (let k = 0; k < 5; k++) r |= ((v >>> k) & 1) << (4 - k)
  return r
}

/** Every decoder's verdict on `raw` expected to inflate to `size` bytes: 'ok' or the error's code. */
function verdicts(raw: Uint8Array, size: number): Record<string, string> {
  const run = (f: () => void): string => {
    try {
      f()
      return 'ok'
    } catch (e) {
      if (!(e instanceof DeltaFormatError)) throw e
      return e.code
    }
  }
  return {
    parse: run(() => parseDeflate(raw, size, 'crafted')),
    rawInflate: run(() => inflateRawInto(raw, new Uint8Array(size), 'crafted')),
    pako: run(() => {
      const out = inflateRawPrefix(raw, size, 'bad-stream')
      if (out.data.length !== size || out.consumed !== raw.length)
        throw new DeltaFormatError('bad-stream', 'wrong size')
    }),
  }
}

function zlibRejects(raw: Uint8Array): boolean {
  try {
    inflateRawSync(raw)
    return false
  } catch {
    return true
  }
}

const ALL_REJECT = { parse: 'bad-stream', rawInflate: 'bad-stream', pako: 'bad-stream' }

/** A stream zlib rejects must be refused by every decoder, with DeltaFormatError and nothing else. */
function expectRejected(raw: Uint8Array, size = 16): void {
  expect(zlibRejects(raw)).toBe(true)
  expect(verdicts(raw, size)).toEqual(ALL_REJECT)
}

/** 'A' (65) and end-of-block at 2 bits, 'B' at 1: a complete literal/length code; one distance code. */
const LIT = lengths(257, { 65: 2, 66: 1, 256: 2 })
const ONE_DIST = [1]

describe('crafted hostile DEFLATE streams', () => {
  it('a well-formed crafted dynamic block decodes everywhere (the helpers are right)', () => {
    const w = writer()
    w.put(1, 1)
    w.put(2, 2)
    const c = dynamicHeader(w, { lit: LIT, dist: ONE_DIST })
    putCode(w, c.lit[65]!, 2)
    putCode(w, c.lit[66]!, 1)
    putCode(w, c.lit[256]!, 2)
    const raw = done(w)
    expect(new Uint8Array(inflateRawSync(raw))).toEqual(Uint8Array.of(65, 66))
    expect(verdicts(raw, 2)).toEqual({ parse: 'ok', rawInflate: 'ok', pako: 'ok' })
  })

  it('refuses bad code-length codes: over-subscribed, incomplete (and its unused code sent), all zero', () => {
    for (const clens of [
      Array.from({ length: 19 }, () => 1), // over-subscribed
      Array.from({ length: 19 }, (_, s) => (s < 4 ? 3 : 0)), // codes 000..011: 1xx unused
      Array.from({ length: 19 }, () => 0),
    ]) {
      const w = writer()
      w.put(1, 1)
      w.put(2, 2)
      dynamicHeader(w, { clens, lit: LIT, dist: ONE_DIST, sequence: [[-3, 0b111]] })
      for (let i = 0; i < 40; i++) w.put(0, 8)
      expectRejected(done(w))
    }
  })

  it('refuses over-subscribed literal/length and distance codes', () => {
    const overLit = lengths(257, { 65: 1, 66: 1, 256: 1 })
    const overDist = [1, 1, 1]
    for (const [lit, dist] of [
      [overLit, ONE_DIST],
      [LIT, overDist],
    ] as const) {
      const w = writer()
      w.put(1, 1)
      w.put(2, 2)
      dynamicHeader(w, { lit, dist })
      for (let i = 0; i < 8; i++) w.put(0, 8)
      expectRejected(done(w))
    }
  })

  it('refuses a symbol on the unused part of an incomplete code', () => {
    // 'A' and end-of-block at 2 bits: codes 00 and 01; 1x decodes to nothing.
    const lit = lengths(257, { 65: 2, 256: 2 })
    const w = writer()
    w.put(1, 1)
    w.put(2, 2)
    const c = dynamicHeader(w, { lit, dist: ONE_DIST })
    putCode(w, c.lit[65]!, 2)
    w.put(3, 2) // 11: no symbol
    putCode(w, c.lit[256]!, 2)
    expectRejected(done(w), 2)
  })

  it('refuses a header without an end-of-block code, or with too many symbols', () => {
    const w = writer()
    w.put(1, 1)
    w.put(2, 2)
    dynamicHeader(w, { lit: lengths(257, { 65: 1, 66: 1 }), dist: ONE_DIST })
    for (let i = 0; i < 8; i++) w.put(0, 8)
    expectRejected(done(w))
    // HLIT 30 and 31 (287, 288 symbols) and HDIST 30 and 31 (31, 32 distance codes) are reserved.
    for (const [hlit, hdist] of [
      [30, 0],
      [31, 0],
      [0, 30],
      [0, 31],
    ] as const) {
      const v = writer()
      v.put(1, 1)
      v.put(2, 2)
      const lit = lengths(257 + hlit, { 65: 2, 66: 1, 256: 2 })
      dynamicHeader(v, { hlit, hdist, lit, dist: lengths(hdist + 1, { 0: 1 }) })
      for (let i = 0; i < 8; i++) v.put(0, 8)
      expectRejected(done(v))
    }
  })

  it('refuses repeat codes with no previous length or running past the end', () => {
    const plain = (l: number[]) => l.map((x): [number, number] => [x, 0])
    for (const sequence of [
      // 16 first: nothing to repeat.
      [[16, 0] as [number, number], ...plain(LIT.slice(3)), ...plain(ONE_DIST)],
      // 18 × 138 zeros four times: 552 lengths where 258 are declared.
      [
        [18, 127],
        [18, 127],
        [18, 127],
        [18, 127],
      ] as [number, number][],
      // 17 × 10 zeros straddling the literal/length and distance lengths is fine in zlib; past the end is not.
      [...plain(LIT), [17, 7]] as [number, number][],
    ]) {
      const w = writer()
      w.put(1, 1)
      w.put(2, 2)
      dynamicHeader(w, { lit: LIT, dist: ONE_DIST, sequence })
      for (let i = 0; i < 8; i++) w.put(0, 8)
      expectRejected(done(w))
    }
  })

  it('refuses length symbols 286 and 287 and distance symbols 30 and 31 (fixed code)', () => {
    for (const lengthSym of [286, 287]) {
      const w = writer()
      w.put(1, 1)
      w.put(1, 2)
      fixed(w, 65)
      fixed(w, lengthSym)
      fixedDistance(w, 0)
      fixed(w, 256)
      expectRejected(done(w))
    }
    for (const distSym of [30, 31]) {
      const w = writer()
      w.put(1, 1)
      w.put(1, 2)
      fixed(w, 65)
      fixed(w, 257) // length 3
      fixedDistance(w, distSym)
      fixed(w, 256)
      expectRejected(done(w))
    }
  })

  it('refuses distances beyond the output so far', () => {
    for (const [before, distSym, extra, extraBits] of [
      [0, 0, 0, 0], // distance 1 with nothing written
      [3, 3, 0, 0], // distance 4 after 3 bytes
      [1, 29, 8191, 13], // distance 32768 after one byte
    ] as const) {
      const w = writer()
      w.put(1, 1)
      w.put(1, 2)
      for (let i = 0; i < before; i++) fixed(w, 65)
      fixed(w, 257)
      fixedDistance(w, distSym, extra, extraBits)
      fixed(w, 256)
      expectRejected(done(w), before + 3)
    }
  })

  it('refuses a dynamic match when the distance code has no codes', () => {
    // HDIST 0 with a zero length: a block of literals only, as RFC 1951 allows; a match has no code.
    const lit = lengths(258, { 65: 1, 256: 2, 257: 2 })
    const w = writer()
    w.put(1, 1)
    w.put(2, 2)
    const c = dynamicHeader(w, { lit, dist: [0] })
    putCode(w, c.lit[65]!, 1)
    putCode(w, c.lit[257]!, 2)
    w.put(0, 8)
    putCode(w, c.lit[256]!, 2)
    expectRejected(done(w), 4)
  })

  it('refuses stored blocks whose LEN and NLEN disagree or that run past the input', () => {
    const stored = (len: number, nlen: number, body: number) => {
      const out = new Uint8Array(5 + body)
      out.set([1, len & 255, len >>> 8, nlen & 255, nlen >>> 8])
      return out
    }
    expectRejected(stored(4, 0xfffb ^ 1, 4), 4)
    expectRejected(stored(4, 0, 4), 4)
    expectRejected(stored(100, 100 ^ 0xffff, 10), 100)
    expectRejected(Uint8Array.of(1, 4, 0), 4) // LEN/NLEN cut off
  })

  it('refuses reserved block type 3, and streams that end before a final block', () => {
    expectRejected(Uint8Array.of(0b111, 0, 0, 0))
    // Non-final empty stored blocks, then the input ends: 100 000 blocks, refused fast with bounded work.
    const endless = new Uint8Array(5 * 100_000)
    for (let i = 0; i < endless.length; i += 5) endless.set([0, 0, 0, 0xff, 0xff], i)
    const started = performance.now()
    expectRejected(endless, 0)
    // Non-final fixed blocks holding only end-of-block (10 bits each), the same way.
    const w = new BitWriter(1 << 16)
    for (let i = 0; i < 40_000; i++) {
      w.put(0, 1)
      w.put(1, 2)
      fixed(w, 256)
    }
    expectRejected(done(w), 0)
    expect(performance.now() - started).toBeLessThan(5_000)
  })

  it('refuses output past the expected size, and short output', () => {
    const w = writer()
    w.put(1, 1)
    w.put(1, 2)
    fixed(w, 65)
    fixed(w, 285) // length 258
    fixedDistance(w, 0)
    fixed(w, 256)
    const raw = done(w)
    expect(inflateRawSync(raw).length).toBe(259)
    expect(verdicts(raw, 259)).toEqual({ parse: 'ok', rawInflate: 'ok', pako: 'ok' })
    expect(verdicts(raw, 258)).toEqual(ALL_REJECT)
    expect(verdicts(raw, 260)).toEqual(ALL_REJECT)
  })
})
