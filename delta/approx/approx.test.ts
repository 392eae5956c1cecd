import fc from 'fast-check'
import { deflateRaw } from 'pako'
import { describe, expect, it } from 'vitest'
import { DeltaFormatError } from '../errors.ts'
import { collectingSink, readerFromBytes, sourceFromBytes } from '../io.ts'
import { ByteWriter, writeU32 } from './bytes.ts'
import { crc32, crc32Update } from './crc32.ts'
import { encodeBlockHeader, encodeHeader, HEADER_SIZE, maxCompressed, maxPieces } from './format.ts'
import { fuzzApprox, mutatePair, prng } from './fuzz.ts'
import { applyApproxDelta, applyApproxDeltaStream, createApproxDelta } from './index.ts'

async function applyStream(source: Uint8Array, delta: Uint8Array, chunk = 13): Promise<Uint8Array> {
  const sink = collectingSink()
  await applyApproxDeltaStream(readerFromBytes(source), sourceFromBytes(delta, chunk), sink)
  return sink.bytes()
}

/** Round-trips through both source indexes (same format, different matches); returns the default's delta. */
async function roundTrip(source: Uint8Array, target: Uint8Array, blockSize?: number): Promise<Uint8Array> {
  const deltas = (['hash', 'suffix-array'] as const).map((index) =>
    createApproxDelta(source, target, { index, ...(blockSize === undefined ? {} : { blockSize }) }),
  )
  for (const delta of deltas) {
    expect(applyApproxDelta(source, delta)).toEqual(target)
    expect(await applyStream(source, delta)).toEqual(target)
  }
  return createApproxDelta(source, target, blockSize === undefined ? undefined : { blockSize })
}

function formatError(run: () => unknown): DeltaFormatError {
  try {
    run()
  } catch (e) {
    expect(e).toBeInstanceOf(DeltaFormatError)
    return e as DeltaFormatError
  }
  throw new Error('expected a DeltaFormatError')
}

describe('crc32', () => {
  it('matches the standard check value and is incremental', () => {
    const bytes = new TextEncoder().encode('123456789')
    expect(crc32(bytes)).toBe(0xcbf43926)
    expect(crc32Update(crc32(bytes.subarray(0, 5)), bytes.subarray(5))).toBe(0xcbf43926)
    expect(crc32(new Uint8Array(0))).toBe(0)
  })
})

describe('approx delta round trip', () => {
  const blockSize = fc.option(fc.integer({ min: 1, max: 300 }), { nil: undefined })

  it('round-trips the edge cases', async () => {
    const some = Uint8Array.from({ length: 5000 }, (_, i) => (i * 7) & 0xff)
    await roundTrip(new Uint8Array(0), new Uint8Array(0))
    await roundTrip(new Uint8Array(0), Uint8Array.of(1))
    await roundTrip(Uint8Array.of(1), new Uint8Array(0))
    await roundTrip(Uint8Array.of(9), Uint8Array.of(9))
    await roundTrip(Uint8Array.of(9), Uint8Array.of(8))
    const same = await roundTrip(some, some)
    expect(same.length).toBeLessThan(200)
    await roundTrip(some, new Uint8Array(5000).fill(0xaa))
    await roundTrip(new Uint8Array(3000), new Uint8Array(4000), 100)
  })

  it('round-trips random pairs', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.uint8Array({ maxLength: 400 }),
        fc.uint8Array({ maxLength: 400 }),
        blockSize,
        (s, t, b) => roundTrip(s, t, b).then(() => {}),
      ),
      { numRuns: 150 },
    )
  })

  it('round-trips mutated pairs (inserts, deletes, relocated fields)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 2000 }), fc.integer(), blockSize, (s, seed, b) =>
        roundTrip(s, mutatePair(prng(seed), s), b).then(() => {}),
      ),
      { numRuns: 150 },
    )
  })

  it('makes small deltas for relocated binaries-like data', () => {
    const r = prng(1)
    const source = Uint8Array.from({ length: 200_000 }, () => Math.floor(r() * 256))
    const target = source.slice()
    // Shift every "pointer" at 8-byte strides by a constant, as a relinked executable would.
    for (let i = 0; i + 4 <= target.length; i += 64) {
      const v = (target[i]! | (target[i + 1]! << 8)) + 0x1234
      target[i] = v & 0xff
      target[i + 1] = (v >> 8) & 0xff
    }
    for (const index of ['hash', 'suffix-array'] as const) {
      const delta = createApproxDelta(source, target, { index })
      expect(applyApproxDelta(source, delta)).toEqual(target)
      expect(delta.length).toBeLessThan(20_000)
    }
  })
})

