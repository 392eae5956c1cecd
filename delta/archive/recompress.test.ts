import { spawnSync } from 'node:child_process'
import { deflateRawSync, gzipSync } from 'node:zlib'
import * as pako from 'pako'
import { describe, expect, it } from 'vitest'
import { prng } from '../approx/fuzz.ts'
import { parseDeflate } from '../deflate/parse.ts'
import { parseGzip } from './gzip.ts'
import {
  candidateParams,
  deflateChunks,
  findDeflateParams,
  paramsForGzipXfl,
  paramsKey,
  reproduces,
  zlibMemLevelOf,
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
      const found = findDeflateParams(m.content, gz.subarray(m.dataStart, m.dataEnd), {
        preferred: paramsForGzipXfl(m.header.xfl),
      })
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

  const memLevelOf = (stream: Uint8Array, size: number) =>
    zlibMemLevelOf(parseDeflate(stream, size, 'test').blocks)

  it("reads the memLevel off a zlib stream's block sizes, and rules out streams zlib cannot have made", () => {
    // Random letters: mostly literal tokens, so even memLevel 9's 32767-token blocks end early.
    const r = prng(5)
    const raw = new Uint8Array(80_000).map(() => 97 + Math.floor(r() * 26))
    // Both match finders (deflate_fast for 1–3, deflate_slow above), lazy and not.
    for (const level of [1, 3, 4, 6, 9]) {
      for (let memLevel = 1; memLevel <= 9; memLevel++) {
        const streams = [
          u8(deflateRawSync(raw, { level, memLevel })),
          pako.deflateRaw(raw, { level, memLevel }),
          pako.deflateRaw(raw, { level, memLevel, legacyHash: true }),
        ]
        for (const s of streams) expect(memLevelOf(s, raw.length)).toBe(memLevel)
      }
    }
    // One final block (small input) or a stored first block says nothing.
    const small = sample(2000, 1)
    expect(memLevelOf(u8(deflateRawSync(small)), small.length)).toBeUndefined()
    expect(memLevelOf(u8(deflateRawSync(raw, { level: 0 })), raw.length)).toBeUndefined()
    // GNU gzip ends a block early (at a multiple of 4096 literals) when its heuristic says compression
    // is going well, as it does on a package-lock.json-like file: then no zlib setting can reproduce
    // it. (Where the heuristic never fires its blocks are all 32767 tokens, like memLevel 9's: the
    // memLevel-9 grid is then searched and simply fails.)
    const b64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
    const text = new TextEncoder().encode(
      Array.from({ length: 3000 }, () => {
        const n = Math.floor(r() * 5000)
        const v = `${Math.floor(r() * 9)}.${Math.floor(r() * 20)}.${Math.floor(r() * 20)}`
        const sha = Array.from({ length: 86 }, () => b64[Math.floor(r() * 64)]).join('')
        return `    "node_modules/pkg-${n}": {\n      "version": "${v}",\n      "resolved": "https://registry.npmjs.org/pkg-${n}/-/pkg-${n}-${v}.tgz",\n      "integrity": "sha512-${sha}==",\n      "dev": true\n    },\n`
      }).join(''),
    )
    for (const level of ['-9', '-6']) {
      const gnu = spawnSync('gzip', [`${level}nc`], { input: text })
      if (gnu.status !== 0) continue
      const gz = new Uint8Array(gnu.stdout)
      const member = parseGzip(gz, text.length).members[0]!
      expect(memLevelOf(gz.subarray(member.dataStart, member.dataEnd), text.length)).toBeNull()
    }
  })
})
