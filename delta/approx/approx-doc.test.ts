import { describe, expect, it } from 'vitest'
import { collectingSink, readerFromBytes, sourceFromBytes } from '../io.ts'
import { bitwiseCrc32, CRC32, DocReader } from '../test/doc-reader.ts'
import { applyApproxDelta, applyApproxDeltaStream, createApproxDelta } from './index.ts'

/**
 * An independent DPAX decoder written from docs/formats/approx-delta.md alone: header and block tables,
 * LEB128/zigzag varints, raw DEFLATE streams (inflated by the platform's DecompressionStream, not our
 * inflater), the control triples, the sparse diff and the guarded carry. It must rebuild the target from
 * deltas our encoder made, exactly as applyApproxDelta does; when the document drifts, it fails.
 */

const docCrc32 = (bytes: Uint8Array) => bitwiseCrc32(bytes, CRC32)

async function inflateRaw(bytes: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([bytes as Uint8Array<ArrayBuffer>])
    .stream()
    .pipeThrough(new DecompressionStream('deflate-raw'))
  return new Uint8Array(await new Response(stream).arrayBuffer())
}

async function docApply(source: Uint8Array, delta: Uint8Array): Promise<Uint8Array> {
  const need = (ok: boolean, what: string) => {
    if (!ok) throw new Error(what)
  }
  const r = new DocReader(delta, 7)
  need(String.fromCharCode(...r.take(4)) === 'DPAX', 'magic')
  need(r.u8() === 1 && r.u8() === 1 && r.u8() === 0 && r.u8() === 0, 'version, codec, reserved')
  const sourceLength = r.u64()
  const sourceCrc = r.u32()
  const targetLength = r.u64()
  const targetCrc = r.u32()
  const blockSize = r.u32()
  need(r.u32() === docCrc32(delta.subarray(0, 36)), 'header crc')
  need(blockSize >= 1, 'block size')
  need(source.length === sourceLength && docCrc32(source) === sourceCrc, 'source')
  const target = new Uint8Array(targetLength)
  const blocks = Math.ceil(targetLength / blockSize)
  for (let i = 0; i < blocks; i++) {
    const [targetBytes, ctrlRaw, ctrlComp, diffRaw, diffComp, extraRaw, extraComp] = Array.from(
      { length: 7 },
      () => r.u32(),
    ) as [number, number, number, number, number, number, number]
    need(targetBytes === Math.min(blockSize, targetLength - i * blockSize), 'targetBytes')
    const stream = async (comp: number, raw: number) => {
      const bytes = r.take(comp)
      if (raw === 0) {
        need(comp === 0, 'empty stream with bytes')
        return new Uint8Array(0)
      }
      const out = await inflateRaw(bytes)
      need(out.length === raw, 'inflated size')
      return out
    }
    const ctrl = await stream(ctrlComp, ctrlRaw)
    const sparse = await stream(diffComp, diffRaw)
    const extra = await stream(extraComp, extraRaw)
    const copyBytes = targetBytes - extraRaw
    // Sparse diff: (varint gap, u8 nonzero value) pairs expanding to copyBytes diff bytes.
    const diff = new Uint8Array(copyBytes)
    const d = new DocReader(sparse, 7)
    for (let x = -1; d.left > 0; ) {
      x += 1 + d.varint()
      const value = d.u8()
      need(value !== 0 && x < copyBytes, 'diff pair')
      diff[x] = value
    }
    const c = new DocReader(ctrl, 7)
    let pos = c.svarint()
    let out = i * blockSize
    let dAt = 0
    let eAt = 0
    let triples = 0
    while (c.left > 0) {
      const copyLen = c.varint()
      const extraLen = c.varint()
      const seek = c.svarint()
      triples++
      need(copyLen + extraLen >= 1, 'empty triple')
      if (copyLen > 0) need(pos >= 0 && pos + copyLen <= sourceLength, 'copy outside source')
      let carry = 0
      for (let j = 0; j < copyLen; j++) {
        const s = source[pos + j]!
        const sum = s + diff[dAt++]! + carry
        const t = sum % 256
        carry = t !== s && sum > 255 ? 1 : 0
        target[out++] = t
      }
      need(eAt + extraLen <= extraRaw, 'extra overrun')
      target.set(extra.subarray(eAt, eAt + extraLen), out)
      out += extraLen
      eAt += extraLen
      pos += copyLen + seek
      need(Math.abs(pos) <= 2 ** 47, 'seek range')
    }
    need(triples <= Math.min(targetBytes, 4096 + Math.floor(targetBytes / 32)), 'too many triples')
    need(dAt === copyBytes && eAt === extraRaw && out === i * blockSize + targetBytes, 'block sums')
  }
  need(r.left === 0, 'trailing bytes')
  need(docCrc32(target) === targetCrc, 'target crc')
  return target
}

