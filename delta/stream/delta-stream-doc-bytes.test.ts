import { describe, expect, it } from 'vitest'
import { collectingSink } from '../io.ts'
import { bitwiseCrc32, CRC32C } from '../test/doc-reader.ts'
import { StreamReassembler } from './index.ts'

/**
 * docs/formats/delta-stream.md, written by hand: a whole DeltaStream (metadata JSON, 32-byte headers with
 * CRC32C, stream tag, zero padding, one Cauchy parity block over GF(2^8)/0x11D) built from the document
 * with no code from delta/stream or delta/fec, then fed to StreamReassembler. It must rebuild the payload,
 * also with a data block lost (so the document's parity matrix is the one we use), and treat each
 * block-level fault the document lists as an erasure.
 */

const B = 512
const F = 32 + B
const crc32c = (b: Uint8Array) => bitwiseCrc32(b, CRC32C)

/** GF(2^8) with x^8+x^4+x^3+x^2+1, multiplication by shift-and-add; inverse by search. */
function gfMul(a: number, b: number): number {
  let r = 0
  for (; b > 0; b >>= 1) {
    if (b & 1) r ^= a
    a <<= 1
    if (a & 0x100) a ^= 0x11d
  }
  return r
}
const gfInv = (a: number) => {
  for (let x = 1; x < 256; x++) if (gfMul(a, x) === 1) return x
  throw new Error('no inverse')
}

interface Head {
  type: number
  flags?: number
  sequence: number
  group?: number
  index?: number
  length: number
  tag: number
}

function block(h: Head, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(F)
  const v = new DataView(out.buffer)
  out.set(payload, 32)
  v.setUint8(0, 0xd1)
  v.setUint8(1, h.type)
  v.setUint8(2, h.flags ?? 0)
  v.setUint32(4, h.sequence, true)
  v.setUint32(8, h.group ?? 0, true)
  v.setUint16(12, h.index ?? 0, true)
  v.setUint32(16, h.length, true)
  v.setUint32(20, h.tag, true)
  v.setUint32(24, crc32c(out.subarray(32)), true)
  v.setUint32(28, crc32c(out.subarray(0, 28)), true)
  return out
}

async function handStream(payload: Uint8Array) {
  const sha256 = [
    ...new Uint8Array(await crypto.subtle.digest('SHA-256', payload as Uint8Array<ArrayBuffer>)),
  ]
    .map((b) => b.toString(16).padStart(2, '0'))
    .join('')
  const tag = Number.parseInt(sha256.slice(0, 8), 16)
  // D = ceil(700 / 512) = 2, k = 2, m = 1: one group, 1 + 0 + 2 + 1 = 4 blocks.
  const meta = {
    format: 'deltaport-stream',
    version: 1,
    artifact: 'app',
    fromVersion: null,
    toVersion: '2.0.0',
    method: 'vcdiff',
    payloadLength: payload.length,
    sha256,
    blockSize: B,
    k: 2,
    m: 1,
    controlBlocks: 0,
    blockCount: 4,
  }
  const json = new TextEncoder().encode(JSON.stringify(meta))
  const areas = [payload.slice(0, B), payload.slice(B)].map((p) => {
    const a = new Uint8Array(B)
    a.set(p)
    return a
  })
  // Parity row 0: C[0][j] = 1 / ((255 − 0) XOR j), summed (XOR) over the padded data areas.
  const parity = new Uint8Array(B)
  for (const [j, area] of areas.entries()) {
    const c = gfInv(255 ^ j)
    for (let x = 0; x < B; x++) parity[x]! ^= gfMul(c, area[x]!)
  }
  const heads: Head[] = [
    { type: 1, sequence: 0, length: json.length, tag },
    { type: 3, sequence: 1, group: 0, index: 0, length: B, tag },
    { type: 3, sequence: 2, group: 0, index: 1, length: payload.length - B, tag, flags: 1 },
    { type: 4, sequence: 3, group: 0, index: 2, length: B, tag },
  ]
  const bodies = [json, areas[0]!, areas[1]!, parity]
  const blocks = heads.map((h, i) => block(h, bodies[i]!))
  return { blocks, heads, bodies, wire: Uint8Array.from(blocks.flatMap((b) => [...b])) }
}

const PAYLOAD = Uint8Array.from({ length: 700 }, (_, i) => (i * 37 + (i >> 3)) & 0xff)

