import { describe, expect, it } from 'vitest'
import { encodeVcdiff } from '../vcdiff/index.ts'
import { estimateVcdiffBytes } from './vcdiff-estimate.ts'

/** Deterministic text-like bytes (a few hundred distinct lines, like source code). */
function text(seed: number, size: number): Uint8Array {
  const out = new Uint8Array(size)
  let s = seed >>> 0
  let at = 0
  while (at < size) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0
    const line = `  const v${s % 977} = compute(${s % 31}, '${(s >>> 12).toString(36)}')\n`
    for (let i = 0; i < line.length && at < size; i++) out[at++] = line.charCodeAt(i)
  }
  return out
}

/** `base` with an 8-byte token overwritten every `every` bytes (a release touching every function). */
function scatteredEdits(base: Uint8Array, every: number, seed: number): Uint8Array {
  const out = base.slice()
  let s = seed >>> 0
  for (let at = every >>> 1; at + 8 <= out.length; at += every) {
    for (let i = 0; i < 8; i++) {
      s = (Math.imul(s, 1103515245) + 12345) >>> 0
      out[at + i] = 0x61 + ((s >>> 16) % 26)
    }
  }
  return out
}

describe('estimateVcdiffBytes', () => {
  const old = text(7, 2 * 1024 * 1024)

  it('forecasts nothing when nothing is edited', () => {
    expect(estimateVcdiffBytes(old, old, [])).toEqual({ bytes: 0, editedBytes: 0, sampledBytes: 0 })
  })

  it('forecasts a tiny delta for a tiny edit in a big file, and samples only part of it', () => {
    const edited = old.slice()
    edited.set(new TextEncoder().encode('a change of a few bytes'), 1_000_000)
    const e = estimateVcdiffBytes(old, edited, [
      { target: 0, length: edited.length, source: 0, sourceLength: old.length },
    ])
    expect(e.editedBytes).toBe(edited.length)
    expect(e.sampledBytes).toBeLessThanOrEqual(256 * 1024)
    expect(e.bytes).toBeLessThan(4096)
  })

  it('forecasts within a factor of two of vcdiff for edits spread over the whole file', () => {
    const edited = scatteredEdits(old, 512, 3)
    const e = estimateVcdiffBytes(old, edited, [
      { target: 0, length: edited.length, source: 0, sourceLength: old.length },
    ])
    const real = encodeVcdiff(old, edited, { checksum: false }).length
    expect(e.bytes).toBeGreaterThan(real / 2)
    expect(e.bytes).toBeLessThan(real * 2)
  })

  it('finds old bytes that an insertion pushed along within a file', () => {
    const inserted = new Uint8Array(old.length + 4000)
    inserted.set(old.subarray(0, 500_000))
    inserted.set(text(99, 4000), 500_000)
    inserted.set(old.subarray(500_000), 504_000)
    const e = estimateVcdiffBytes(old, inserted, [
      { target: 0, length: inserted.length, source: 0, sourceLength: old.length },
    ])
    // Far less than the 2 MB a forecast that lost the alignment would give.
    expect(e.bytes).toBeLessThan(64 * 1024)
  })

  it('counts new entries at their size', () => {
    const fresh = text(11, 300_000)
    const e = estimateVcdiffBytes(new Uint8Array(0), fresh, [
      { target: 0, length: fresh.length, source: 0, sourceLength: 0 },
    ])
    expect(e.bytes).toBe(fresh.length)
  })

  it('ignores entries that lie outside the buffers', () => {
    const e = estimateVcdiffBytes(old, old, [
      { target: old.length - 10, length: 100, source: 0, sourceLength: 10 },
      { target: 0, length: 100, source: old.length, sourceLength: 10 },
    ])
    expect(e.editedBytes).toBe(0)
  })
})
