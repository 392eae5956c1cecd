import { describe, expect, it } from 'vitest'
import { DeltaFormatError } from '../errors.ts'
import { bitwiseCrc32, CRC32C } from '../test/doc-reader.ts'
import { seededBytes as data } from '../test/seeded-bytes.ts'
import {
  buildChunkIndex,
  type ChunkerOptions,
  chunkLengths,
  decodeChunkIndex,
  encodeChunkIndex,
} from './index.ts'

/**
 * A second, independent chunker and reader written from docs/formats/chunk-index.md alone (nothing of
 * delta/chunking or delta/stream is used to read the bytes), run over what our encoder produced and
 * compared with our decoder. When the document and the code drift apart, this fails.
 */

const docCrc32c = (bytes: Uint8Array) => bitwiseCrc32(bytes, CRC32C)

/** The gear table from the document's splitmix32 recipe. */
function docGear(): Uint32Array {
  const gear = new Uint32Array(256)
  let state = 0x9e3779b9
  for (let i = 0; i < 256; i++) {
    state = (state + 0x9e3779b9) >>> 0
    let z = state
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0
    gear[i] = (z ^ (z >>> 16)) >>> 0
  }
  return gear
}

/** The top `bits` bits of a 32-bit word. */
function top(bits: number): number {
  return bits <= 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0
}

/** FastCDC exactly as the document's "Chunking" section spells it out. */
function docChunk(data: Uint8Array, o: ChunkerOptions): number[] {
  const gear = docGear()
  const bits = Math.round(Math.log2(o.avgSize))
  const maskS = top(bits + 2)
  const maskL = top(bits - 2)
  const out: number[] = []
  for (let start = 0; start < data.length; ) {
    const n = data.length - start
    let length = Math.min(n, o.maxSize)
    if (n > o.minSize) {
      let h = 0
      for (let i = o.minSize; i < Math.min(n, o.maxSize); i++) {
        h = (((h << 1) >>> 0) + gear[data[start + i]!]!) >>> 0
        const mask = i < o.avgSize ? maskS : maskL
        if ((h & mask) >>> 0 === 0) {
          length = i + 1
          break
        }
      }
    } else length = n
    out.push(length)
    start += length
  }
  return out
}

interface DocIndex {
  minSize: number
  avgSize: number
  maxSize: number
  totalLength: number
  chunks: { offset: number; length: number; hash: string }[]
}

/** The binary layout table, read field by field. Returns null where the document says "refuse". */
function docRead(bytes: Uint8Array): DocIndex | null {
  if (bytes.length < 36) return null
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.length)
  if (String.fromCharCode(...bytes.subarray(0, 4)) !== 'DPCX') return null
  if (bytes[4] !== 1 || bytes[5] !== 1 || v.getUint16(6, true) !== 0) return null
  const n = v.getUint32(20, true)
  if (bytes.length !== 36 + 20 * n) return null
  if (v.getUint32(32 + 20 * n, true) !== docCrc32c(bytes.subarray(0, 32 + 20 * n))) return null
  const [minSize, avgSize, maxSize] = [8, 12, 16].map((at) => v.getUint32(at, true)) as [
    number,
    number,
    number,
  ]
  const totalLength = v.getUint32(24, true) + v.getUint32(28, true) * 2 ** 32
  if (!Number.isSafeInteger(totalLength)) return null
  const chunks: DocIndex['chunks'] = []
  let offset = 0
  for (let i = 0; i < n; i++) {
    const at = 32 + 20 * i
    const length = v.getUint32(at, true)
    if (length < 1 || length > maxSize) return null
    const hash = [...bytes.subarray(at + 4, at + 20)].map((b) => b.toString(16).padStart(2, '0')).join('')
    chunks.push({ offset, length, hash })
    offset += length
  }
  if (offset !== totalLength) return null
  return { minSize, avgSize, maxSize, totalLength, chunks }
}

async function docHash(chunk: Uint8Array): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', chunk as Uint8Array<ArrayBuffer>))
  return [...digest.subarray(0, 16)].map((b) => b.toString(16).padStart(2, '0')).join('')
}