async function reassemble(parts: [number, Uint8Array][]) {
  const sink = collectingSink()
  const reader = new StreamReassembler(sink)
  for (const [at, bytes] of parts) await reader.push(at, bytes)
  return { report: await reader.report(), out: sink.bytes() }
}

describe('docs/formats/delta-stream.md: a hand-written stream', () => {
  it('the documented blocks rebuild the payload, verified', async () => {
    const { wire } = await handStream(PAYLOAD)
    expect(wire.length).toBe(4 * F)
    const { report, out } = await reassemble([[0, wire]])
    expect(report.payloadVerified).toBe(true)
    expect(report.corruptBlocks).toEqual([])
    expect(out).toEqual(PAYLOAD)
  })

  it('either data block can be lost: the documented Cauchy parity rebuilds it', async () => {
    const { blocks } = await handStream(PAYLOAD)
    for (const lost of [1, 2]) {
      const parts = blocks.map((b, i) => [i * F, b] as [number, Uint8Array]).filter((_, i) => i !== lost)
      const { report, out } = await reassemble(parts)
      expect(report.payloadVerified, `block ${lost} lost`).toBe(true)
      expect(out).toEqual(PAYLOAD)
    }
  })

  it('a block failing a documented check is an erasure, repaired by parity', async () => {
    const { blocks, heads, bodies } = await handStream(PAYLOAD)
    const faults: [string, Uint8Array][] = [
      ['stream tag of another payload', block({ ...heads[1]!, tag: heads[1]!.tag ^ 1 }, bodies[1]!)],
      ['sequence ≠ position', block({ ...heads[1]!, sequence: 2 }, bodies[1]!)],
      ['type ≠ role', block({ ...heads[1]!, type: 4 }, bodies[1]!)],
      ['index in group', block({ ...heads[1]!, index: 1 }, bodies[1]!)],
      ['final flag on a non-final data block', block({ ...heads[1]!, flags: 1 }, bodies[1]!)],
      ['final flag missing on the last data block', block({ ...heads[2]!, flags: 0 }, bodies[2]!)],
      ['length ≠ min(blockSize, rest)', block({ ...heads[2]!, length: 187 }, bodies[2]!)],
      ['unknown flag bit', block({ ...heads[1]!, flags: 2 }, bodies[1]!)],
    ]
    for (const [what, bad] of faults) {
      const at = what.startsWith('parity')
        ? 3
        : what.includes('last data') || what.includes('length ≠')
          ? 2
          : 1
      const parts = blocks.map((b, i) => [i * F, i === at ? bad : b] as [number, Uint8Array])
      const { report, out } = await reassemble(parts)
      expect(report.corruptBlocks, what).toEqual([at])
      expect(report.payloadVerified, what).toBe(true)
      expect(out, what).toEqual(PAYLOAD)
    }
    // Parity is read only when a data block is missing: with block 1 lost, a parity block whose length is
    // not blockSize is an erasure too, and the group cannot be decoded.
    const badParity = block({ ...heads[3]!, length: 511 }, bodies[3]!)
    const noParity = await reassemble([
      [0, blocks[0]!],
      [2 * F, blocks[2]!],
      [3 * F, badParity],
    ])
    expect(noParity.report.corruptBlocks).toEqual([3])
    expect(noParity.report.payloadVerified).toBe(false)
    // A payload CRC that does not cover the padding: the last data block's CRC over its true length only.
    const short = block(heads[2]!, bodies[2]!)
    new DataView(short.buffer).setUint32(24, crc32c(short.subarray(32, 32 + heads[2]!.length)), true)
    new DataView(short.buffer).setUint32(28, crc32c(short.subarray(0, 28)), true)
    const { report } = await reassemble(blocks.map((b, i) => [i * F, i === 2 ? short : b]))
    expect(report.corruptBlocks).toEqual([2])
  })

  it('padding must be zero: a last data block with a non-zero padding byte (CRC over it) is an erasure', async () => {
    const { blocks, heads, bodies } = await handStream(PAYLOAD)
    const padded = Uint8Array.from(bodies[2]!)
    padded[B - 1] = 0x5a
    const { report, out } = await reassemble(
      blocks.map((b, i) => [i * F, i === 2 ? block(heads[2]!, padded) : b]),
    )
    expect(report.corruptBlocks).toEqual([2])
    expect(out).toEqual(PAYLOAD)
  })
})
