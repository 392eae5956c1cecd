import { describe, expect, it } from 'vitest'
import { DeltaFormatError } from '../errors.ts'
import { bitwiseCrc32, CRC32C } from '../test/doc-reader.ts'
import { decodeChunkIndex } from './index.ts'

/**
 * docs/formats/chunk-index.md, written by hand: a DPCX index laid out from the table (little-endian
 * fields, 20-byte entries, CRC32C trailer), not by encodeChunkIndex. decodeChunkIndex must read the
 * documented values, and refuse each documented fault with the documented code, in the documented order.
 */

const u32 = (v: number) => [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, v >>> 24]
const hash = (seed: number) => Array.from({ length: 16 }, (_, i) => (seed * 31 + i * 7) & 0xff)
const hex = (b: number[]) => b.map((x) => x.toString(16).padStart(2, '0')).join('')

interface Spec {
  min?: number
  avg?: number
  max?: number
  lengths?: number[]
  total?: [low: number, high: number]
}

function index(s: Spec = {}): Uint8Array {
  const lengths = s.lengths ?? [100, 50]
  const total = s.total ?? [lengths.reduce((a, b) => a + b, 0), 0]
  const body = [
    ...[0x44, 0x50, 0x43, 0x58],
    1,
    1,
    0,
    0,
    ...u32(s.min ?? 64),
    ...u32(s.avg ?? 128),
    ...u32(s.max ?? 256),
    ...u32(lengths.length),
    ...u32(total[0]),
    ...u32(total[1]),
    ...lengths.flatMap((l, i) => [...u32(l), ...hash(i)]),
  ]
  return Uint8Array.from([...body, ...u32(bitwiseCrc32(Uint8Array.from(body), CRC32C))])
}

function code(bytes: Uint8Array): string {
  try {
    decodeChunkIndex(bytes)
  } catch (e) {
    expect(e).toBeInstanceOf(DeltaFormatError)
    return (e as DeltaFormatError).code
  }
  return 'accepted'
}

describe('docs/formats/chunk-index.md: a hand-written index', () => {
  it('decodes to the documented fields; offsets are the sums of the lengths before', () => {
    const bytes = index()
    expect(bytes.length).toBe(36 + 20 * 2)
    expect(decodeChunkIndex(bytes)).toEqual({
      chunker: { minSize: 64, avgSize: 128, maxSize: 256 },
      totalLength: 150,
      chunks: [
        { offset: 0, length: 100, hash: hex(hash(0)) },
        { offset: 100, length: 50, hash: hex(hash(1)) },
      ],
    })
    expect(decodeChunkIndex(index({ lengths: [] }))).toEqual({
      chunker: { minSize: 64, avgSize: 128, maxSize: 256 },
      totalLength: 0,
      chunks: [],
    })
    // The edges of the documented parameter range are accepted.
    expect(code(index({ min: 64, avg: 2 ** 30, max: 2 ** 30 }))).toBe('accepted')
  })

  it('chunker parameters outside 64..2^30 or out of order are chunking.bad-params', () => {
    expect(code(index({ min: 63 }))).toBe('chunking.bad-params')
    expect(code(index({ max: 2 ** 30 + 1 }))).toBe('chunking.bad-params')
    expect(code(index({ min: 129 }))).toBe('chunking.bad-params')
    expect(code(index({ avg: 257 }))).toBe('chunking.bad-params')
  })

  it('after the parameters: a total length ≥ 2^53, a length outside 1..maxSize, a wrong sum are chunking.bad-index', () => {
    expect(code(index({ total: [150, 2 ** 21] }))).toBe('chunking.bad-index')
    expect(code(index({ lengths: [257, 1] }))).toBe('chunking.bad-index')
    expect(code(index({ lengths: [256, 1] }))).toBe('accepted')
    expect(code(index({ lengths: [0, 150] }))).toBe('chunking.bad-index')
    expect(code(index({ total: [151, 0] }))).toBe('chunking.bad-index')
    // Order: the parameters are checked before the total length and the chunk lengths.
    expect(code(index({ min: 63, total: [150, 2 ** 21] }))).toBe('chunking.bad-params')
    expect(code(index({ min: 63, lengths: [0, 1] }))).toBe('chunking.bad-params')
  })

  it('the structural checks come first: a bad CRC hides bad parameters', () => {
    const bytes = index({ min: 63 })
    bytes[bytes.length - 1]! ^= 1
    expect(code(bytes)).toBe('chunking.bad-index')
  })
})
