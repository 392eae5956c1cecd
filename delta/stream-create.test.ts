import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { DeltaFormatError } from './errors.ts'
import { applyDelta, applyDeltaStream, createDelta } from './index.ts'
import {
  collectingSink,
  concatBytes,
  type RandomAccessReader,
  readerFromBytes,
  sourceFromBytes,
} from './io.ts'
import { createDeltaStream, SourceWindows } from './stream-create.ts'

/** Text-like bytes with long-range repeats, so windows have real matches to find. */
function release(size: number, seed: number): Uint8Array {
  const out = new Uint8Array(size)
  let s = seed >>> 0
  for (let i = 0; i < size; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0
    out[i] = i > 4096 && s % 7 !== 0 ? out[i - 4096 + (s % 64)]! : 0x20 + (s >>> 26)
  }
  return out
}

/** The next release: bytes inserted and deleted (content shifts) and scattered one-byte edits. */
function nextRelease(source: Uint8Array, seed: number): Uint8Array {
  const parts: Uint8Array[] = []
  let s = seed >>> 0
  for (let at = 0; at < source.length; ) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0
    const keep = 20_000 + (s % 60_000)
    const piece = source.slice(at, at + keep)
    for (let k = 0; k < piece.length; k += 997) piece[k] = (piece[k]! + 1) & 0xff
    parts.push(piece, release(s % 300, s))
    at += keep + (s % 200) // some source bytes dropped
  }
  return concatBytes(parts)
}

/** A reader that records the largest single read, to check the memory promise. */
function recordingReader(bytes: Uint8Array): RandomAccessReader & { largest: number; total: number } {
  const inner = readerFromBytes(bytes)
  const r = {
    size: inner.size,
    largest: 0,
    total: 0,
    read: async (offset: number, length: number) => {
      r.largest = Math.max(r.largest, length)
      r.total += length
      return inner.read(offset, length)
    },
    readInto: async (offset: number, into: Uint8Array) => {
      r.largest = Math.max(r.largest, into.length)
      r.total += into.length
      return inner.readInto!(offset, into)
    },
  }
  return r
}

async function streamed(
  source: Uint8Array,
  target: Uint8Array,
  options: Parameters<typeof createDeltaStream>[3],
) {
  const sink = collectingSink()
  const s = recordingReader(source)
  const t = recordingReader(target)
  const method = await createDeltaStream(s, t, sink, options)
  return { delta: sink.bytes(), method, sourceReads: s, targetReads: t }
}

const ELF = [0x7f, 0x45, 0x4c, 0x46]
const source = release(3_000_000, 1)
const target = nextRelease(source, 2)

