import fc from 'fast-check'
import { deflateSync, gzipSync as fflateGzip } from 'fflate'
import { deflateRaw } from 'pako'
import { describe, expect, it } from 'vitest'
import { tryParseDeflate } from '../deflate/parse.ts'
import { BLOCK_DYNAMIC, BLOCK_FIXED, BLOCK_STORED, type Block } from '../deflate/parse-types.ts'
import { DeltaFormatError } from '../errors.ts'
import { applyArchiveDelta } from './apply.ts'
import { decodeContainer, encodeContainer, MAX_PUFFED_PER_COMPRESSED_BYTE } from './container.ts'
import { createArchiveDelta } from './create.ts'
import { EMPTY_CONTAINER } from './fuzz.ts'
import { puff, unpuff } from './puff.ts'

const match = (length: number, distance: number) => (length << 16) | distance

describe('puffed token streams', () => {
  it('round-trips tokens, block types, final flags and explicit headers', () => {
    const tokens = Uint32Array.from([
      ...Array.from({ length: 300 }, (_, i) => i & 0xff), // literal runs longer than one tag holds
      match(3, 1),
      match(258, 32768),
      65,
      match(10, 300),
    ])
    const blocks: Block[] = [
      { type: BLOCK_STORED, final: false, end: 200 },
      { type: BLOCK_FIXED, final: false, end: 200 }, // an empty block (a sync-flush marker)
      {
        type: BLOCK_DYNAMIC,
        final: false,
        end: 302,
        header: { bitLength: 13, bytes: Uint8Array.of(0xab, 0x1f) },
      },
      { type: BLOCK_DYNAMIC, final: true, end: tokens.length },
    ]
    const back = unpuff(puff({ tokens, blocks }))
    expect(back.tokens).toEqual(tokens)
    expect(back.blocks).toEqual(blocks)
  })

  it('keeps unchanged tokens as unchanged bytes, so a differ finds them', () => {
    const a = Uint32Array.from({ length: 1000 }, (_, i) =>
      i % 7 === 0 ? match(4 + (i % 50), 1 + i) : i & 0x7f,
    )
    const b = Uint32Array.from([...a.subarray(0, 500), 1, 2, 3, ...a.subarray(500)])
    const pa = puff({ tokens: a, blocks: [{ type: BLOCK_FIXED, final: true, end: a.length }] })
    const pb = puff({ tokens: b, blocks: [{ type: BLOCK_FIXED, final: true, end: b.length }] })
    // The tail after the edit is byte-identical in both forms.
    const tail = 400
    expect(pb.subarray(pb.length - tail)).toEqual(pa.subarray(pa.length - tail))
  })

  it('rejects damaged puffed bytes with DeltaFormatError and never allocates past the input', () => {
    const bad = [
      Uint8Array.of(3, 1, 0, 0), // block type 3
      Uint8Array.of(0x11, 0), // unknown descriptor bits
      Uint8Array.of(1 | 8, 0, 1, 0), // header on a fixed block
      Uint8Array.of(2 | 8, 0, 0), // zero-length header
      Uint8Array.of(1, 0xff, 0xff, 0xff, 0x0f), // token count beyond the bytes
      Uint8Array.of(1, 2, 5, 1, 2), // a literal run crossing its block's end
      Uint8Array.of(1, 1, 0x80, 0), // a truncated match
    ]
    for (const b of bad) expect(() => unpuff(b)).toThrow(DeltaFormatError)
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
        try {
          const { tokens } = unpuff(bytes)
          expect(tokens.length).toBeLessThanOrEqual(bytes.length)
        } catch (err) {
          expect(err).toBeInstanceOf(DeltaFormatError)
        }
      }),
      { numRuns: 3000 },
    )
  })
})

describe("a token segment's puffed length against its stream's", () => {
  const zeros = new Uint8Array(1 << 20)
  const alternating = new Uint8Array(1 << 20).map((_, i) => (i % 2 ? 97 : 98))
  const words = new TextEncoder().encode('hello world '.repeat(5000))
  const encoders: [string, (raw: Uint8Array) => Uint8Array][] = [
    ['pako 9', (raw) => deflateRaw(raw, { level: 9 })],
    ['pako 1', (raw) => deflateRaw(raw, { level: 1 })],
    ['pako fixed', (raw) => deflateRaw(raw, { level: 9, strategy: 4 })],
    ['pako rle', (raw) => deflateRaw(raw, { level: 9, strategy: 3 })],
    ['fflate 9', (raw) => deflateSync(raw, { level: 9 })],
    ['fflate stored', (raw) => deflateSync(raw, { level: 0 })],
  ]

  it('stays within the bound for the densest streams encoders make, at about half of it', () => {
    let densest = 0
    for (const raw of [zeros, alternating, words, Uint8Array.of(1), new Uint8Array(0)])
      for (const [name, encode] of encoders) {
        const compressed = encode(raw)
        const parsed = tryParseDeflate(compressed, raw.length, 'archive-stream')
        if (!parsed) throw new Error(`${name} made a stream the parser refuses`)
        const ratio = puff(parsed).length / compressed.length
        expect(ratio, name).toBeLessThanOrEqual(MAX_PUFFED_PER_COMPRESSED_BYTE)
        densest = Math.max(densest, ratio)
      }
    // 258-byte matches of ~2 bits each, 3 puffed bytes: ~12 a byte.
    expect(densest).toBeGreaterThan(11)
    expect(densest).toBeLessThan(MAX_PUFFED_PER_COMPRESSED_BYTE / 2)
  })

  it('is refused past the bound when the container is decoded (archive-container), at it accepted', () => {
    const limits = { maxTargetBytes: 1 << 20, maxExpandedBytes: 1 << 20 }
    const of = (puffLength: number) =>
      encodeContainer({
        ...EMPTY_CONTAINER,
        expandedLength: puffLength,
        targetLength: 100,
        segments: [{ kind: 'tokens', puffLength, compressedLength: 100 }],
      })
    expect(decodeContainer(of(100 * MAX_PUFFED_PER_COMPRESSED_BYTE), limits).segments).toHaveLength(1)
    let refusal: unknown
    try {
      decodeContainer(of(100 * MAX_PUFFED_PER_COMPRESSED_BYTE + 1), limits)
    } catch (error) {
      refusal = error
    }
    expect(refusal).toBeInstanceOf(DeltaFormatError)
    expect((refusal as DeltaFormatError).code).toBe('archive-container')
    expect((refusal as DeltaFormatError).message).toContain('puffed bytes for a 100-byte stream')
  })

  it("accepts an honest delta of the densest stream (fflate's gzip of zeros, a token segment)", () => {
    const source = fflateGzip(zeros, { level: 9, mtime: 0 })
    const edited = zeros.slice()
    edited.set(new TextEncoder().encode('an edit'), 500_000)
    const target = fflateGzip(edited, { level: 9, mtime: 0 })
    const made = createArchiveDelta(source, target)
    if (!('delta' in made)) throw new Error(made.notApplicable)
    const tokens = decodeContainer(made.delta, {
      maxTargetBytes: 1 << 30,
      maxExpandedBytes: 1 << 30,
    }).segments.filter((s) => s.kind === 'tokens')
    expect(tokens.length).toBeGreaterThan(0)
    expect(Math.max(...tokens.map((s) => s.puffLength / s.compressedLength))).toBeGreaterThan(8)
    expect(applyArchiveDelta(source, made.delta)).toEqual(target)
  })
})
