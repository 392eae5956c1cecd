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