describe('createDeltaStream', () => {
  for (const method of ['vcdiff', 'approx'] as const) {
    it(`${method}: round-trips with every read bounded by its window`, async () => {
      const opts = { method, sourceWindow: 512 * 1024, targetWindow: 256 * 1024 }
      const made = await streamed(source, target, opts)
      expect(made.method).toBe(method)
      // Source reads never exceed the source window; target reads are one window (or a 1 MiB CRC piece).
      expect(made.sourceReads.largest).toBeLessThanOrEqual(Math.max(opts.sourceWindow, 1 << 20))
      expect(made.targetReads.largest).toBeLessThanOrEqual(Math.max(opts.targetWindow, 1 << 20))
      const rebuilt = collectingSink()
      expect(await applyDeltaStream(readerFromBytes(source), sourceFromBytes(made.delta), rebuilt)).toBe(
        method,
      )
      expect(Buffer.from(rebuilt.bytes()).equals(Buffer.from(target))).toBe(true)
      // Windowed, yet close to what the whole-file encoder makes.
      const whole = createDelta(source, target, { methods: [method] }).delta.length
      expect(made.delta.length).toBeLessThan(whole * 1.5)
      expect(made.delta.length).toBeLessThan(target.length / 10)
    })
  }

  it('picks approx for executables and VCDIFF otherwise', async () => {
    const exeSource = source.slice()
    const exeTarget = target.slice()
    exeSource.set(ELF)
    exeTarget.set(ELF)
    expect((await streamed(exeSource, exeTarget, { sourceWindow: 1 << 20 })).method).toBe('approx')
    expect((await streamed(source, target, { sourceWindow: 1 << 20 })).method).toBe('vcdiff')
  })

  it('content moved beyond the window still rebuilds exactly (as new bytes)', async () => {
    const half = source.length >> 1
    const swapped = new Uint8Array(source.length)
    swapped.set(source.subarray(half), 0)
    swapped.set(source.subarray(0, half), source.length - half)
    for (const method of ['vcdiff', 'approx'] as const) {
      const made = await streamed(source, swapped, {
        method,
        sourceWindow: 256 * 1024,
        targetWindow: 128 * 1024,
      })
      expect(Buffer.from(applyDelta(source, made.delta)).equals(Buffer.from(swapped))).toBe(true)
    }
  })

  it('handles empty and tiny files', async () => {
    const cases: [Uint8Array, Uint8Array][] = [
      [new Uint8Array(0), new Uint8Array(0)],
      [new Uint8Array(0), Uint8Array.of(1, 2, 3)],
      [Uint8Array.of(1, 2, 3), new Uint8Array(0)],
      [Uint8Array.of(9), Uint8Array.of(9)],
    ]
    for (const [s, t] of cases) {
      for (const method of ['vcdiff', 'approx'] as const) {
        const made = await streamed(s, t, { method })
        expect([...applyDelta(s, made.delta)]).toEqual([...t])
      }
    }
  })

  it('rejects nonsensical window sizes', async () => {
    await expect(streamed(source, target, { sourceWindow: 0 })).rejects.toThrow(RangeError)
    await expect(streamed(source, target, { targetWindow: 64 << 20 })).rejects.toThrow(RangeError)
  })

  it("a reader's own RangeError (a bug) is thrown as it is, not reported as memory to lower", async () => {
    // A reader with a real bug: it copies each read to the file offset inside the buffer it fills, not
    // to its start. The first window (offset 0) works; the next throws V8's "offset is out of bounds".
    // That is the caller's bug to see, not "choose a smaller sourceWindow" (out-of-memory, exit 17).
    const inner = readerFromBytes(source)
    const buggy: RandomAccessReader = {
      size: inner.size,
      read: inner.read,
      readInto: async (offset, into) => {
        into.set(source.subarray(offset, offset + into.length), offset)
        return into.length
      },
    }
    for (const method of ['vcdiff', 'approx'] as const) {
      const made = createDeltaStream(buggy, readerFromBytes(target), collectingSink(), {
        method,
        sourceWindow: 256 * 1024,
        targetWindow: 128 * 1024,
      })
      const error = await made.then(
        () => null,
        (thrown: unknown) => thrown,
      )
      expect(error, method).toBeInstanceOf(RangeError)
      expect(error, method).not.toBeInstanceOf(DeltaFormatError)
    }
  })

  it('keeps a source window while it reaches a quarter of its length either way', () => {
    // Target and source of 1000 and 2000 bytes, 400-byte windows: a margin of 100 source bytes.
    const plan = new SourceWindows(1000, 2000, 400)
    expect(plan.for(0, 50)).toEqual({ offset: 0, length: 400 })
    expect(plan.for(50, 150)).toEqual({ offset: 0, length: 400 })
    // [300, 400) of the source would leave less than 100 ahead: a new window starts 100 behind.
    expect(plan.for(150, 200)).toEqual({ offset: 200, length: 400 })
    expect(plan.for(200, 250)).toEqual({ offset: 200, length: 400 })
    expect(plan.for(250, 300)).toEqual({ offset: 400, length: 400 })
    // Near the end the window stays clamped to the source.
    expect(plan.for(950, 1000)).toEqual({ offset: 1600, length: 400 })
    expect(new SourceWindows(10, 5, 400).for(0, 10)).toEqual({ offset: 0, length: 5 })
  })

  it('approx reads each source byte about twice, not once per block', async () => {
    // 64 KiB blocks in 512 KiB windows: centring a window on each block read the source 8 times over.
    const made = await streamed(source, target, {
      method: 'approx',
      sourceWindow: 512 * 1024,
      targetWindow: 64 * 1024,
    })
    // One pass for the header's CRC, then the windows.
    expect(made.sourceReads.total).toBeLessThan(source.length * 3.5)
    const rebuilt = collectingSink()
    await applyDeltaStream(readerFromBytes(source), sourceFromBytes(made.delta), rebuilt)
    expect(Buffer.from(rebuilt.bytes()).equals(Buffer.from(target))).toBe(true)
  })

  const hasXdelta = spawnSync('xdelta3', ['-V']).status === 0
  const dir = mkdtempSync(join(tmpdir(), 'stream-create-'))
  afterAll(() => rmSync(dir, { recursive: true, force: true }))
  it.skipIf(!hasXdelta && !process.env.CI)('the VCDIFF it writes decodes with xdelta3 -d', async () => {
    const made = await streamed(source, target, {
      method: 'vcdiff',
      sourceWindow: 512 * 1024,
      targetWindow: 256 * 1024,
    })
    writeFileSync(join(dir, 's'), source)
    writeFileSync(join(dir, 'd'), made.delta)
    const r = spawnSync('xdelta3', ['-d', '-f', '-s', join(dir, 's'), join(dir, 'd'), join(dir, 'o')], {
      encoding: 'utf8',
    })
    expect(r.status, r.stderr).toBe(0)
    expect(readFileSync(join(dir, 'o')).equals(Buffer.from(target))).toBe(true)
  })
})