const chunkers: ChunkerOptions[] = [
  { minSize: 2048, avgSize: 8192, maxSize: 65536 },
  { minSize: 256, avgSize: 1024, maxSize: 8192 },
  { minSize: 64, avgSize: 300, maxSize: 700 }, // avgSize not a power of two: bits are rounded
  { minSize: 100, avgSize: 100, maxSize: 100 },
]

describe('docs/formats/chunk-index.md describes the bytes our encoder writes', () => {
  it.each(chunkers)('an independent FastCDC from the document cuts where ours does (%o)', (o) => {
    for (const n of [0, 1, o.minSize, o.minSize + 1, 300_000]) {
      const bytes = data(n, n + 7)
      expect(docChunk(bytes, o)).toEqual(chunkLengths(bytes, o))
    }
  })

  it.each(chunkers)('an independent reader decodes our index like our decoder does (%o)', async (o) => {
    for (const n of [0, 5, 200_000]) {
      const artifact = data(n, 3 * n + 1)
      const index = await buildChunkIndex(artifact, o)
      const bytes = encodeChunkIndex(index)
      const doc = docRead(bytes)
      expect(doc).not.toBeNull()
      const ours = decodeChunkIndex(bytes)
      expect(doc).toEqual({ ...ours.chunker, totalLength: ours.totalLength, chunks: ours.chunks })
      for (const c of doc!.chunks)
        expect(c.hash).toBe(await docHash(artifact.subarray(c.offset, c.offset + c.length)))
      // Reserved bytes 6..7 are written 0.
      expect([bytes[6], bytes[7]]).toEqual([0, 0])
    }
  })

  it('both readers refuse what the document says to refuse, with the documented codes', async () => {
    const good = encodeChunkIndex(await buildChunkIndex(data(50_000, 9), chunkers[1]))
    const reseal = (b: Uint8Array) => {
      const v = new DataView(b.buffer, b.byteOffset, b.length)
      v.setUint32(b.length - 4, docCrc32c(b.subarray(0, b.length - 4)), true)
      return b
    }
    const cases: [string, Uint8Array, string][] = [
      ['short', good.subarray(0, 35), 'chunking.bad-index'],
      ['magic', reseal(Uint8Array.from(good, (b, i) => (i === 0 ? 0x45 : b))), 'chunking.bad-index'],
      ['version', reseal(Uint8Array.from(good, (b, i) => (i === 4 ? 2 : b))), 'chunking.bad-index'],
      ['hash algorithm', reseal(Uint8Array.from(good, (b, i) => (i === 5 ? 2 : b))), 'chunking.bad-index'],
      ['reserved', reseal(Uint8Array.from(good, (b, i) => (i === 7 ? 1 : b))), 'chunking.bad-index'],
      ['crc', Uint8Array.from(good, (b, i) => (i === 40 ? b ^ 1 : b)), 'chunking.bad-index'],
      [
        'size',
        reseal(Uint8Array.from([...good.subarray(0, good.length - 4), 0, 0, 0, 0, 0])),
        'chunking.bad-index',
      ],
      [
        'zero-length chunk',
        reseal(Uint8Array.from(good, (b, i) => (i >= 32 && i < 36 ? 0 : b))),
        'chunking.bad-index',
      ],
      ['total length', reseal(Uint8Array.from(good, (b, i) => (i === 24 ? b ^ 1 : b))), 'chunking.bad-index'],
      [
        'minSize > avgSize',
        reseal(Uint8Array.from(good, (b, i) => (i === 9 ? 0x10 : b))),
        'chunking.bad-params',
      ],
    ]
    for (const [what, bytes, code] of cases) {
      const error = (() => {
        try {
          decodeChunkIndex(bytes)
          return null
        } catch (e) {
          return e
        }
      })()
      expect(error, what).toBeInstanceOf(DeltaFormatError)
      expect((error as DeltaFormatError).code, what).toBe(code)
      // chunker parameters are checked by our decoder only (the reader above does not validate them).
      if (code === 'chunking.bad-index') expect(docRead(bytes), what).toBeNull()
    }
  })
})
