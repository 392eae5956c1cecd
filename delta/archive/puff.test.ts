import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { BLOCK_DYNAMIC, BLOCK_FIXED, BLOCK_STORED, type Block } from '../deflate/parse-types.ts'
import { DeltaFormatError } from '../errors.ts'
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
