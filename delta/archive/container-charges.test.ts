import { describe, expect, it } from 'vitest'
import { DeltaFormatError } from '../errors.ts'
import { type Container, decodeContainer, encodeContainer } from './container.ts'
import { archiveSize, expandedSize, type Segment } from './expand.ts'
import { EMPTY_CONTAINER } from './fuzz.ts'
import type { TableEntryCharges } from './limits.ts'
import { MIN_RUN_BYTES } from './splice.ts'

const params = { level: 6, memLevel: 8, windowBits: 15, strategy: 0, legacyHash: false }
const header = { bitLength: 8, bytes: new Uint8Array([1]) }

/** One segment of every kind, lists of every kind (one empty), one block header and three recipe ranges. */
const segments: Segment[] = [
  { kind: 'literal', length: 3 },
  { kind: 'tokens', puffLength: 5, compressedLength: 2 },
  {
    kind: 'deflate',
    rawLength: 100,
    compressedLength: 100,
    params,
    checkpoints: [
      { raw: 10, bit: 10 },
      { raw: 20, bit: 20 },
    ],
  },
  {
    kind: 'reblocked',
    rawLength: 2,
    compressedLength: 3,
    params,
    blocks: [
      { type: 1, final: false, end: 1 },
      { type: 2, final: true, end: 2, header },
    ],
  },
  {
    kind: 'spliced',
    rawLength: MIN_RUN_BYTES,
    compressedLength: 10,
    params,
    blocks: 'zlib',
    runs: [{ gap: 0, source: 0, count: 1 }],
  },
  {
    kind: 'spliced',
    rawLength: 1,
    compressedLength: 3,
    params,
    blocks: [{ type: 1, final: true, end: 1 }],
    runs: [],
  },
]
const container: Container = {
  ...EMPTY_CONTAINER,
  targetLength: segments.reduce((sum, s) => sum + archiveSize(s), 0),
  expandedLength: segments.reduce((sum, s) => sum + expandedSize(s), 0),
  segments,
  recipe: [
    { offset: 0, length: 1 },
    { offset: 2, length: 1 },
    { offset: 4, length: 1 },
  ],
}

/** A power of two per kind, so the total names what was charged how often. */
const charges: TableEntryCharges = {
  parameterSet: 1,
  literal: 2,
  tokens: 4,
  deflate: 8,
  reblocked: 16,
  spliced: 32,
  list: 64,
  checkpoint: 128,
  block: 256,
  blockHeader: 512,
  run: 1024,
  range: 2048,
  boxedCheckpoint: 4096,
}
const c = charges
/** One parameter set; the deflate segment's checkpoint list, the reblocked one's blocks (one with a
 * header), the first spliced one's runs and the second's blocks; its empty runs are no list. */
const expected =
  c.parameterSet +
  c.literal +
  c.tokens +
  (c.deflate + c.list + 2 * c.checkpoint) +
  (c.reblocked + c.list + 2 * c.block + c.blockHeader) +
  (c.spliced + c.list + c.run) +
  (c.spliced + c.list + c.block) +
  3 * c.range

describe('container tables charged by kind', () => {
  const delta = encodeContainer(container)
  const roomy = { maxTargetBytes: 1 << 20, maxExpandedBytes: 1 << 20 }

  it('charges each entry its kind, each non-empty list and each block header once', () => {
    const decoded = decodeContainer(delta, { ...roomy, tableEntryCharges: charges })
    expect(decoded.tableCharge).toBe(expected)
    expect(decoded.tableEntries).toBe(1 + 6 + 2 + 2 + 1 + 1 + 3)
  })

  it('charges nothing by default', () => {
    expect(decodeContainer(delta, roomy).tableCharge).toBe(0)
  })

  it('refuses tables whose charge does not fit with the expanded target, by one byte', () => {
    const exact = {
      ...roomy,
      maxExpandedBytes: container.expandedLength + expected,
      tableEntryCharges: charges,
    }
    expect(decodeContainer(delta, exact).tableCharge).toBe(expected)
    let refusal: unknown
    try {
      decodeContainer(delta, { ...exact, maxExpandedBytes: exact.maxExpandedBytes - 1 })
    } catch (error) {
      refusal = error
    }
    expect(refusal).toBeInstanceOf(DeltaFormatError)
    expect((refusal as DeltaFormatError).code).toBe('archive-limit')
  })
})