function prng(seed: number): () => number {
  let s = seed >>> 0
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0
    return s
  }
}

/** An "executable": random code with 32-bit pointers; the update shifts code and relocates pointers. */
function executablePair(n: number, seed: number): { source: Uint8Array; target: Uint8Array } {
  const rand = prng(seed)
  const source = new Uint8Array(n)
  for (let i = 0; i < n; i++) source[i] = rand() >>> 24
  // Pointers, some with low bytes near 0xff so a relocation carries across bytes.
  for (let i = 0; i + 4 <= n; i += 64)
    new DataView(source.buffer).setUint32(i, 0x401000 + (rand() % 4096) * 16 + 0xf0, true)
  const parts: Uint8Array[] = []
  for (let at = 0; at < n; ) {
    const len = Math.min(n - at, 3000 + (rand() % 5000))
    const piece = source.slice(at, at + len)
    for (let i = 0; i + 4 <= piece.length; i += 64) {
      const v = new DataView(piece.buffer)
      v.setUint32(i, (v.getUint32(i, true) + 0x30) >>> 0, true)
    }
    // Lone changed bytes: where one wraps and the next is unchanged, only the guarded carry stops.
    for (let k = 0; k < 8; k++) piece[rand() % piece.length] = rand() >>> 24
    parts.push(piece)
    if (rand() % 3 === 0) parts.push(Uint8Array.from({ length: 1 + (rand() % 200) }, () => rand() >>> 24))
    at += len + (rand() % 4 === 0 ? rand() % 300 : 0)
  }
  const target = new Uint8Array(parts.reduce((s, p) => s + p.length, 0))
  let at = 0
  for (const p of parts) {
    target.set(p, at)
    at += p.length
  }
  return { source, target }
}

describe('docs/formats/approx-delta.md describes the deltas createApproxDelta writes', () => {
  const cases: [string, number, number, number | undefined][] = [
    ['one block', 60_000, 1, undefined],
    ['several blocks, the last short', 90_000, 2, 16_384],
    ['tiny blocks', 5_000, 3, 1000],
  ]
  it.each(cases)(
    '%s: an independent decoder rebuilds what applyApproxDelta does',
    async (_, n, seed, blockSize) => {
      const { source, target } = executablePair(n, seed)
      const delta = createApproxDelta(source, target, blockSize === undefined ? undefined : { blockSize })
      const ours = applyApproxDelta(source, delta)
      expect(ours).toEqual(target)
      expect(await docApply(source, delta)).toEqual(ours)
      const sink = collectingSink()
      await applyApproxDeltaStream(readerFromBytes(source), sourceFromBytes(delta, 777), sink)
      expect(sink.bytes()).toEqual(ours)
    },
  )

  it('an empty target is a header and no blocks', async () => {
    const source = Uint8Array.of(1, 2, 3)
    const delta = createApproxDelta(source, new Uint8Array(0))
    expect(delta.length).toBe(40)
    expect(await docApply(source, delta)).toEqual(applyApproxDelta(source, delta))
  })
})
