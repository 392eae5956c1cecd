/**
 * Streaming apply: memory is one block (its compressed streams, their inflated form, the source ranges
 * it copies from and one reused output buffer), never the whole delta, source or target. Output is
 * written block by block *before* the final target checksum can be verified, so callers must treat
 * everything written as provisional until this resolves.
 */
import { check, DeltaFormatError } from '../errors.ts'
import { type ByteSink, type ByteSource, type RandomAccessReader, readFully } from '../io.ts'
import { lastAtOrBefore } from '../sorted.ts'
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
import type { InflateHost } from './inflate.ts'

/** Source bytes per read while checksumming the source. */
const CRC_CHUNK = 1 << 20
/** Copies closer than this share one source read; a block's reads stay under twice its copy bytes. */
const MERGE_GAP = 16 * 1024

/** `host` may lend a faster raw inflate for the block streams (inflate.ts). */
export async function applyApproxDeltaStream(
  source: RandomAccessReader,
  delta: ByteSource,
  sink: ByteSink,
  limits?: ApproxLimits,
  host?: InflateHost,
): Promise<void> {
  const input = new ExactReader(delta)
  const h = parseHeader(await input.read(HEADER_SIZE), resolveLimits(limits))
  const count = blockCount(h)
  // One output buffer for every block: sinks are done with a chunk once write() resolves.
  const out = new Uint8Array(Math.min(h.blockSize, h.targetLength))
  const inflaters = blockInflaters(host)
  const arena = new Arena()
  const readBlock = async (i: number) => {
    const header = parseBlockHeader(await input.read(BLOCK_HEADER_SIZE), h, i)
    const block = decodeBlock(header, await input.read(payloadSize(header)), h.sourceLength, inflaters)
    return { header, block, plan: planRanges(block.pieces, copyBytes(header)) }
  }

  // The source is checksummed before anything is written, and that pass already reads most of it:
  // block 0 is decoded first so the same reads also fill its copy ranges (for a single-block delta,
  // i.e. every target up to 16 MiB, the source is then read exactly once).
  checkSource(h, source.size, 0, false)
  let first: Awaited<ReturnType<typeof readBlock>> | undefined
  try {
    first = count > 0 ? await readBlock(0) : undefined
  } catch (e) {
    // A wrong source is still reported as such when the delta is damaged too.
    if (e instanceof DeltaFormatError)
      checkSource(h, source.size, await sourceCrc(source, EMPTY_PLAN, out.subarray(0, 0)))
    throw e
  }
  const firstBuf = arena.take(first?.plan.total ?? 0)
  checkSource(h, source.size, await sourceCrc(source, first?.plan ?? EMPTY_PLAN, firstBuf))

  let targetCrc = 0
  for (let i = 0; i < count; i++) {
    const { header, block, plan } = i === 0 && first ? first : await readBlock(i)
    const buf = i === 0 ? firstBuf : await readRanges(source, plan, arena)
    const target = out.subarray(0, header.targetBytes)
    replayBlock(block, copier(plan, buf), target, 0)
    // The sink only reads the chunk, so it can be summed while an asynchronous sink writes it.
    const written = sink.write(target)
    targetCrc = crc32Update(targetCrc, target)
    await written
  }
  check(await input.atEnd(), 'trailing-bytes', 'bytes after the last block')
  check(targetCrc === h.targetCrc, 'target-mismatch', 'reconstructed target fails its checksum')
}

/** Source ranges one block copies from: range k is source[starts[k], ends[k]) at buffer offset at[k]. */
interface RangePlan {
  starts: number[]
  ends: number[]
  at: number[]
  total: number
}

const EMPTY_PLAN: RangePlan = { starts: [], ends: [], at: [], total: 0 }

/**
 * CRC of the whole source, read in pieces of at most CRC_CHUNK, the next piece read while the current
 * one is summed. Pieces inside a planned range are read straight into `buf` (where the block's copier
 * expects them); the rest go through two reused scratch buffers.
 */
async function sourceCrc(source: RandomAccessReader, plan: RangePlan, buf: Uint8Array): Promise<number> {
  const size = source.size
  const { starts, ends, at: offsets } = plan
  const scratch: Uint8Array[] = []
  let k = 0
  let flip = 0
  const read = async (at: number): Promise<Uint8Array> => {
    while (k < starts.length && ends[k]! <= at) k++
    let into: Uint8Array
    if (k < starts.length && starts[k]! <= at) {
      const from = offsets[k]! + at - starts[k]!
      into = buf.subarray(from, from + Math.min(ends[k]!, at + CRC_CHUNK) - at)
    } else {
      const end = Math.min(k < starts.length ? starts[k]! : size, at + CRC_CHUNK)
      flip ^= 1
      scratch[flip] ??= new Uint8Array(Math.min(CRC_CHUNK, size))
      into = scratch[flip]!.subarray(0, end - at)
    }
    const got = await readFully(source, at, into)
    check(got === into.length, 'source-mismatch', 'source reader returned a short read')
    return into
  }
  let crc = 0
  let pending = size > 0 ? read(0) : null
  for (let at = 0; pending; ) {
    const chunk = await pending
    at += chunk.length
    pending = at < size ? read(at) : null
    crc = crc32Update(crc, chunk)
  }
  return crc
}

/**
 * Plans the source ranges one block copies from, merged where copies are close (bsdiff-style deltas
 * copy mostly forwards through nearby source); a block's reads stay under twice its copy bytes.
 */
function planRanges(pieces: readonly number[], copyTotal: number): RangePlan {
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
  const at: number[] = []
  let total = 0
  for (let k = 0; k < starts.length; k++) {
    at.push(total)
    total += ends[k]! - starts[k]!
  }
  return { starts, ends, at, total }
}

/** Reads a plan's ranges into the reused arena, all reads in flight at once. */
async function readRanges(source: RandomAccessReader, plan: RangePlan, arena: Arena): Promise<Uint8Array> {
  const { starts, ends, at } = plan
  const buf = arena.take(plan.total)
  const got = await Promise.all(
    starts.map((s, k) => readFully(source, s, buf.subarray(at[k]!, at[k]! + ends[k]! - s))),
  )
  for (let k = 0; k < got.length; k++) {
    check(got[k] === ends[k]! - starts[k]!, 'source-mismatch', 'source reader returned a short read')
  }
  return buf
}

/** The block's copier over a plan's ranges held in `buf`. */
function copier(plan: RangePlan, buf: Uint8Array): CopySource {
  const { starts, at } = plan
  return (pos, len, dst, to) => {
    // The last range starting at or before pos covers the whole copy (ranges were merged from copies).
    const lo = lastAtOrBefore(starts, pos)
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

/** A read spanning chunks starts with this much room (what a block's streams usually take, or less). */
const READ_START = 1 << 20

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
    // `n` comes from a block header: the buffer grows with the bytes that actually arrive (doubling,
    // never past n), so a truncated delta claiming hundreds of MiB of streams costs what it sent.
    let out = new Uint8Array(Math.min(n, READ_START))
    let got = 0
    while (got < n) {
      check(await this.fill(), 'truncated', `delta ends ${n - got} bytes early`)
      const take = Math.min(n - got, this.chunk.length - this.offset)
      if (got + take > out.length) {
        const grown = new Uint8Array(Math.min(n, Math.max(got + take, out.length * 2)))
        grown.set(out.subarray(0, got))
        out = grown
      }
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
