import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { DeltaFormatError } from '../errors.ts'
import { collectingSink, sourceFromBytes } from '../io.ts'
import { seededBytes as bytes } from '../test/seeded-bytes.ts'
import { encodeBlock } from './block.ts'
import {
  blockRangeFor,
  crc32c,
  decodeControlBlock,
  encodeControlBlock,
  frameStream,
  frameStreamIterable,
  groupBlockRange,
  rangeHeader,
  readHeader,
  roleOf,
  type StreamLayout,
  type StreamMetaInput,
  StreamReassembler,
  sha256Hex,
} from './index.ts'
import { Sha256 } from './sha256.ts'

const BS = 512
const input: StreamMetaInput = {
  artifact: 'app',
  fromVersion: '1.0.0',
  toVersion: '1.1.0',
  method: 'test',
  blockSize: BS,
}

/** Byte equality without vitest's element-by-element deep diff, which is slow on large arrays. */
function same(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i])
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.length
  }
  return out
}

async function framed(payload: Uint8Array, k = 4, m = 2, extra: Partial<StreamMetaInput> = {}) {
  const wire = await frameStream(payload, { ...input, ...extra }, { k, m })
  const reader = new StreamReassembler(collectingSink())
  await reader.push(0, wire.subarray(0, BS + 32))
  return { wire, layout: reader.layout! }
}

function blockOf(wire: Uint8Array, seq: number, layout: StreamLayout): Uint8Array {
  const r = blockRangeFor(seq, 1, layout)
  return wire.subarray(r.offset, r.offset + r.length)
}

describe('crc32c', () => {
  it('matches the standard check value', () => {
    expect(crc32c(new TextEncoder().encode('123456789'))).toBe(0xe3069283)
  })
})

describe('sha256', () => {
  it('matches WebCrypto however the input is split', async () => {
    for (const n of [0, 55, 56, 64, 119, 120, 5000]) {
      const data = bytes(n, n)
      const h = new Sha256()
      for (let at = 0; at < n; at += 37) h.update(data.subarray(at, at + 37))
      expect(h.digestHex()).toBe(await sha256Hex(data))
    }
  })
})

describe('DeltaStream framing', () => {
  it('gives every block the same framed size and computable ranges', async () => {
    const { wire, layout } = await framed(bytes(BS * 9 + 7), 4, 2)
    expect(layout.dataBlocks).toBe(10)
    expect(layout.groups).toBe(3)
    expect(layout.blockCount).toBe(1 + 10 + 3 * 2)
    expect(wire.length).toBe(layout.totalBytes)
    expect(blockRangeFor(2, 3, layout)).toEqual({ offset: 2 * (BS + 32), length: 3 * (BS + 32) })
    expect(rangeHeader({ offset: 10, length: 5 })).toBe('bytes=10-14')
    // Last group: 2 data + 2 parity.
    expect(groupBlockRange(2, layout)).toEqual({ firstBlock: 13, count: 4 })
    expect(roleOf(15, layout)).toEqual({ kind: 'parity', group: 2, index: 2 })
    expect(() => blockRangeFor(16, 2, layout)).toThrow(DeltaFormatError)
  })

  it('streams a ByteSource to the same bytes as framing the array', async () => {
    const payload = bytes(BS * 5 + 100)
    const whole = await frameStream(payload, input, { k: 3, m: 1 })
    const meta = { ...input, payloadLength: payload.length, sha256: undefined }
    const parts: Uint8Array[] = []
    const first = await frameStream(payload, meta, { k: 3, m: 1 })
    const sha = (await (async () => {
      const r = new StreamReassembler(collectingSink())
      await r.push(0, first)
      return r.metadata!.sha256
    })()) as string
    for await (const b of frameStreamIterable(
      sourceFromBytes(payload, 77),
      { ...meta, sha256: sha },
      { k: 3, m: 1 },
    ))
      parts.push(b)
    expect(same(concat(parts), whole)).toBe(true)
  })

  it('refuses a source whose length differs from the declared one', async () => {
    const payload = bytes(1000)
    const run = frameStream(
      sourceFromBytes(payload),
      { ...input, payloadLength: 999, sha256: 'a'.repeat(64) },
      { k: 2, m: 1 },
    )
    await expect(run).rejects.toThrow(DeltaFormatError)
  })

  it('refuses a streamed source whose sha256 differs from the declared one', async () => {
    const payload = bytes(1000)
    const run = frameStream(
      sourceFromBytes(payload, 100),
      { ...input, payloadLength: 1000, sha256: 'a'.repeat(64) },
      { k: 2, m: 1 },
    )
    await expect(run).rejects.toThrow('does not match the declared sha256')
  })
})

