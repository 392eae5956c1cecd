/**
 * Streaming apply: memory is one block (its compressed streams, their inflated form and its output),
 * never the whole delta or target. Output is written block by block *before* the final target checksum
 * can be verified, so callers must treat everything written as provisional until this resolves.
 */
import { check } from '../errors.ts'
import type { ByteSink, ByteSource, RandomAccessReader } from '../io.ts'
import { checkSource } from './apply.ts'
import { addWithCarry } from './arith.ts'
import { decodeBlock } from './block.ts'
import { crc32Update } from './crc32.ts'
import {
  type ApproxLimits,
  BLOCK_HEADER_SIZE,
  blockCount,
  HEADER_SIZE,
  parseBlockHeader,
  parseHeader,
  payloadSize,
  resolveLimits,
} from './format.ts'

const SOURCE_CHUNK = 1 << 20

export async function applyApproxDeltaStream(
  source: RandomAccessReader,
  delta: ByteSource,
  sink: ByteSink,
  limits?: ApproxLimits,
): Promise<void> {
  const input = new ExactReader(delta)
  const h = parseHeader(await input.read(HEADER_SIZE), resolveLimits(limits))
  let sourceCrc = 0
  if (source.size === h.sourceLength) {
    for (let at = 0; at < source.size; at += SOURCE_CHUNK) {
      sourceCrc = crc32Update(sourceCrc, await source.read(at, Math.min(SOURCE_CHUNK, source.size - at)))
    }
  }
  checkSource(h, source.size, sourceCrc)

  let targetCrc = 0
  const count = blockCount(h)
  for (let i = 0; i < count; i++) {
    const header = parseBlockHeader(await input.read(BLOCK_HEADER_SIZE), h, i)
    const block = decodeBlock(header, await input.read(payloadSize(header)), h.sourceLength)
    const out = new Uint8Array(header.targetBytes)
    const { pieces, diff, extra } = block
    let at = 0
    let d = 0
    let e = 0
    for (let p = 0; p < pieces.length; p += 3) {
      const copyLen = pieces[p]!
      const extraLen = pieces[p + 1]!
      if (copyLen > 0) {
        const src = await source.read(pieces[p + 2]!, copyLen)
        check(src.length === copyLen, 'source-mismatch', 'source reader returned a short read')
        addWithCarry(src, diff, d, out, at)
        d += copyLen
        at += copyLen
      }
      out.set(extra.subarray(e, e + extraLen), at)
      e += extraLen
      at += extraLen
    }
    targetCrc = crc32Update(targetCrc, out)
    await sink.write(out)
  }
  check(await input.atEnd(), 'trailing-bytes', 'bytes after the last block')
  check(targetCrc === h.targetCrc, 'target-mismatch', 'reconstructed target fails its checksum')
}

/** Pulls exact byte counts out of a chunked source, holding only chunks not yet consumed. */
class ExactReader {
  private readonly it: AsyncIterator<Uint8Array>
  private chunk: Uint8Array = new Uint8Array(0)
  private offset = 0
  private done = false

  constructor(source: ByteSource) {
    this.it = source[Symbol.asyncIterator]()
  }

  private async fill(): Promise<boolean> {
    while (this.offset >= this.chunk.length) {
      if (this.done) return false
      const next = await this.it.next()
      if (next.done) {
        this.done = true
        return false
      }
      this.chunk = next.value
      this.offset = 0
    }
    return true
  }

  async read(n: number): Promise<Uint8Array> {
    if (n === 0) return new Uint8Array(0)
    await this.fill()
    // Fast path: the request lies inside the current chunk.
    if (this.chunk.length - this.offset >= n) {
      const view = this.chunk.subarray(this.offset, this.offset + n)
      this.offset += n
      return view
    }
    const out = new Uint8Array(n)
    let got = 0
    while (got < n) {
      check(await this.fill(), 'truncated', `delta ends ${n - got} bytes early`)
      const take = Math.min(n - got, this.chunk.length - this.offset)
      out.set(this.chunk.subarray(this.offset, this.offset + take), got)
      this.offset += take
      got += take
    }
    return out
  }

  async atEnd(): Promise<boolean> {
    return !(await this.fill())
  }
}
