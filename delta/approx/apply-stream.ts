/**
 * Streaming apply: memory is one block (its compressed streams, their inflated form, the source ranges
 * it copies from and one reused output buffer), never the whole delta, source or target. Output is written block by block *before* the final target checksum
 * can be verified, so callers must treat everything written as provisional until this resolves.
 */
import { check } from '../errors.ts'
import { type ByteSink, type ByteSource, type RandomAccessReader, readFully } from '../io.ts'
import { checkSource } from './apply.ts'
import { blockInflaters, type CopySource, decodeBlock, replayBlock } from './block.ts'
import { crc32Update } from './crc32.ts'
import {
  type ApproxLimits,
  BLOCK_HEADER_SIZE,
  blockCount,
  copyBytes,
  HEADER_SIZE,
  parseBlockHeader,
  parseHeader,
  payloadSize,
  resolveLimits,
} from './format.ts'

/** Source bytes per read while checksumming the source. */
const CRC_CHUNK = 1 << 20
/** Copies closer than this share one source read; a block's reads stay under twice its copy bytes. */
const MERGE_GAP = 16 * 1024

export async function applyApproxDeltaStream(
  source: RandomAccessReader,
  delta: ByteSource,
  sink: ByteSink,
  limits?: ApproxLimits,
): Promise<void> {
  const input = new ExactReader(delta)
  const h = parseHeader(await input.read(HEADER_SIZE), resolveLimits(limits))
  checkSource(h, source.size, source.size === h.sourceLength ? await sourceCrc(source) : 0)

  let targetCrc = 0
  const count = blockCount(h)
  // One output buffer for every block: sinks are done with a chunk once write() resolves.
  const out = new Uint8Array(Math.min(h.blockSize, h.targetLength))
  const inflaters = blockInflaters()
  const arena = new Arena()
  for (let i = 0; i < count; i++) {
    const header = parseBlockHeader(await input.read(BLOCK_HEADER_SIZE), h, i)
    const block = decodeBlock(header, await input.read(payloadSize(header)), h.sourceLength, inflaters)
    const ranges = await fetchRanges(source, block.pieces, copyBytes(header), arena)
    const target = out.subarray(0, header.targetBytes)
    replayBlock(block, ranges, target, 0)
    targetCrc = crc32Update(targetCrc, target)
    await sink.write(target)
  }
  check(await input.atEnd(), 'trailing-bytes', 'bytes after the last block')
  check(targetCrc === h.targetCrc, 'target-mismatch', 'reconstructed target fails its checksum')
}

/**
 * CRC of the whole source, in chunks read into two reused buffers: the next chunk is read while the
 * current one is summed.
 */
async function sourceCrc(source: RandomAccessReader): Promise<number> {
  const size = source.size
  const buffers = [new Uint8Array(Math.min(CRC_CHUNK, size)), new Uint8Array(Math.min(CRC_CHUNK, size))]
  const read = async (at: number, into: Uint8Array) => {
    const want = Math.min(CRC_CHUNK, size - at)
    const got = await readFully(source, at, into.subarray(0, want))
    check(got === want, 'source-mismatch', 'source reader returned a short read')
    return into.subarray(0, want)
  }
  let crc = 0
  let pending = size > 0 ? read(0, buffers[0]!) : null
  for (let at = 0, k = 0; pending; k ^= 1) {
    const chunk = await pending
    at += chunk.length
    pending = at < size ? read(at, buffers[k ^ 1]!) : null
    crc = crc32Update(crc, chunk)
  }
  return crc
}

/**
 * Reads the source ranges one block copies from, merged where copies are close (bsdiff-style deltas
 * copy mostly forwards through nearby source), into one reused arena, all reads in flight at once.
 * Returns the block's copier.
 */
async function fetchRanges(
  source: RandomAccessReader,
  pieces: readonly number[],
  copyTotal: number,
  arena: Arena,
): Promise<CopySource> {
  const order: number[] = []
  for (let p = 0; p < pieces.length; p += 3) if (pieces[p]! > 0) order.push(p)
  order.sort((a, b) => pieces[a + 2]! - pieces[b + 2]!)
  const starts: number[] = []
  const ends: number[] = []
  let gapBudget = copyTotal
  for (const p of order) {
    const s = pieces[p + 2]!
    const e = s + pieces[p]!
    const last = ends.length - 1
    if (last >= 0 && s <= ends[last]! + MERGE_GAP && s - ends[last]! <= gapBudget) {
      if (s > ends[last]!) gapBudget -= s - ends[last]!
      if (e > ends[last]!) ends[last] = e
    } else {
      starts.push(s)
      ends.push(e)
    }
  }
  // Range k lives at arena[at[k], at[k] + length).
  const at: number[] = []
  let total = 0
  for (let k = 0; k < starts.length; k++) {
    at.push(total)
    total += ends[k]! - starts[k]!
  }
  const buf = arena.take(total)
  const got = await Promise.all(
    starts.map((s, k) => readFully(source, s, buf.subarray(at[k]!, at[k]! + ends[k]! - s))),
  )
  for (let k = 0; k < got.length; k++) {
    check(got[k] === ends[k]! - starts[k]!, 'source-mismatch', 'source reader returned a short read')
  }
  return (pos, len, dst, to) => {
    // The last range starting at or before pos covers the whole copy (ranges were merged from copies).
    let lo = 0
    let hi = starts.length - 1
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1
      if (starts[mid]! <= pos) lo = mid
      else hi = mid - 1
    }
    const from = at[lo]! + pos - starts[lo]!
    dst.set(buf.subarray(from, from + len), to)
  }
}

/** A buffer reused block after block, grown (never shrunk) to the largest request. */
class Arena {
  private buf = new Uint8Array(0)

  take(n: number): Uint8Array {
    if (this.buf.length < n) this.buf = new Uint8Array(Math.max(n, Math.ceil(this.buf.length * 1.5)))
    return this.buf.subarray(0, n)
  }
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
