import { describe, expect, it } from 'vitest'
import { buildChunkIndex, decodeChunkIndex, encodeChunkIndex } from '../../delta/chunking/chunk-index.ts'
import { DeltaFormatError } from '../../delta/errors.ts'
import { mutateBytes, randomBytes } from '../../delta/fuzz-input.ts'
import { applyDelta, createDelta, type DeltaMethodId } from '../../delta/index.ts'
import { collectingSink, sourceFromBytes } from '../../delta/io.ts'
import { frameStream, StreamReassembler } from '../../delta/stream/index.ts'
import { mulberry32 } from '../../predict/random.ts'

/**
 * The decoders the agent runs on bytes from the edge that scripts/fuzz.ts does not cover (it fuzzes
 * the vcdiff, approx and archive containers): the framed DeltaStream (reassembler) and the chunk
 * index, plus the container dispatch in front of the three codecs (long runs: delta/stream/fuzz.ts and
 * delta/chunking/fuzz.ts in npm run fuzz). Seeded, so a failure replays.
 * Allowed outcomes: the right answer or DeltaFormatError; never another exception, and never a
 * payload reported as verified that differs from the one framed.
 */

const mutate = mutateBytes

function expectOnlyFormatErrors(run: () => unknown, context: string): void {
  try {
    run()
  } catch (error) {
    expect(error, `${context}: ${String(error)}`).toBeInstanceOf(DeltaFormatError)
  }
}

describe('chunk index decoder under hostile bytes', () => {
  it('decodes the original, and refuses every mutation with DeltaFormatError', async () => {
    const rng = mulberry32(0xc0ffee)
    const payload = randomBytes(rng, 200_000)
    const encoded = encodeChunkIndex(await buildChunkIndex(payload))
    expect(decodeChunkIndex(encoded).totalLength).toBe(payload.length)
    let refused = 0
    for (let i = 0; i < 3000; i++) {
      const damaged = mutate(rng, encoded)
      try {
        const decoded = decodeChunkIndex(damaged)
        // Passing the CRC32C after damage means the bytes are equal (or a 2^-32 collision).
        expect(encodeChunkIndex(decoded)).toEqual(damaged)
      } catch (error) {
        expect(error, `iteration ${i}`).toBeInstanceOf(DeltaFormatError)
        refused++
      }
    }
    expect(refused).toBeGreaterThan(2900)
    for (let n = 0; n < 500; n++)
      expectOnlyFormatErrors(() => decodeChunkIndex(randomBytes(rng, n)), `random ${n}`)
  })
})

describe('DeltaStream reassembler under hostile bytes', () => {
  it('never reports a wrong payload as verified, whatever the damage or the push order', async () => {
    const rng = mulberry32(0xdeca)
    const payload = randomBytes(rng, 23_456)
    const meta = {
      artifact: 'app',
      fromVersion: '1.0.0',
      toVersion: '1.1.0',
      method: 'vcdiff',
      blockSize: 1024,
    }
    const wire = await frameStream(payload, meta, { k: 4, m: 2 })
    let verified = 0
    for (let i = 0; i < 400; i++) {
      const damaged = i === 0 ? wire : mutate(rng, wire)
      const sink = collectingSink()
      const reassembler = new StreamReassembler(sink)
      try {
        // Random piece sizes, in a shuffled order (ranges arrive out of order in the agent).
        const pieces: Array<[number, Uint8Array]> = []
        for (let at = 0; at < damaged.length; ) {
          const size = 1 + Math.floor(rng() * 3000)
          pieces.push([at, damaged.subarray(at, at + size)])
          at += size
        }
        for (let j = pieces.length - 1; j > 0; j--) {
          const k = Math.floor(rng() * (j + 1))
          ;[pieces[j], pieces[k]] = [pieces[k] as [number, Uint8Array], pieces[j] as [number, Uint8Array]]
        }
        for (const [offset, bytes] of pieces) await reassembler.push(offset, bytes)
        const report = await reassembler.report()
        if (report.payloadVerified) {
          verified++
          expect(Buffer.compare(sink.bytes(), payload), `iteration ${i}`).toBe(0)
        }
      } catch (error) {
        expect(error, `iteration ${i}: ${String(error)}`).toBeInstanceOf(DeltaFormatError)
      }
    }
    // The undamaged stream and the repairable damage (FEC) still verify.
    expect(verified).toBeGreaterThan(1)
  })

  it('refuses pushes outside the stream and absurd metadata without allocating for them', async () => {
    const rng = mulberry32(7)
    const payload = randomBytes(rng, 5000)
    const wire = await frameStream(
      payload,
      { artifact: 'app', fromVersion: null, toVersion: '1.0.0', method: 'vcdiff', blockSize: 1024 },
      { k: 2, m: 1 },
    )
    const reassembler = new StreamReassembler(collectingSink())
    await reassembler.push(0, wire.subarray(0, 1056))
    for (const offset of [wire.length + 10, 2 ** 40, -5, Number.NaN]) {
      await expect(reassembler.push(offset, new Uint8Array(10))).rejects.toBeInstanceOf(DeltaFormatError)
    }
  })
})

describe('delta container dispatch under hostile bytes', () => {
  it('every container refuses mutated and random deltas with DeltaFormatError only', () => {
    const rng = mulberry32(0xd17a)
    const source = randomBytes(rng, 20_000)
    const target = source.slice()
    target.set(randomBytes(rng, 500), 7000)
    const methods: DeltaMethodId[] = ['vcdiff', 'approx']
    const limits = { vcdiff: { maxTargetSize: 1 << 20 } }
    for (const method of methods) {
      const { delta } = createDelta(source, target, { methods: [method] })
      expect(Buffer.compare(applyDelta(source, delta), target)).toBe(0)
      for (let i = 0; i < 300; i++) {
        expectOnlyFormatErrors(() => applyDelta(source, mutate(rng, delta), limits), `${method} #${i}`)
      }
    }
    for (let i = 0; i < 300; i++) {
      const prefix = [[0xd6, 0xc3, 0xc4], [0x44, 0x50, 0x41, 0x58], [0x44, 0x50, 0x41, 0x52], []][i % 4] ?? []
      const bytes = new Uint8Array([...prefix, ...randomBytes(rng, Math.floor(rng() * 200))])
      expectOnlyFormatErrors(() => applyDelta(source, bytes), `random #${i}`)
    }
  })

  it('a stream source of garbage cannot be passed off as a chunk index or a stream', async () => {
    const rng = mulberry32(99)
    for (let i = 0; i < 50; i++) {
      const garbage = randomBytes(rng, 100 + Math.floor(rng() * 5000))
      expectOnlyFormatErrors(() => decodeChunkIndex(garbage), `chunk index #${i}`)
      const reassembler = new StreamReassembler(collectingSink())
      const outcome = await reassembler.pushSource(0, sourceFromBytes(garbage)).then(
        async () => (await reassembler.report()).payloadVerified,
        (error: unknown) => error,
      )
      if (outcome !== false) expect(outcome).toBeInstanceOf(DeltaFormatError)
    }
  })
})
