import { gzipSync } from 'fflate'
import { describe, expect, it } from 'vitest'
import { DeltaFormatError } from '../errors.ts'
import { DocReader } from '../test/doc-reader.ts'
import { type Container, decodeContainer, encodeContainer } from './container.ts'
import { createArchiveDelta } from './create.ts'

/**
 * An independent reader of the DPAR container written from the "Binary layout" table of
 * docs/formats/archive-delta.md (and its "Token segments" block head), run over containers our encoder
 * wrote and compared with decodeContainer. When the document and the code drift, it fails.
 */

interface DocBlock {
  type: number
  final: boolean
  end: number
  header?: { bitLength: number; bytes: Uint8Array }
}

function docBlocks(r: DocReader, count: number): DocBlock[] {
  const out: DocBlock[] = []
  let end = 0
  for (let i = 0; i < count; i++) {
    const d = r.u8()
    if (d & 0xf0 || (d & 3) === 3) throw new Error('descriptor')
    end += r.varint()
    const block: DocBlock = { type: d & 3, final: (d & 4) !== 0, end }
    if (d & 8) {
      const bitLength = r.varint()
      block.header = { bitLength, bytes: r.take(Math.ceil(bitLength / 8)) }
    }
    out.push(block)
  }
  return out
}

function docRead(bytes: Uint8Array) {
  const r = new DocReader(bytes, 8)
  if (String.fromCharCode(...r.take(4)) !== 'DPAR' || r.u8() !== 1) throw new Error('magic/version')
  const kind = r.u8()
  const flags = r.u8()
  if (flags & ~7) throw new Error('flags')
  const differId = new TextDecoder().decode(r.take(r.u8()))
  const sourceLength = r.varint()
  const sourceCrc = r.u32()
  const targetLength = r.varint()
  const targetCrc = r.u32()
  const expandedLength = r.varint()
  const params = Array.from({ length: r.varint() }, () => {
    const [level, memLevel, windowBits, strategy, hash] = [r.u8(), r.u8(), r.u8(), r.u8(), r.u8()]
    return { level, memLevel, windowBits, strategy, legacyHash: hash === 1 }
  })
  const segments: unknown[] = []
  let expandedSum = 0
  let targetSum = 0
  for (let n = r.varint(); n > 0; n--) {
    const tag = r.u8()
    if (tag === 0) {
      const length = r.varint()
      segments.push({ kind: 'literal', length })
      expandedSum += length
      targetSum += length
    } else if (tag === 2) {
      const puffLength = r.varint()
      const compressedLength = r.varint()
      segments.push({ kind: 'tokens', puffLength, compressedLength })
      expandedSum += puffLength
      targetSum += compressedLength
    } else {
      const rawLength = r.varint()
      const compressedLength = r.varint()
      const p = params[r.varint()]!
      expandedSum += rawLength
      targetSum += compressedLength
      if (tag === 1) {
        const checkpoints: { raw: number; bit: number }[] = []
        if (flags & 2) {
          let raw = 0
          let bit = 0
          for (let c = r.varint(); c > 0; c--) {
            raw += r.varint()
            bit += r.varint()
            checkpoints.push({ raw, bit })
          }
        }
        segments.push({
          kind: 'deflate',
          rawLength,
          compressedLength,
          params: p,
          ...(checkpoints.length > 0 ? { checkpoints } : {}),
        })
      } else if (tag === 3) {
        segments.push({
          kind: 'reblocked',
          rawLength,
          compressedLength,
          params: p,
          blocks: docBlocks(r, r.varint()),
        })
      } else if (tag === 4) {
        const count = r.varint()
        const blocks = count === 0 ? 'zlib' : docBlocks(r, count)
        const runs: { gap: number; source: number; count: number }[] = []
        let previousEnd = 0
        for (let k = r.varint(); k > 0; k--) {
          const gap = r.varint()
          const source = previousEnd + r.svarint()
          const tokens = r.varint()
          runs.push({ gap, source, count: tokens })
          previousEnd = source + tokens
        }
        segments.push({ kind: 'spliced', rawLength, compressedLength, params: p, blocks, runs })
      } else throw new Error(`tag ${tag}`)
    }
  }
  if (expandedSum !== expandedLength || targetSum !== targetLength) throw new Error('segment sums')
  const recipe = Array.from({ length: r.varint() }, () => ({ offset: r.varint(), length: r.varint() }))
  const innerLength = r.varint()
  const inner = r.take(r.varint())
  if (r.left !== 0) throw new Error('trailing bytes')
  return {
    sourceKind: kind === 1 ? 'gzip' : kind === 2 ? 'zip' : '?',
    differId,
    sourceLength,
    sourceCrc,
    targetLength,
    targetCrc,
    expandedLength,
    sourcePuffed: (flags & 4) !== 0,
    segments,
    recipe,
    inner,
    innerDeflated: (flags & 1) !== 0,
    innerLength,
  }
}

