import { describe, expect, it } from 'vitest'
import { HEADER_SIZE, readHeader } from '../delta/stream/header.ts'
import { decodeControlBlock, encodeControlBlock, frameStream } from '../delta/stream/index.ts'
import { decodeMetadata, validateMetadata } from '../delta/stream/metadata.ts'
import { DeltaStreamBlockHeader, DeltaStreamControl, DeltaStreamMetadata } from './delta-stream.ts'

/**
 * The published JSON Schemas of the DeltaStream (docs/schemas/DeltaStream*.schema.json) must describe
 * the bytes delta/stream writes and reads, not a shape of their own: they once named the metadata
 * fields `name`/`from`/`to`/`fec`, capped blockSize at 4 MiB and called a control hint
 * `recommendedRangeBytes`, none of which a real stream has.
 */

const payload = new TextEncoder().encode('x'.repeat(5000))
const input = { artifact: 'app', fromVersion: '1.0.0', toVersion: '1.1.0', method: 'vcdiff', blockSize: 512 }

describe('schemas/delta-stream.ts describes the DeltaStream on the wire', () => {
  it('every block header and the metadata of a framed stream parse', async () => {
    const stream = await frameStream(payload, input, { k: 4, m: 2 })
    const frame = HEADER_SIZE + 512
    const meta = decodeMetadata(stream.subarray(HEADER_SIZE, HEADER_SIZE + readHeader(stream).payloadLength))
    expect(DeltaStreamMetadata.parse(meta)).toEqual(meta)
    for (let at = 0; at < stream.length; at += frame) {
      const header = readHeader(stream.subarray(at, at + HEADER_SIZE))
      expect(DeltaStreamBlockHeader.parse(header)).toEqual(header)
    }
  })

  it('the metadata schema accepts and refuses what validateMetadata does', async () => {
    const stream = await frameStream(payload, input, { k: 4, m: 2 })
    const good = decodeMetadata(stream.subarray(HEADER_SIZE, HEADER_SIZE + readHeader(stream).payloadLength))
    const variants: Record<string, unknown>[] = [
      { fromVersion: null },
      { blockSize: 16 * 1024 * 1024, blockCount: 1 + 1 + 2 },
      { blockSize: 16 * 1024 * 1024 + 1 },
      { blockSize: 511 },
      { k: 200, m: 56 },
      { k: 200, m: 57 },
      { k: 0 },
      { controlBlocks: 16, blockCount: good.blockCount + 16 },
      { controlBlocks: 17, blockCount: good.blockCount + 17 },
      { blockCount: good.blockCount + 1 },
      { artifact: '' },
      { artifact: 'a'.repeat(256) },
      { artifact: 'a'.repeat(257) },
      { sha256: 'A'.repeat(64) },
      { payloadLength: -1 },
      { version: 2 },
      { format: 'deltaport' },
      { extra: 'ignored' },
    ]
    for (const change of variants) {
      const value = { ...good, ...change }
      let ours = true
      try {
        validateMetadata(value)
      } catch {
        ours = false
      }
      expect(DeltaStreamMetadata.safeParse(value).success, JSON.stringify(change)).toBe(ours)
    }
  })

  it('the control schema has the hints decodeControlBlock reads', () => {
    const hints = { recommendedChunkSize: 4096, retryAfterMs: 250 }
    const decoded = decodeControlBlock(encodeControlBlock(hints, 512), 512)
    expect(DeltaStreamControl.strict().parse(decoded)).toEqual(hints)
    expect(DeltaStreamControl.safeParse({ retryAfterMs: -1 }).success).toBe(false)
    expect(DeltaStreamControl.parse({ recommendedChunkSize: 0 })).toEqual({ recommendedChunkSize: 0 })
  })
})