describe('approx delta hostile input', () => {
  const source = Uint8Array.from({ length: 3000 }, (_, i) => (i * 31) & 0xff)
  const target = mutatePair(prng(7), source)
  const delta = createApproxDelta(source, target, { blockSize: 512 })

  it('rejects the wrong source before doing anything', async () => {
    const other = source.slice()
    other[100]! ^= 1
    expect(formatError(() => applyApproxDelta(other, delta)).code).toBe('source-mismatch')
    expect(formatError(() => applyApproxDelta(source.subarray(1), delta)).code).toBe('source-mismatch')
    await expect(applyStream(other, delta)).rejects.toBeInstanceOf(DeltaFormatError)
  })

  it('enforces limits and rejects truncation and trailing bytes', async () => {
    expect(formatError(() => applyApproxDelta(source, delta, { maxTargetSize: 10 })).code).toBe('too-large')
    expect(formatError(() => applyApproxDelta(source, delta, { maxBlockSize: 100 })).code).toBe('too-large')
    expect(formatError(() => applyApproxDelta(source, delta.subarray(0, delta.length - 1))).code).toBe(
      'truncated',
    )
    const longer = new Uint8Array(delta.length + 1)
    longer.set(delta)
    expect(formatError(() => applyApproxDelta(source, longer)).code).toBe('trailing-bytes')
    await expect(applyStream(source, longer)).rejects.toThrow(/after the last block/)
    expect(formatError(() => applyApproxDelta(source, new Uint8Array(10))).code).toBe('truncated')
  })

  it('rejects a huge claimed target without allocating it', () => {
    const d = delta.slice()
    // targetLength = 2^40 with a re-sealed header: must fail on limits, not on allocation.
    writeU32(d, 20, 0)
    writeU32(d, 24, 0x100)
    writeU32(d, HEADER_SIZE - 4, crc32(d.subarray(0, HEADER_SIZE - 4)))
    expect(formatError(() => applyApproxDelta(source, d, { maxTargetSize: 2 ** 50 })).code).toBe('bad-block')
    expect(formatError(() => applyApproxDelta(source, d)).code).toBe('too-large')
    // 2^53 and up is no file's length, whatever the limits: damage, not a limit reached.
    writeU32(d, 24, 0x20_0000)
    writeU32(d, HEADER_SIZE - 4, crc32(d.subarray(0, HEADER_SIZE - 4)))
    expect(formatError(() => applyApproxDelta(source, d, { maxTargetSize: 2 ** 60 })).code).toBe('bad-header')
  })

  it('in memory: a target the caller allows is allocated as blocks decode, not as the header claims', () => {
    // 32 GiB in 2048 blocks of 16 MiB whose one-byte control streams are not DEFLATE: ~60 KB of delta
    // that passes the header walk. Sizing the target from the header tried to allocate all 32 GiB
    // (a RangeError, not a DeltaFormatError); block 0 must fail first.
    const blockSize = 16 << 20
    const targetLength = 2 ** 35
    const w = new ByteWriter()
    w.bytes(
      encodeHeader({
        sourceLength: 1,
        sourceCrc: crc32(new Uint8Array(1)),
        targetLength,
        targetCrc: 0,
        blockSize,
      }),
    )
    for (let i = 0; i < targetLength / blockSize; i++) {
      encodeBlockHeader(w, {
        targetBytes: blockSize,
        ...{ ctrlRaw: 1, ctrlComp: 1, diffRaw: 0, diffComp: 0, extraRaw: 0, extraComp: 0 },
      })
      w.u8(0xff)
    }
    const hostile = w.finish()
    const limits = { maxTargetSize: 2 ** 50 }
    expect(formatError(() => applyApproxDelta(new Uint8Array(1), hostile, limits)).code).toBe('bad-stream')
  })

  it('streaming: a block claiming a huge payload costs what arrives, not what it claims', async () => {
    // A 16 MiB block (the default maxBlockSize) whose control stream claims the most it may
    // (21 bytes per piece it may hold, ≈ 11 MiB compressed), followed by 64 KiB and the end of the delta.
    const targetBytes = 16 << 20
    const ctrlRaw = 7 + 21 * maxPieces(targetBytes)
    const w = new ByteWriter()
    w.bytes(
      encodeHeader({
        sourceLength: 0,
        sourceCrc: 0,
        targetLength: targetBytes,
        targetCrc: 0,
        blockSize: targetBytes,
      }),
    )
    encodeBlockHeader(w, {
      targetBytes,
      ctrlRaw,
      ctrlComp: maxCompressed(ctrlRaw),
      diffRaw: 0,
      diffComp: 0,
      extraRaw: 0,
      extraComp: 0,
    })
    const growth: number[] = []
    let before = 0
    const delta = (async function* () {
      yield w.finish()
      // Asked for more payload: what the decoder holds now is the block buffer (16 MiB) and this piece.
      before = process.memoryUsage().arrayBuffers
      yield new Uint8Array(64 * 1024)
      growth.push(process.memoryUsage().arrayBuffers - before)
    })()
    await expect(
      applyApproxDeltaStream(readerFromBytes(new Uint8Array(0)), delta, collectingSink()),
    ).rejects.toMatchObject({ code: 'truncated' })
    expect(growth).toHaveLength(1)
    expect(growth[0]).toBeLessThan(8 << 20)
  })

  it('refuses a block of more pieces than the format allows, before replaying any of them', async () => {
    // 8 KiB of target as one-byte literal pieces: decoding each costs tens of bytes of heap, so a
    // 12 KB delta of 4 Mi such pieces in a 16 MiB block held ~455 MB. The cap is 4096 + 1 per 32 bytes.
    const targetBytes = 8192
    const pieces = maxPieces(targetBytes) + 1
    const ctrl = new ByteWriter()
    ctrl.svarint(0)
    for (let i = 0; i < pieces; i++) {
      ctrl.varint(0)
      ctrl.varint(i < pieces - 1 ? 1 : targetBytes - (pieces - 1))
      ctrl.svarint(0)
    }
    const controls = ctrl.finish()
    const target = Uint8Array.from({ length: targetBytes }, (_, i) => (i * 7) & 0xff)
    const [ctrlStream, extraStream] = [deflateRaw(controls), deflateRaw(target)] as const
    const w = new ByteWriter()
    w.bytes(
      encodeHeader({
        sourceLength: 0,
        sourceCrc: 0,
        targetLength: targetBytes,
        targetCrc: crc32(target),
        blockSize: targetBytes,
      }),
    )
    encodeBlockHeader(w, {
      targetBytes,
      ctrlRaw: controls.length,
      ctrlComp: ctrlStream.length,
      diffRaw: 0,
      diffComp: 0,
      extraRaw: targetBytes,
      extraComp: extraStream.length,
    })
    w.bytes(ctrlStream)
    w.bytes(extraStream)
    const hostile = w.finish()
    expect(formatError(() => applyApproxDelta(new Uint8Array(0), hostile)).code).toBe('bad-control')
    await expect(applyStream(new Uint8Array(0), hostile)).rejects.toMatchObject({ code: 'bad-control' })
  })

  it('writes a target of thousands of tiny matches within the piece limit, folding short copies', async () => {
    // 12-byte stretches of random source at random places: a match each, 10,240 of them in one block
    // of 120 KiB, more than the 7,936 pieces the format allows it.
    const r = prng(11)
    const source = Uint8Array.from({ length: 1 << 16 }, () => Math.floor(r() * 256))
    const target = new Uint8Array(10_240 * 12)
    for (let at = 0; at < target.length; at += 12) {
      const from = Math.floor(r() * (source.length - 12))
      target.set(source.subarray(from, from + 12), at)
    }
    for (const index of ['hash', 'suffix-array'] as const) {
      const delta = createApproxDelta(source, target, { index })
      expect(applyApproxDelta(source, delta), index).toEqual(target)
      expect(await applyStream(source, delta), index).toEqual(target)
    }
  })

  it('survives ~2 s of fuzzing with only correct output or DeltaFormatError', async () => {
    const report = await fuzzApprox(2, 12345)
    expect(report.iterations).toBeGreaterThan(50)
    expect(report.rejected).toBeGreaterThan(0)
  })
})