describe('checkpoints whose bit offsets may be boxed', () => {
  const roomy = { maxTargetBytes: 2 ** 40, maxExpandedBytes: 2 ** 40, tableEntryCharges: charges }
  const of = (compressedLength: number) =>
    encodeContainer({
      ...EMPTY_CONTAINER,
      expandedLength: compressedLength,
      targetLength: compressedLength,
      segments: [
        {
          kind: 'deflate',
          rawLength: compressedLength,
          compressedLength,
          params,
          checkpoints: [
            { raw: 1, bit: 1 },
            { raw: 2, bit: compressedLength * 8 - 1 },
          ],
        },
      ],
    })

  it('charges them boxed in a stream over 256 MiB, whose last bit is past 2^31 - 1, and not below', () => {
    // 2^28 bytes: bits up to 2^31 - 1, small integers all.
    expect(decodeContainer(of(2 ** 28), roomy).tableCharge).toBe(
      c.parameterSet + c.deflate + c.list + 2 * c.checkpoint,
    )
    expect(decodeContainer(of(2 ** 28 + 1), roomy).tableCharge).toBe(
      c.parameterSet + c.deflate + c.list + 2 * c.boxedCheckpoint,
    )
  })
})

describe("the delta's own bytes charged", () => {
  const roomy = { maxTargetBytes: 1 << 20, maxExpandedBytes: 1 << 20, tableEntryCharges: charges }
  const deflated: Container = {
    ...container,
    innerDeflated: true,
    inner: new Uint8Array(1000),
    innerLength: 5000,
  }

  it('at deltaBytesPerExpandedByte, rounded up: the container as given and the inflated inner delta', () => {
    const plain = encodeContainer({ ...container, inner: new Uint8Array(1000), innerLength: 1000 })
    const held = decodeContainer(plain, { ...roomy, deltaBytesPerExpandedByte: 6 })
    expect(held.deltaCharge).toBe(Math.ceil(plain.length / 6))
    expect(held.tableCharge).toBe(expected)
    const bytes = encodeContainer(deflated)
    expect(decodeContainer(bytes, { ...roomy, deltaBytesPerExpandedByte: 6 }).deltaCharge).toBe(
      Math.ceil(bytes.length / 6) + Math.ceil(5000 / 6),
    )
    expect(decodeContainer(bytes, roomy).deltaCharge).toBe(0)
  })

  it('refuses a delta whose bytes do not fit with the tables and the expanded target, by one byte', () => {
    const bytes = encodeContainer(deflated)
    const charge = Math.ceil(bytes.length / 6) + Math.ceil(5000 / 6)
    const exact = {
      ...roomy,
      maxExpandedBytes: container.expandedLength + expected + charge,
      deltaBytesPerExpandedByte: 6,
    }
    expect(decodeContainer(bytes, exact).deltaCharge).toBe(charge)
    const refusal = (() => {
      try {
        decodeContainer(bytes, { ...exact, maxExpandedBytes: exact.maxExpandedBytes - 1 })
      } catch (error) {
        return error
      }
    })()
    expect(refusal).toBeInstanceOf(DeltaFormatError)
    expect((refusal as DeltaFormatError).code).toBe('archive-limit')
  })

  it('refuses a delta longer than its limit allows before reading a table (a cut one behind its header)', () => {
    // Cut inside the tables: a decode that reached them would say archive-container (truncated).
    const broken = encodeContainer(container).subarray(0, 40)
    expect(() => decodeContainer(broken, roomy)).toThrow(
      expect.objectContaining({ code: 'archive-container' }),
    )
    const limits = {
      ...roomy,
      maxExpandedBytes: container.expandedLength + Math.ceil(40 / 6) - 1,
      deltaBytesPerExpandedByte: 6,
    }
    const refusal = (() => {
      try {
        decodeContainer(broken, limits)
      } catch (error) {
        return error
      }
    })()
    expect((refusal as DeltaFormatError).code).toBe('archive-limit')
    expect((refusal as DeltaFormatError).message).toContain("the archive delta's 40 bytes")
  })
})