const limits = { maxTargetBytes: 1 << 30, maxExpandedBytes: 1 << 30 }

function decodedFields(bytes: Uint8Array) {
  const { tableEntries: _e, tableCharge: _c, deltaCharge: _d, ...fields } = decodeContainer(bytes, limits)
  return fields
}

const zlib = { level: 9, memLevel: 8, windowBits: 15, strategy: 0, legacyHash: false }
const gnu = { level: 6, memLevel: 8, windowBits: 15, strategy: 0, legacyHash: true }

/** Every segment kind, both block-list forms, explicit headers, checkpoints and signed run sources. */
const everything: Container = {
  sourceKind: 'zip',
  differId: 'approx',
  sourceLength: 300_000,
  sourceCrc: 0xdeadbeef,
  targetLength: 7 + 40 + 20_000 + 30 + 9_000 + 20,
  targetCrc: 0x01020304,
  expandedLength: 7 + 100 + 50_000 + 60 + 20_000 + 10_000,
  sourcePuffed: true,
  segments: [
    { kind: 'literal', length: 7 },
    { kind: 'deflate', rawLength: 100, compressedLength: 40, params: zlib },
    {
      kind: 'deflate',
      rawLength: 50_000,
      compressedLength: 20_000,
      params: gnu,
      checkpoints: [
        { raw: 20_000, bit: 70_000 },
        { raw: 35_000, bit: 120_001 },
      ],
    },
    { kind: 'tokens', puffLength: 60, compressedLength: 30 },
    {
      kind: 'reblocked',
      rawLength: 20_000,
      compressedLength: 9_000,
      params: gnu,
      blocks: [
        {
          type: 2,
          final: false,
          end: 3000,
          header: { bitLength: 300, bytes: new Uint8Array(38).fill(0x5a) },
        },
        { type: 0, final: false, end: 3100 },
        { type: 1, final: true, end: 5000 },
      ],
    },
    {
      kind: 'spliced',
      rawLength: 10_000,
      compressedLength: 20,
      params: zlib,
      blocks: 'zlib',
      runs: [
        { gap: 10, source: 5000, count: 40 },
        { gap: 0, source: 100, count: 50 },
      ],
    },
  ],
  recipe: [
    { offset: 0, length: 1000 },
    { offset: 5000, length: 200_000 },
  ],
  inner: Uint8Array.from({ length: 50 }, (_, i) => i * 7),
  innerDeflated: true,
  innerLength: 4000,
}

describe('docs/formats/archive-delta.md describes the containers encodeContainer writes', () => {
  it('every segment kind and flag: an independent reader agrees with decodeContainer', () => {
    const bytes = encodeContainer(everything)
    expect(bytes[6]).toBe(1 | 2 | 4)
    expect(docRead(bytes)).toEqual(decodedFields(bytes))
    const spliced = encodeContainer({
      ...everything,
      segments: everything.segments.map((s) =>
        s.kind === 'spliced' ? { ...s, blocks: [{ type: 1 as const, final: true, end: 90 }] } : s,
      ),
    })
    expect(docRead(spliced)).toEqual(decodedFields(spliced))
  })

  it('a real gzip delta: the reader agrees with decodeContainer', () => {
    const text = (n: number) =>
      new TextEncoder().encode(Array.from({ length: n }, (_, i) => `line ${i} of the changelog\n`).join(''))
    const a = gzipSync(text(4000), { level: 9 })
    const b = gzipSync(text(4100), { level: 9 })
    const result = createArchiveDelta(a, b)
    if (!('delta' in result)) throw new Error('not applicable')
    expect(docRead(result.delta)).toEqual(decodedFields(result.delta))
  })

  it('refuses what the table forbids with the documented codes', () => {
    const bytes = encodeContainer(everything)
    const code = (b: Uint8Array) => {
      try {
        decodeContainer(b, limits)
        return 'accepted'
      } catch (e) {
        return e instanceof DeltaFormatError ? e.code : 'other'
      }
    }
    const edit = (at: number, value: number) => Uint8Array.from(bytes, (x, i) => (i === at ? value : x))
    expect(code(edit(0, 0))).toBe('archive-magic')
    expect(code(edit(4, 2))).toBe('archive-version')
    expect(code(edit(5, 3))).toBe('archive-container') // source kind
    expect(code(edit(6, 8 | 7))).toBe('archive-container') // unknown flag
    expect(code(edit(7, 0))).toBe('archive-container') // empty differ id
    expect(code(bytes.subarray(0, bytes.length - 1))).toBe('archive-container')
    expect(code(Uint8Array.from([...bytes, 0]))).toBe('archive-container')
    expect(code(encodeContainer({ ...everything, innerDeflated: false }))).toBe('archive-container') // inner lengths
    expect(() => decodeContainer(bytes, { ...limits, maxExpandedBytes: 70_000 })).toThrow(
      expect.objectContaining({ code: 'archive-limit' }),
    )
  })
})
