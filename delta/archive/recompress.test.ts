import { deflateRawSync, gzipSync } from 'node:zlib'
import { describe, expect, it } from 'vitest'
import { parseGzip } from './gzip.ts'
import {
  candidateParams,
  deflateChunks,
  findDeflateParams,
  paramsForGzipXfl,
  paramsKey,
  reproduces,
} from './recompress.ts'

const u8 = (b: Buffer) => new Uint8Array(b.buffer, b.byteOffset, b.length)

/** Text-like sample with enough structure that compression levels produce different streams. */
function sample(n: number, seed = 1): Uint8Array {
  const words = ['delta', 'archive', 'gzip', 'function', 'return', 'const', '{', '}', '\n', 'export', '=>']
  let s = seed
  const parts: string[] = []
  let len = 0
  while (len < n) {
    s = (s * 1103515245 + 12345) >>> 0
    const w = `${words[s % words.length]!}${(s >>> 8) % 7 === 0 ? s % 1000 : ''} `
    parts.push(w)
    len += w.length
  }
  return new TextEncoder().encode(parts.join('')).subarray(0, n)
}

describe('exact recompression search', () => {
  it('orders the likely settings first and covers the whole grid', () => {
    const c = candidateParams()
    expect(c.slice(0, 2).map(paramsKey)).toEqual(['9/8/15/0/node', '6/8/15/0/node'])
    expect(new Set(c.map(paramsKey)).size).toBe(9 * 9 * 2)
  })

  for (const level of [6, 9]) {
    it(`finds the parameters of zlib.gzipSync level ${level}`, () => {
      const raw = sample(300_000, level)
      const gz = u8(gzipSync(raw, { level }))
      const m = parseGzip(gz, 1 << 24).members[0]!
      const found = findDeflateParams(m.content, gz.subarray(m.dataStart, m.dataEnd))
      expect(found.params).not.toBeNull()
      expect(found.params!.level).toBe(level)
      const rebuilt = [...deflateChunks(m.content, found.params!)]
      expect(Buffer.concat(rebuilt).equals(Buffer.from(gz.subarray(m.dataStart, m.dataEnd)))).toBe(true)
    })
  }

  it("proves a gzip stream on the first try when its header's XFL names the level", () => {
    for (const level of [1, 6, 9]) {
      const gz = u8(gzipSync(sample(120_000, level), { level }))
      const m = parseGzip(gz, 1 << 24).members[0]!
      const found = findDeflateParams(
        m.content,
        gz.subarray(m.dataStart, m.dataEnd),
        paramsForGzipXfl(m.header.xfl),
      )
      expect({ level: found.params?.level, tried: found.tried }).toEqual({ level, tried: 1 })
    }
  })

  it('finds a non-default memLevel', () => {
    const raw = sample(200_000, 7)
    const compressed = u8(deflateRawSync(raw, { level: 5, memLevel: 4 }))
    const found = findDeflateParams(raw, compressed)
    expect(found.params && { level: found.params.level, memLevel: found.params.memLevel }).toEqual({
      level: 5,
      memLevel: 4,
    })
  })

  it('rejects streams pako cannot produce (fixed Huffman) and wrong candidates early', () => {
    const raw = sample(200_000, 3)
    const compressed = u8(deflateRawSync(raw, { strategy: 4 }))
    const t = performance.now()
    expect(findDeflateParams(raw, compressed).params).toBeNull()
    // 162 candidates over 200 KB would take seconds if each ran to completion.
    expect(performance.now() - t).toBeLessThan(5000)
    expect(reproduces(raw, compressed.subarray(0, compressed.length - 1), candidateParams()[0]!)).toBe(false)
  })
})
