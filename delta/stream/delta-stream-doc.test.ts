import { describe, expect, it } from 'vitest'
import { DeltaFormatError } from '../errors.ts'
import { collectingSink } from '../io.ts'
import { bitwiseCrc32, CRC32C } from '../test/doc-reader.ts'
import { seededBytes as data } from '../test/seeded-bytes.ts'
import {
  decodeControlBlock,
  encodeControlBlock,
  frameStream,
  readHeader,
  StreamReassembler,
} from './index.ts'

/**
 * An independent reader of docs/formats/delta-stream.md: it parses the bytes our framer writes using only
 * what the document says (header table, CRC32C parameters, stream layout, metadata rules, the parity
 * field and matrix) and must agree with our reassembler. When the document and the code drift, it fails.
 */

const docCrc32c = (bytes: Uint8Array) => bitwiseCrc32(bytes, CRC32C)

/** GF(2^8) with polynomial 0x11D, multiplication by shift-and-add. */
function gfMul(a: number, b: number): number {
  let p = 0
  for (; b > 0; b >>= 1) {
    if (b & 1) p ^= a
    a <<= 1
    if (a & 0x100) a ^= 0x11d
  }
  return p
}

function gfInv(a: number): number {
  for (let x = 1; x < 256; x++) if (gfMul(a, x) === 1) return x
  throw new Error('0 has no inverse')
}

interface DocHeader {
  magic: number
  type: number
  flags: number
  reserved3: number
  sequence: number
  group: number
  indexInGroup: number
  reserved14: number
  payloadLength: number
  streamTag: number
  payloadCrc: number
  headerCrc: number
}

function docHeader(b: Uint8Array): DocHeader {
  const v = new DataView(b.buffer, b.byteOffset, 32)
  return {
    magic: v.getUint8(0),
    type: v.getUint8(1),
    flags: v.getUint8(2),
    reserved3: v.getUint8(3),
    sequence: v.getUint32(4, true),
    group: v.getUint32(8, true),
    indexInGroup: v.getUint16(12, true),
    reserved14: v.getUint16(14, true),
    payloadLength: v.getUint32(16, true),
    streamTag: v.getUint32(20, true),
    payloadCrc: v.getUint32(24, true),
    headerCrc: v.getUint32(28, true),
  }
}

interface DocMeta {
  payloadLength: number
  sha256: string
  blockSize: number
  k: number
  m: number
  controlBlocks: number
  blockCount: number
  [key: string]: unknown
}

