import { gzipSync } from 'node:zlib'
import { describe, expect, it } from 'vitest'
import { pakoEngine } from '../../delta/archive/index.ts'
import type { DeflateParams } from '../../delta/archive/recompress.ts'
import { applyDeltaStream, createDelta, readerFromBytes } from '../../delta/index.ts'
import { collectingSink, sourceFromBytes } from '../../delta/io.ts'
import { nativeDeflateEngine, probeHashFamily } from './native-deflate.ts'

const u8 = (b: Buffer) => new Uint8Array(b.buffer, b.byteOffset, b.length)

function text(seed: number, size: number): Uint8Array {
  let s = seed >>> 0
  const out: string[] = []
  let len = 0
  while (len < size) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0
    const line = `  if (x${s % 613} > ${s % 97}) return render('${(s >>> 9).toString(36)}', ${s % 13})\n`
    out.push(line)
    len += line.length
  }
  return new TextEncoder().encode(out.join('')).subarray(0, size)
}

const params = (level: number, memLevel = 8): DeflateParams => ({
  level,
  memLevel,
  windowBits: 15,
  strategy: 0,
  legacyHash: false,
})

describe('Node zlib as a deflate engine', () => {
  it("uses the Chromium hash (pako's default) in the Node this project runs on", () => {
    expect(probeHashFamily()).toBe(false)
    expect(nativeDeflateEngine.handles(params(9))).toBe(true)
    expect(nativeDeflateEngine.handles({ ...params(9), legacyHash: true })).toBe(false)
  })

  it('produces pako’s bytes at every level', () => {
    const raw = text(3, 700_000)
    for (const p of [1, 2, 3, 4, 5, 6, 7, 8, 9].map((level) => params(level)).concat([params(9, 4)])) {
      expect(
        Buffer.from(nativeDeflateEngine.deflate(raw, p)).equals(Buffer.from(pakoEngine.deflate(raw, p))),
      ).toBe(true)
    }
  })

  it('streams the same bytes however the input is cut', async () => {
    const raw = text(4, 600_000)
    const whole = Buffer.from(pakoEngine.deflate(raw, params(9)))
    let seed = 7
    const stream = nativeDeflateEngine.open(params(9))
    const out: Uint8Array[] = []
    for (let at = 0; at < raw.length; ) {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0
      const n = Math.min(raw.length - at, 1 + (seed % 90_000))
      out.push(...(await stream.push(raw.subarray(at, at + n))))
      at += n
    }
    out.push(...(await stream.finish()))
    expect(Buffer.concat(out).equals(whole)).toBe(true)
  })

  it('creates and applies archive deltas the pure codec agrees with', async () => {
    const source = text(5, 1_200_000)
    const target = source.slice()
    target.set(new TextEncoder().encode('/* 1.0.1 */'), 600_000)
    const gzSource = u8(gzipSync(source, { level: 9 }))
    const gzTarget = u8(gzipSync(target, { level: 9 }))
    const native = createDelta(gzSource, gzTarget, { deflateEngine: nativeDeflateEngine })
    const pure = createDelta(gzSource, gzTarget)
    expect(native.method).toBe('archive')
    expect(Buffer.from(native.delta).equals(Buffer.from(pure.delta))).toBe(true)
    for (const engine of [nativeDeflateEngine, undefined]) {
      const sink = collectingSink()
      await applyDeltaStream(
        readerFromBytes(gzSource),
        sourceFromBytes(native.delta),
        sink,
        engine ? { deflateEngine: engine } : {},
      )
      expect(Buffer.from(sink.bytes()).equals(Buffer.from(gzTarget))).toBe(true)
    }
  })
})