describe('apply fast paths', () => {
  /** A reader with only `read`, so the decoder takes the allocate-per-read path instead of readInto. */
  const plainReader = (bytes: Uint8Array) => ({
    size: bytes.length,
    read: async (offset: number, length: number) => bytes.slice(offset, offset + length),
  })

  it('applies the same with and without the reader’s readInto', async () => {
    const r = prng(7)
    const source = Uint8Array.from({ length: 200_000 }, () => Math.floor(r() * 256))
    const target = source.slice()
    // Relocated little-endian fields: the diff is mostly zero, with carries.
    for (let at = 16; at + 4 < target.length; at += 97) target[at] = (target[at]! + 3) & 0xff
    const delta = createApproxDelta(source, target, { blockSize: 40_000 })
    for (const reader of [readerFromBytes(source), plainReader(source)]) {
      const sink = collectingSink()
      await applyApproxDeltaStream(reader, sourceFromBytes(delta, 4096), sink)
      expect(sink.bytes()).toEqual(target)
    }
  })

  it('ripples diff carries through runs of 0xff exactly like the encoder', async () => {
    // Source words 0x..ffffff00 become 0x..000000ff + 1: the carry must cross the changed 0xff bytes.
    const source = new Uint8Array(4096)
    for (let at = 0; at < source.length; at += 8)
      source.set([0x01, 0xff, 0xff, 0xff, 0x20, 0x30, 0x40, 0x50], at)
    const target = source.slice()
    for (let at = 0; at < target.length; at += 64) target.set([0x02, 0x00, 0x00, 0x00, 0x21], at)
    await roundTrip(source, target)
    await roundTrip(source, target, 100)
  })
})