/** Reads a whole stream as the document describes it; throws on anything the document forbids. */
function docReadStream(wire: Uint8Array): { meta: DocMeta; payload: Uint8Array; hints: unknown[] } {
  const need = (ok: boolean, what: string) => {
    if (!ok) throw new Error(what)
  }
  const h0 = docHeader(wire)
  need(h0.headerCrc === docCrc32c(wire.subarray(0, 28)), 'header crc')
  need(h0.magic === 0xd1 && h0.type === 1 && h0.sequence === 0, 'block 0')
  const meta = JSON.parse(new TextDecoder().decode(wire.subarray(32, 32 + h0.payloadLength))) as DocMeta
  need(meta.format === 'deltaport-stream' && meta.version === 1, 'format')
  need(/^[0-9a-f]{64}$/.test(meta.sha256), 'sha256')
  need(h0.streamTag === Number.parseInt(meta.sha256.slice(0, 8), 16), 'stream tag')
  const { blockSize: B, k, m, controlBlocks: c, payloadLength } = meta
  need(B >= 512 && B <= 16 * 1024 * 1024 && k >= 1 && m >= 0 && k + m <= 256 && c >= 0 && c <= 16, 'params')
  const F = 32 + B
  const D = Math.ceil(payloadLength / B)
  const G = Math.ceil(D / k)
  need(meta.blockCount === 1 + c + D + G * m && wire.length === meta.blockCount * F, 'block count')
  const areas: Uint8Array[] = []
  const headers: DocHeader[] = []
  for (let n = 0; n < meta.blockCount; n++) {
    const block = wire.subarray(n * F, (n + 1) * F)
    const h = docHeader(block)
    need(h.headerCrc === docCrc32c(block.subarray(0, 28)), `block ${n} header crc`)
    need(
      h.magic === 0xd1 && h.reserved3 === 0 && h.reserved14 === 0 && (h.flags & ~1) === 0,
      `block ${n} bits`,
    )
    need(h.sequence === n && h.streamTag === h0.streamTag && h.payloadLength <= B, `block ${n} place`)
    need(h.payloadCrc === docCrc32c(block.subarray(32)), `block ${n} payload crc`)
    headers.push(h)
    areas.push(block.subarray(32))
  }
  const hints: unknown[] = []
  for (let n = 1; n <= c; n++) {
    need(headers[n]!.type === 2, 'control type')
    hints.push(JSON.parse(new TextDecoder().decode(areas[n]!.subarray(0, headers[n]!.payloadLength))))
  }
  const payload = new Uint8Array(payloadLength)
  for (let g = 0; g < G; g++) {
    const first = 1 + c + g * (k + m)
    const kk = Math.min(k, D - g * k)
    for (let j = 0; j < kk; j++) {
      const d = g * k + j
      const h = headers[first + j]!
      need(h.type === 3 && h.group === g && h.indexInGroup === j, `data ${d} slot`)
      need(h.flags === (d === D - 1 ? 1 : 0), `data ${d} flags`)
      need(h.payloadLength === Math.min(B, payloadLength - d * B), `data ${d} length`)
      const area = areas[first + j]!
      need(
        area.subarray(h.payloadLength).every((x) => x === 0),
        `data ${d} padding`,
      )
      payload.set(area.subarray(0, h.payloadLength), d * B)
    }
    for (let i = 0; i < m; i++) {
      const h = headers[first + kk + i]!
      need(
        h.type === 4 && h.group === g && h.indexInGroup === kk + i && h.payloadLength === B,
        `parity ${g}/${i}`,
      )
      // Parity i = Σ_j C[i][j]·data_j with C[i][j] = 1 / ((255 - i) XOR j).
      const expected = new Uint8Array(B)
      for (let j = 0; j < kk; j++) {
        const coefficient = gfInv((255 - i) ^ j)
        const data = areas[first + j]!
        for (let x = 0; x < B; x++) expected[x]! ^= gfMul(coefficient, data[x]!)
      }
      need(
        expected.every((x, at) => x === areas[first + kk + i]![at]),
        `parity ${g}/${i} bytes`,
      )
    }
  }
  return { meta, payload, hints }
}

const input = { artifact: 'app', fromVersion: '1.0.0', toVersion: '1.1.0', method: 'vcdiff', blockSize: 512 }