describe('StreamReassembler', () => {
  it('round-trips payloads of edge-case sizes, pushed in arbitrary contiguous pieces', async () => {
    for (const n of [0, 1, BS, BS * 8, BS * 8 + 1]) {
      const payload = bytes(n, n)
      const wire = await frameStream(payload, input, { k: 4, m: 2 })
      const sink = collectingSink()
      const r = new StreamReassembler(sink)
      for (let at = 0; at < wire.length; at += 300) await r.push(at, wire.subarray(at, at + 300))
      const rep = await r.report()
      expect(rep.complete).toBe(true)
      expect(same(sink.bytes(), payload)).toBe(true)
    }
  })

  it('reconnects pieces of concurrent responses fed through pushSource', async () => {
    const payload = bytes(BS * 10 + 9)
    const { wire, layout } = await framed(payload, 4, 2)
    const mid = blockRangeFor(7, 1, layout).offset
    const sink = collectingSink()
    const r = new StreamReassembler(sink)
    await Promise.all([
      r.pushSource(mid, sourceFromBytes(wire.subarray(mid), 333)),
      r.pushSource(0, sourceFromBytes(wire.subarray(0, mid), 201)),
    ])
    const rep = await r.report()
    expect(rep.complete && rep.payloadVerified).toBe(true)
    expect(same(sink.bytes(), payload)).toBe(true)
  })

  it('recovers up to m lost or corrupt blocks per group from shuffled ranges', async () => {
    const payload = bytes(BS * 11 + 3)
    const { wire, layout } = await framed(payload, 4, 2)
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.nat(), { minLength: layout.blockCount, maxLength: layout.blockCount }),
        fc.array(fc.tuple(fc.nat(), fc.boolean()), { maxLength: 2 * layout.groups }),
        async (order, damage) => {
          const lost = new Map<number, 'drop' | 'flip'>()
          const perGroup = new Map<number, number>()
          for (const [pick, flip] of damage) {
            const seq = 1 + (pick % (layout.blockCount - 1))
            const role = roleOf(seq, layout)
            const g = role.kind === 'data' || role.kind === 'parity' ? role.group : -1
            if (lost.has(seq) || (perGroup.get(g) ?? 0) >= layout.m) continue
            perGroup.set(g, (perGroup.get(g) ?? 0) + 1)
            lost.set(seq, flip ? 'flip' : 'drop')
          }
          const seqs = [...Array(layout.blockCount).keys()].sort((a, b) => order[a]! - order[b]! || a - b)
          const sink = collectingSink()
          const r = new StreamReassembler(sink)
          await r.push(0, blockOf(wire, 0, layout))
          for (const seq of seqs) {
            const kind = lost.get(seq)
            if (kind === 'drop') continue
            const block = blockOf(wire, seq, layout).slice()
            if (kind === 'flip') block[32 + (seq % BS)]! ^= 0x40
            await r.push(seq * layout.framedSize, block)
          }
          const rep = await r.report()
          expect(rep.unrecoverable).toEqual([])
          expect(rep.complete).toBe(true)
          // Blocks of an already-emitted group are skipped unverified, so only a subset may be reported.
          for (const s of rep.corruptBlocks) expect(lost.get(s)).toBe('flip')
          expect(same(sink.bytes(), payload)).toBe(true)
        },
      ),
      { numRuns: 40 },
    )
  })

  it('reports exactly the unrecoverable blocks, and completes once they are re-fetched', async () => {
    const payload = bytes(BS * 8)
    const { wire, layout } = await framed(payload, 4, 1)
    // Group 0 = blocks 1..4 data, 5 parity; group 1 = 6..9 data, 10 parity. Lose 2 data in group 1.
    const sink = collectingSink()
    const r = new StreamReassembler(sink)
    await r.push(0, wire.subarray(0, 7 * layout.framedSize))
    await r.push(9 * layout.framedSize, wire.subarray(9 * layout.framedSize))
    const rep = await r.report()
    expect(rep.complete).toBe(false)
    expect(rep.bytesWritten).toBe(BS * 4)
    expect(rep.unrecoverable).toEqual([{ firstBlock: 7, count: 2 }])
    expect(rep.minimalRefetch).toEqual([{ firstBlock: 7, count: 1 }])
    const fix = blockRangeFor(7, 1, layout)
    await r.push(fix.offset, wire.subarray(fix.offset, fix.offset + fix.length))
    const done = await r.report()
    expect(done.complete).toBe(true)
    expect(done.recoveredBlocks).toBe(1)
    expect(same(sink.bytes(), payload)).toBe(true)
  })

  it('parses block 0 trickled in one-byte pieces, or in pieces out of order, without redoing the prefix per piece', async () => {
    // A 64 KiB block 0 in 65,568 pushes: rebuilding the prefix on every push took minutes; linear is a
    // fraction of a second. The timeout is the hang check.
    const blockSize = 64 * 1024
    const wire = await frameStream(bytes(3 * blockSize), { ...input, blockSize }, { k: 4, m: 2 })
    const block0 = wire.subarray(0, 32 + blockSize)
    const trickled = new StreamReassembler(collectingSink())
    for (let at = 0; at < block0.length; at++) void trickled.push(at, block0.subarray(at, at + 1))
    await trickled.report()
    expect(trickled.metadata?.blockSize).toBe(blockSize)
    // Out of order: the gap before the first piece closes last, and the pieces past it count then.
    const shuffled = new StreamReassembler(collectingSink())
    const piece = 4096
    for (let at = Math.floor((block0.length - 1) / piece) * piece; at >= 0; at -= piece) {
      expect(shuffled.metadata).toBeNull()
      await shuffled.push(at, block0.subarray(at, at + piece))
    }
    expect(shuffled.metadata?.blockSize).toBe(blockSize)
  }, 20_000)

  it('holds what arrived of a block cut off mid-way, not the whole framed block', async () => {
    // 1 MiB blocks; 32 responses cut off a few bytes into block 1 (each a partial block of its own).
    const blockSize = 1 << 20
    const wire = await frameStream(bytes(2 * blockSize), { ...input, blockSize }, { k: 4, m: 2 })
    const reader = new StreamReassembler(collectingSink())
    await reader.push(0, wire.subarray(0, 32 + blockSize))
    const start = reader.layout!.framedSize
    const before = process.memoryUsage().arrayBuffers
    for (let cut = 10; cut < 42; cut++) await reader.push(start, wire.subarray(start, start + cut))
    // Whole framed blocks held 32 MiB here; what arrived is 832 bytes (in 16 KiB starting buffers).
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(4 << 20)
    // A cut-off piece still completes its block when the rest follows.
    await reader.push(start + 41, wire.subarray(start + 41))
    const report = await reader.report()
    expect(report.complete).toBe(true)
    expect(report.payloadVerified).toBe(true)
  })

  it('releases the partial blocks of every written group, so a long stream of cut responses holds no more than one group', async () => {
    // 300 groups, each range cut off 100 bytes into its first parity block (a reset connection). The
    // data blocks were all there, so the group is written and the cut-off parity block is never needed.
    const k = 4
    const m = 2
    const groups = 300
    const payload = bytes(BS * k * groups, 3)
    const { wire, layout } = await framed(payload, k, m)
    const sink = collectingSink()
    const r = new StreamReassembler(sink)
    await r.push(0, wire.subarray(0, layout.framedSize))
    let most = 0
    for (let g = 0; g < groups; g++) {
      const { firstBlock } = groupBlockRange(g, layout)
      const from = firstBlock * layout.framedSize
      const cut = from + k * layout.framedSize + 100
      for (let at = from; at < cut; at += 1000) await r.push(at, wire.subarray(at, Math.min(cut, at + 1000)))
      most = Math.max(most, r.retainedBytes)
    }
    const report = await r.report()
    expect(report.complete && report.payloadVerified).toBe(true)
    expect(same(sink.bytes(), payload)).toBe(true)
    // Kept until the end, the cut-off parity blocks added up to 300 framed blocks (163 kB).
    expect(most).toBeLessThanOrEqual((k + m) * layout.framedSize)
    expect(r.retainedBytes).toBe(0)
  })

  it('picks a response back up at the next block when a written group released its partial block', async () => {
    // Group 0 is written from blocks pushed elsewhere while a response is halfway through its parity
    // block; the rest of that response (parity, then group 1) must still be read.
    const payload = bytes(BS * 8, 4)
    const { wire, layout } = await framed(payload, 4, 2)
    const sink = collectingSink()
    const r = new StreamReassembler(sink)
    await r.push(0, wire.subarray(0, layout.framedSize))
    const parity = groupBlockRange(0, layout).firstBlock + 4
    const mid = parity * layout.framedSize + 200
    await r.push(parity * layout.framedSize, wire.subarray(parity * layout.framedSize, mid))
    await r.push(layout.framedSize, wire.subarray(layout.framedSize, parity * layout.framedSize))
    expect((await r.report()).bytesWritten).toBe(4 * BS)
    await r.push(mid, wire.subarray(mid))
    const report = await r.report()
    expect(report.complete && report.payloadVerified).toBe(true)
    expect(same(sink.bytes(), payload)).toBe(true)
    expect(r.retainedBytes).toBe(0)
  })

  it('decodes ranges without block 0 when given the metadata, and buffers them otherwise', async () => {
    const payload = bytes(BS * 6)
    const { wire, layout } = await framed(payload, 2, 1)
    const probe = new StreamReassembler(collectingSink())
    await probe.push(0, wire.subarray(0, layout.framedSize))
    const tail = layout.framedSize
    const a = collectingSink()
    await new StreamReassembler(a, { metadata: probe.metadata! }).push(tail, wire.subarray(tail))
    expect(same(a.bytes(), payload)).toBe(true)
    const b = collectingSink()
    const late = new StreamReassembler(b)
    await late.push(tail, wire.subarray(tail))
    await late.push(0, wire.subarray(0, tail))
    expect(same(b.bytes(), payload)).toBe(true)
  })

  it('drops blocks too far ahead and reports them as missing', async () => {
    const payload = bytes(BS * 6)
    const { wire, layout } = await framed(payload, 1, 1)
    const r = new StreamReassembler(collectingSink(), { maxBufferedGroups: 2 })
    await r.push(0, wire.subarray(0, layout.framedSize))
    await r.push(3 * layout.framedSize, wire.subarray(3 * layout.framedSize))
    const rep = await r.report()
    expect(rep.droppedBlocks).toBeGreaterThan(0)
    expect(rep.unrecoverable[0]).toEqual({ firstBlock: 1, count: 1 })
  })

  it('treats blocks of another stream as corrupt and refuses broken metadata or ranges', async () => {
    const { wire, layout } = await framed(bytes(BS * 2, 1), 2, 0)
    const { wire: other } = await framed(bytes(BS * 2, 2), 2, 0)
    const r = new StreamReassembler(collectingSink())
    await r.push(0, wire.subarray(0, layout.framedSize))
    await r.push(layout.framedSize, other.subarray(layout.framedSize, 2 * layout.framedSize))
    expect((await r.report()).corruptBlocks).toEqual([1])
    await expect(r.push(layout.totalBytes - 1, new Uint8Array(2))).rejects.toThrow(DeltaFormatError)
    const garbage = wire.slice(0, layout.framedSize)
    garbage[40]! ^= 1
    await expect(new StreamReassembler(collectingSink()).push(0, garbage)).rejects.toThrow(DeltaFormatError)
    await expect(new StreamReassembler(collectingSink()).push(0, new Uint8Array(64))).rejects.toThrow(
      DeltaFormatError,
    )
  })

  it('verifies the payload sha256 and refuses a stream that lies about it', async () => {
    const { wire, layout } = await framed(bytes(BS * 3), 2, 1)
    const ok = new StreamReassembler(collectingSink())
    await ok.push(0, wire)
    expect((await ok.report()).payloadVerified).toBe(true)
    const meta = { ...ok.metadata! }
    meta.sha256 = `${meta.sha256.slice(0, 60)}0000` // same stream tag, wrong hash
    const fields = {
      type: 'metadata',
      flags: 0,
      sequence: 0,
      group: 0,
      indexInGroup: 0,
      streamTag: readHeader(wire).streamTag,
    } as const
    const lying = wire.slice()
    lying.set(encodeBlock(fields, new TextEncoder().encode(JSON.stringify(meta)), BS), 0)
    const r = new StreamReassembler(collectingSink())
    await expect(r.push(0, lying.subarray(0, layout.totalBytes))).rejects.toThrow(/sha256/)
  })

  it('surfaces control hints, embedded or standalone', async () => {
    const hints = { recommendedChunkSize: 1 << 20, retryAfterMs: 250 }
    const { wire, layout } = await framed(bytes(BS), 2, 1, { hints })
    expect(layout.controlBlocks).toBe(1)
    const r = new StreamReassembler(collectingSink())
    await r.push(0, wire)
    expect((await r.report()).hints).toEqual(hints)
    expect(decodeControlBlock(encodeControlBlock({ retryAfterMs: 5 }, BS), BS)).toEqual({ retryAfterMs: 5 })
  })

  it('never throws anything but DeltaFormatError on hostile bytes', async () => {
    const { wire, layout } = await framed(bytes(BS * 3), 2, 1)
    await fc.assert(
      fc.asyncProperty(fc.nat({ max: wire.length - 1 }), fc.integer({ min: 1, max: 255 }), async (pos, x) => {
        const bad = wire.slice()
        bad[pos]! ^= x
        const sink = collectingSink()
        try {
          const r = new StreamReassembler(sink)
          await r.push(0, bad)
          const rep = await r.report()
          if (pos >= layout.framedSize) expect(rep.complete).toBe(true)
        } catch (e) {
          expect(e).toBeInstanceOf(DeltaFormatError)
          expect(pos).toBeLessThan(layout.framedSize)
        }
      }),
      { numRuns: 100 },
    )
  })
})

