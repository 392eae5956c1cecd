import { crc32 as zlibCrc32 } from 'node:zlib'
import { afterEach, describe, expect, it } from 'vitest'
import {
  adoptCrc32,
  crc32,
  crc32Update,
  softwareCrc32Update,
  useSoftwareCrc32,
} from '../../delta/approx/crc32.ts'
import { applyApproxDeltaStream, createApproxDelta } from '../../delta/approx/index.ts'
import { sourceLikeText } from '../../delta/fuzz-input.ts'
import { collectingSink, readerFromBytes, sourceFromBytes } from '../../delta/io.ts'
import { useNativeCrc32 } from './native-crc32.ts'

afterEach(() => useSoftwareCrc32())

describe("Node's CRC-32 lent to the codec", () => {
  it('is adopted, and every codec checksum then goes through it with the same results', () => {
    const bytes = sourceLikeText(7, 200_000)
    const before = crc32(bytes.subarray(5))
    let calls = 0
    expect(
      adoptCrc32((crc, chunk) => {
        calls++
        return zlibCrc32(chunk, crc)
      }),
    ).toBe(true)
    calls = 0
    expect(crc32(bytes.subarray(5))).toBe(before)
    expect(crc32Update(crc32(bytes.subarray(0, 1000)), bytes.subarray(1000))).toBe(crc32(bytes))
    expect(calls).toBe(4)
  })

  it('useNativeCrc32 adopts zlib.crc32 on this Node', () => {
    expect(useNativeCrc32()).toBe(true)
  })

  it('refuses implementations that disagree anywhere, and keeps its own', () => {
    const wrong = [
      (crc: number, chunk: Uint8Array) => zlibCrc32(chunk, crc) ^ 1,
      // Ignores the running value: right for whole buffers, wrong when continued.
      (_crc: number, chunk: Uint8Array) => zlibCrc32(chunk),
      // Wrong only past 64 KiB (a subarray of an empty chunk would lose the running value on this
      // Node, so short chunks go to zlib whole and only the 64 KiB check can refuse it).
      (crc: number, chunk: Uint8Array) =>
        zlibCrc32(chunk.length > 65_536 ? chunk.subarray(0, 65_536) : chunk, crc),
      (): number => {
        throw new Error('no CRC here')
      },
    ]
    for (const impl of wrong) expect(adoptCrc32(impl)).toBe(false)
    const bytes = sourceLikeText(3, 100_000)
    expect(crc32(bytes)).toBe(softwareCrc32Update(0, bytes))
  })

  it('round-trips an approx delta with the adopted CRC checking source and target', async () => {
    const source = sourceLikeText(11, 300_000)
    const target = source.slice()
    for (let i = 1000; i < target.length; i += 5000) target[i] = (target[i] ?? 0) ^ 0x5a
    const delta = createApproxDelta(source, target)
    expect(useNativeCrc32()).toBe(true)
    const sink = collectingSink()
    await applyApproxDeltaStream(readerFromBytes(source), sourceFromBytes(delta), sink)
    expect(Buffer.compare(sink.bytes(), target)).toBe(0)
    const wrongSource = source.slice()
    wrongSource[0] = (wrongSource[0] ?? 0) ^ 1
    await expect(
      applyApproxDeltaStream(readerFromBytes(wrongSource), sourceFromBytes(delta), collectingSink()),
    ).rejects.toMatchObject({ code: 'source-mismatch' })
  })
})