describe('docs/formats/delta-stream.md describes the bytes our framer writes', () => {
  const cases: [string, number, number, number, object][] = [
    ['empty payload', 0, 4, 2, {}],
    ['one short block', 50, 16, 1, {}],
    ['short last group', 512 * 7 + 100, 3, 2, {}],
    ['no parity, control hints', 512 * 5, 2, 0, { hints: { retryAfterMs: 250, recommendedChunkSize: 4096 } }],
    ['k + m = 256', 512 * 3, 200, 56, { fromVersion: null }],
  ]
  it.each(cases)('%s: an independent reader agrees with StreamReassembler', async (_, n, k, m, extra) => {
    const payload = data(n, n + 1)
    const wire = await frameStream(payload, { ...input, ...extra }, { k, m })
    const doc = docReadStream(wire)
    expect(doc.payload).toEqual(payload)
    const sink = collectingSink()
    const reader = new StreamReassembler(sink)
    await reader.push(0, wire)
    expect((await reader.report()).payloadVerified).toBe(true)
    expect(sink.bytes()).toEqual(doc.payload)
    expect(doc.meta).toEqual(reader.metadata)
    expect(doc.hints).toEqual('hints' in extra ? [extra.hints] : [])
  })

  it('a standalone control block is framed at the given block size with sequence 0', () => {
    const frame = encodeControlBlock({ retryAfterMs: 2000 }, 512)
    const h = docHeader(frame)
    expect(frame.length).toBe(32 + 512)
    expect([h.magic, h.type, h.sequence, h.group, h.indexInGroup, h.streamTag]).toEqual([0xd1, 2, 0, 0, 0, 0])
    expect(h.payloadCrc).toBe(docCrc32c(frame.subarray(32)))
    expect(JSON.parse(new TextDecoder().decode(frame.subarray(32, 32 + h.payloadLength)))).toEqual(
      decodeControlBlock(frame, 512),
    )
  })

  it('readHeader refuses every header the document forbids, as stream.bad-header', async () => {
    const wire = await frameStream(data(600, 3), input, { k: 2, m: 1 })
    const block = wire.subarray(0, 32)
    const reseal = (edit: (b: Uint8Array) => void) => {
      const b = block.slice()
      edit(b)
      new DataView(b.buffer).setUint32(28, docCrc32c(b.subarray(0, 28)), true)
      return b
    }
    const refused = [
      block.subarray(0, 31),
      Uint8Array.from(block, (x, i) => (i === 8 ? x ^ 1 : x)), // header CRC
      reseal((b) => {
        b[0] = 0xd2
      }),
      reseal((b) => {
        b[1] = 0
      }),
      reseal((b) => {
        b[1] = 5
      }),
      reseal((b) => {
        b[2] = 2
      }),
      reseal((b) => {
        b[3] = 1
      }),
      reseal((b) => {
        b[15] = 1
      }),
    ]
    for (const b of refused) {
      expect(() => readHeader(b)).toThrow(DeltaFormatError)
      try {
        readHeader(b)
      } catch (e) {
        expect((e as DeltaFormatError).code).toBe('stream.bad-header')
      }
    }
    const finalFlag = reseal((b) => {
      b[2] = 1
    })
    expect(readHeader(finalFlag).flags).toBe(1)
  })

  /** `wire` with block `n`'s header edited and its header CRC made good again. */
  const editHeader = (wire: Uint8Array, n: number, edit: (h: DataView) => void) => {
    const out = wire.slice()
    const h = new DataView(out.buffer, n * (32 + 512), 32)
    edit(h)
    h.setUint32(28, docCrc32c(out.subarray(n * (32 + 512), n * (32 + 512) + 28)), true)
    return out
  }

  it('non-data blocks carry no flag and no group slot: a block that does is an erasure', async () => {
    const payload = data(512 * 3, 6)
    const wire = await frameStream(payload, { ...input, hints: { retryAfterMs: 1 } }, { k: 3, m: 1 })
    // Blocks: 0 metadata, 1 control, 2..4 data, 5 parity.
    const damaged = [
      editHeader(wire, 5, (h) => h.setUint8(2, 1)), // parity with the final flag
      editHeader(wire, 1, (h) => h.setUint8(2, 1)), // control with the final flag
      editHeader(wire, 1, (h) => h.setUint32(8, 1, true)), // control in a group
      editHeader(wire, 1, (h) => h.setUint16(12, 2, true)), // control with an index
    ]
    for (const [i, bytes] of damaged.entries()) {
      const sink = collectingSink()
      const reader = new StreamReassembler(sink)
      await reader.push(0, bytes)
      const report = await reader.report()
      expect(report.corruptBlocks, `case ${i}`).toEqual([i === 0 ? 5 : 1])
      expect(report.payloadVerified, `case ${i}`).toBe(true)
      expect(sink.bytes()).toEqual(payload)
    }
  })

  it('block 0 with a flag or a group slot is refused as stream.bad-metadata', async () => {
    const wire = await frameStream(data(700, 8), input, { k: 2, m: 1 })
    for (const edit of [
      (h: DataView) => h.setUint8(2, 1),
      (h: DataView) => h.setUint32(8, 1, true),
      (h: DataView) => h.setUint16(12, 1, true),
    ]) {
      const reader = new StreamReassembler(collectingSink())
      await expect(reader.push(0, editHeader(wire, 0, edit))).rejects.toMatchObject({
        code: 'stream.bad-metadata',
      })
    }
  })

  it('a standalone control block has sequence, group, index and flags 0, else stream.bad-control', () => {
    const frame = encodeControlBlock({ retryAfterMs: 10 }, 512)
    for (const edit of [
      (h: DataView) => h.setUint32(4, 1, true),
      (h: DataView) => h.setUint32(8, 1, true),
      (h: DataView) => h.setUint16(12, 1, true),
      (h: DataView) => h.setUint8(2, 1),
    ]) {
      expect(() => decodeControlBlock(editHeader(frame, 0, edit), 512)).toThrow(
        expect.objectContaining({ code: 'stream.bad-control' }),
      )
    }
  })

  it('a data block with the final flag misplaced is an erasure (repaired by parity)', async () => {
    const payload = data(512 * 3, 5)
    const wire = await frameStream(payload, input, { k: 3, m: 1 })
    const F = 32 + 512
    const bad = wire.slice()
    const first = bad.subarray(F, F + 32) // block 1: data 0, not the final one
    first[2] = 1
    new DataView(first.buffer, first.byteOffset).setUint32(28, docCrc32c(first.subarray(0, 28)), true)
    const sink = collectingSink()
    const reader = new StreamReassembler(sink)
    await reader.push(0, bad)
    expect((await reader.report()).corruptBlocks).toEqual([1])
    expect(sink.bytes()).toEqual(payload)
  })
})