describe('StreamReassembler resuming mid-stream', () => {
  it('emits only the groups after resumeAtGroup, which complete the earlier run exactly', async () => {
    const payload = bytes(BS * 4 * 5 + 123, 9)
    const { wire, layout } = await framed(payload)
    const first = new StreamReassembler(collectingSink())
    await first.push(0, wire.subarray(0, blockRangeFor(0, 1, layout).length))
    const metadata = first.metadata!
    // An earlier run wrote groups 0 and 1 before it died.
    const earlier = payload.subarray(0, 2 * 4 * BS)
    const sink = collectingSink()
    const resumed = new StreamReassembler(sink, { metadata, resumeAtGroup: 2 })
    const from = groupBlockRange(2, layout)
    const rest = blockRangeFor(from.firstBlock, layout.blockCount - from.firstBlock, layout)
    await resumed.push(rest.offset, wire.subarray(rest.offset, rest.offset + rest.length))
    const report = await resumed.report()
    expect(report.complete).toBe(true)
    expect(report.payloadVerified).toBe(false)
    expect(report.bytesWritten).toBe(payload.length)
    expect(same(concat([earlier, sink.bytes()]), payload)).toBe(true)
  })

  it('refuses a resume point without metadata or past the end', () => {
    expect(() => new StreamReassembler(collectingSink(), { resumeAtGroup: 1 })).toThrow(DeltaFormatError)
  })
})
