import { check, DeltaFormatError } from '../errors.ts'
import { reconstruct } from '../fec/index.ts'
import type { ByteSink, ByteSource } from '../io.ts'
import { verifyBlock } from './block.ts'
import { type ControlHints, decodeControlPayload } from './control.ts'
import { FLAG_FINAL_DATA, HEADER_SIZE, readHeader } from './header.ts'
import {
  type BlockRange,
  type BlockRole,
  dataLengthOf,
  groupDataCount,
  groupFirstBlock,
  layoutOf,
  roleOf,
  type StreamLayout,
} from './layout.ts'
import {
  decodeMetadata,
  MAX_BLOCK_SIZE,
  type StreamMetadata,
  streamTagOf,
  validateMetadata,
} from './metadata.ts'
import { Sha256 } from './sha256.ts'

export interface ReassemblerOptions {
  /** Known up front (e.g. from a manifest) so ranges without block 0 decode immediately. */
  metadata?: StreamMetadata
  /** Groups held beyond the next one to emit; blocks further ahead are dropped and reported missing. */
  maxBufferedGroups?: number
  /**
   * Groups before this one were already written (and made durable) by an earlier run: start emitting
   * here. The whole-payload sha256 then cannot be computed on the way out, so `payloadVerified` stays
   * false and the caller hashes the assembled file instead. Needs `metadata`.
   */
  resumeAtGroup?: number
}

export interface ReassemblyReport {
  complete: boolean
  bytesWritten: number
  /** The whole payload was written and matched the metadata's sha256. */
  payloadVerified: boolean
  /** Data blocks rebuilt from parity. */
  recoveredBlocks: number
  /** Sequence numbers of blocks that failed a check (treated as erasures). */
  corruptBlocks: number[]
  /** Blocks ignored because they were too far ahead of the output. */
  droppedBlocks: number
  /** Missing data blocks of every group that cannot be decoded from what arrived. */
  unrecoverable: BlockRange[]
  /** A subset of `unrecoverable` that is just enough to make every group decodable. */
  minimalRefetch: BlockRange[]
  hints: ControlHints | null
}

interface GroupState {
  /** Payload areas, data then parity; null until a verified copy arrives. */
  blocks: (Uint8Array | null)[]
  available: number
}

interface Carry {
  start: number
  /** Grows with the bytes that arrive (doubling, up to the framed block size). */
  buf: Uint8Array
  fill: number
}

/** A carry starts with room for this much (or the piece it starts with, twice over). */
const CARRY_START_BYTES = 16 * 1024

/**
 * Appends to a partial block. The buffer grows as bytes arrive rather than being the whole framed block
 * (up to 16 MiB) from the first byte: every response cut off mid-block leaves one carry behind.
 */
function appendToCarry(carry: Carry, piece: Uint8Array, framedSize: number): void {
  if (carry.fill + piece.length > carry.buf.length) {
    const room = Math.max(carry.fill + piece.length, carry.buf.length * 2)
    const grown = new Uint8Array(Math.min(framedSize, room))
    grown.set(carry.buf.subarray(0, carry.fill))
    carry.buf = grown
  }
  carry.buf.set(piece, carry.fill)
  carry.fill += piece.length
}

function coalesce(sequences: number[]): BlockRange[] {
  const out: BlockRange[] = []
  for (const s of sequences) {
    const last = out[out.length - 1]
    if (last && last.firstBlock + last.count === s) last.count++
    else out.push({ firstBlock: s, count: 1 })
  }
  return out
}

/**
 * Rebuilds the payload from byte ranges of a framed stream that arrive in any order, with gaps and
 * corruption. Each block is verified; bad blocks become erasures that FEC repairs (up to m per group)
 * without a round trip. Output goes to the sink strictly in order, one group at a time; `report()`
 * names the blocks to re-fetch. The output is hashed on the way out and checked against the metadata's
 * sha256 once complete. Pushes are serialized internally, so callers may fire them without
 * awaiting. Only a broken stream (bad metadata, ranges outside the stream) throws DeltaFormatError.
 */
export class StreamReassembler {
  readonly #sink: ByteSink
  readonly #maxAhead: number
  #meta: StreamMetadata | null = null
  #layout: StreamLayout | null = null
  #tag = 0
  #metaSeen = false
  /** Raw pushes held until block 0 tells us the block size. */
  #pending: { offset: number; bytes: Uint8Array }[] = []
  /**
   * How far the pending pushes cover the stream from byte 0 without a gap, and the pushes past a gap.
   * Kept as pushes arrive, so block 0 is parsed only when enough of it is there (`#metadataNeeds`):
   * rebuilding the prefix on every push was quadratic (a response trickled in small pieces).
   */
  #contiguousEnd = 0
  #pastGap: { offset: number; end: number }[] = []
  /** Contiguous bytes the next parse of block 0 needs: its header, then what the header says. */
  #metadataNeeds = HEADER_SIZE
  /** Unfinished trailing blocks, keyed by the byte offset where the next push must start. */
  readonly #carries = new Map<number, Carry>()
  readonly #groups = new Map<number, GroupState>()
  #nextGroup = 0
  #bytesWritten = 0
  #recovered = 0
  #dropped = 0
  readonly #corrupt = new Set<number>()
  #hints: ControlHints | null = null
  readonly #hash = new Sha256()
  #verifiedPayload = false
  /** False when resuming mid-stream: the prefix was hashed by nobody here. */
  #hashing = true
  #queue: Promise<void> = Promise.resolve()

  constructor(sink: ByteSink, options: ReassemblerOptions = {}) {
    this.#sink = sink
    this.#maxAhead = options.maxBufferedGroups ?? 16
    check(
      Number.isInteger(this.#maxAhead) && this.#maxAhead >= 1,
      'stream.bad-params',
      'maxBufferedGroups must be >= 1',
    )
    if (options.metadata) this.#adopt(options.metadata)
    const resumeAt = options.resumeAtGroup ?? 0
    if (resumeAt > 0) {
      const layout = this.#layout
      check(layout !== null, 'stream.bad-params', 'resumeAtGroup needs the metadata up front')
      check(
        Number.isInteger(resumeAt) && resumeAt <= layout.groups,
        'stream.bad-params',
        'resumeAtGroup is past the end',
      )
      this.#nextGroup = resumeAt
      this.#bytesWritten = Math.min(resumeAt * layout.k * layout.blockSize, layout.payloadLength)
      this.#hashing = false
    }
  }

  get metadata(): StreamMetadata | null {
    return this.#meta
  }

  get layout(): StreamLayout | null {
    return this.#layout
  }

  /**
   * Bytes of stream held right now: pushes waiting for block 0, partial blocks and the verified blocks
   * of groups not yet written. Bounded by the groups in flight, not by how much of the stream went by.
   */
  get retainedBytes(): number {
    let held = 0
    for (const p of this.#pending) held += p.bytes.length
    for (const carry of this.#carries.values()) held += carry.buf.length
    for (const st of this.#groups.values()) for (const b of st.blocks) held += b?.length ?? 0
    return held
  }

  /** Feeds `bytes` found at stream byte `offset`. A push continuing exactly where an earlier one ended completes its partial block. */
  push(offset: number, bytes: Uint8Array): Promise<void> {
    const run = this.#queue.then(() => this.#push(offset, bytes))
    this.#queue = run.catch(() => {})
    return run
  }

  /** Feeds a response body that starts at stream byte `offset`. */
  async pushSource(offset: number, source: ByteSource): Promise<void> {
    for await (const chunk of source) {
      await this.push(offset, chunk)
      offset += chunk.length
    }
  }

  async report(): Promise<ReassemblyReport> {
    await this.#queue
    const layout = this.#layout
    const missing: number[] = []
    const minimal: number[] = []
    if (!layout) {
      missing.push(0)
      minimal.push(0)
    } else {
      for (let g = this.#nextGroup; g < layout.groups; g++) {
        const kk = groupDataCount(g, layout)
        const st = this.#groups.get(g)
        let need = kk - (st?.available ?? 0)
        if (need <= 0) continue
        const first = groupFirstBlock(g, layout)
        for (let j = 0; j < kk; j++) {
          if (st?.blocks[j]) continue
          missing.push(first + j)
          if (need-- > 0) minimal.push(first + j)
        }
      }
    }
    return {
      complete: layout !== null && this.#nextGroup === layout.groups,
      bytesWritten: this.#bytesWritten,
      payloadVerified: this.#verifiedPayload,
      recoveredBlocks: this.#recovered,
      corruptBlocks: [...this.#corrupt].sort((a, b) => a - b),
      droppedBlocks: this.#dropped,
      unrecoverable: coalesce(missing),
      minimalRefetch: coalesce(minimal),
      hints: this.#hints,
    }
  }

  #adopt(meta: StreamMetadata): void {
    this.#meta = validateMetadata(meta)
    this.#layout = layoutOf(meta)
    this.#tag = streamTagOf(meta.sha256)
  }

  async #push(offset: number, bytes: Uint8Array): Promise<void> {
    check(Number.isSafeInteger(offset) && offset >= 0, 'stream.bad-range', `bad offset ${offset}`)
    if (this.#layout) return this.#ingest(offset, bytes)
    this.#pending.push({ offset, bytes: bytes.slice() })
    this.#cover(offset, offset + bytes.length)
    if (this.#contiguousEnd < this.#metadataNeeds) return
    this.#tryMetadata()
    if (!this.#layout) return
    // In offset order, so pieces of one response reconnect through the carry.
    const pending = this.#pending.sort((a, b) => a.offset - b.offset)
    this.#pending = []
    for (const p of pending) await this.#ingest(p.offset, p.bytes)
  }

  /** Extends the gap-free cover from byte 0 by a push of [offset, end). */
  #cover(offset: number, end: number): void {
    if (offset > this.#contiguousEnd) {
      this.#pastGap.push({ offset, end })
      return
    }
    this.#contiguousEnd = Math.max(this.#contiguousEnd, end)
    // Pushes past a gap this one closed. In order (one response read piece by piece) there are none.
    for (let closed = true; closed && this.#pastGap.length > 0; ) {
      const before = this.#pastGap.length
      this.#pastGap = this.#pastGap.filter((p) => {
        if (p.offset > this.#contiguousEnd) return true
        this.#contiguousEnd = Math.max(this.#contiguousEnd, p.end)
        return false
      })
      closed = this.#pastGap.length < before
    }
  }

  /** Parses block 0 once the pending pushes hold a contiguous prefix long enough for it. */
  #tryMetadata(): void {
    const sorted = [...this.#pending].sort((a, b) => a.offset - b.offset)
    const parts: Uint8Array[] = []
    let end = 0
    for (const p of sorted) {
      if (p.offset > end) break
      if (p.offset + p.bytes.length > end) {
        parts.push(p.bytes.subarray(end - p.offset))
        end = p.offset + p.bytes.length
      }
    }
    if (end < HEADER_SIZE) return
    const prefix = new Uint8Array(end)
    let at = 0
    for (const part of parts) {
      prefix.set(part, at)
      at += part.length
    }
    try {
      this.#metadataNeeds = this.#parseMetadata(prefix)
    } catch (e) {
      // Forget the bad prefix so a re-fetched block 0 can succeed.
      this.#pending = this.#pending.filter((p) => p.offset >= end)
      this.#contiguousEnd = 0
      this.#pastGap = this.#pending.map((p) => ({ offset: p.offset, end: p.offset + p.bytes.length }))
      this.#metadataNeeds = HEADER_SIZE
      throw e
    }
  }

  /** Adopts block 0's metadata from `prefix`, or returns how many bytes of prefix that takes. */
  #parseMetadata(prefix: Uint8Array): number {
    const header = readHeader(prefix)
    check(
      header.type === 'metadata' &&
        header.sequence === 0 &&
        header.flags === 0 &&
        header.group === 0 &&
        header.indexInGroup === 0,
      'stream.bad-metadata',
      'block 0 is not a metadata block',
    )
    check(header.payloadLength <= MAX_BLOCK_SIZE, 'stream.bad-metadata', 'metadata block too long')
    if (prefix.length < HEADER_SIZE + header.payloadLength) return HEADER_SIZE + header.payloadLength
    const meta = decodeMetadata(prefix.subarray(HEADER_SIZE, HEADER_SIZE + header.payloadLength))
    const framed = HEADER_SIZE + meta.blockSize
    if (prefix.length < framed) return framed
    verifyBlock(prefix.subarray(0, framed), meta.blockSize)
    check(
      header.streamTag === streamTagOf(meta.sha256),
      'stream.bad-metadata',
      'metadata stream tag mismatch',
    )
    this.#adopt(meta)
    this.#metaSeen = true
    return 0
  }

  async #ingest(offset: number, bytes: Uint8Array): Promise<void> {
    const layout = this.#layout!
    const F = layout.framedSize
    check(
      offset + bytes.length <= layout.totalBytes,
      'stream.bad-range',
      `bytes ${offset}+${bytes.length} beyond the stream end`,
    )
    let at = 0
    const carry = this.#carries.get(offset)
    if (carry) {
      this.#carries.delete(offset)
      at = Math.min(F - carry.fill, bytes.length)
      appendToCarry(carry, bytes.subarray(0, at), F)
      if (carry.fill < F) {
        this.#carries.set(offset + at, carry)
        return
      }
      this.#handleBlock(carry.start / F, carry.buf)
    } else if (offset % F !== 0) {
      // The head of a block whose start we never saw cannot be placed; that block stays missing.
      at = Math.min(F - (offset % F), bytes.length)
    }
    for (; bytes.length - at >= F; at += F) this.#handleBlock((offset + at) / F, bytes.subarray(at, at + F))
    if (at < bytes.length) {
      const rest = bytes.subarray(at)
      const carry = {
        start: offset + at,
        buf: new Uint8Array(Math.min(F, Math.max(CARRY_START_BYTES, 2 * rest.length))),
        fill: 0,
      }
      appendToCarry(carry, rest, F)
      this.#carries.set(offset + bytes.length, carry)
    }
    await this.#drain()
  }

  #handleBlock(sequence: number, frame: Uint8Array): void {
    const layout = this.#layout!
    const role = roleOf(sequence, layout)
    if (role.kind === 'metadata') {
      this.#handleMetadata(frame)
      return
    }
    if (role.kind === 'control') {
      const area = this.#verified(sequence, frame, role)
      if (area) this.#hints = this.#guard(sequence, () => decodeControlPayload(area)) ?? this.#hints
      return
    }
    const { group, index } = role
    if (group < this.#nextGroup) return
    if (group >= this.#nextGroup + this.#maxAhead) {
      this.#dropped++
      return
    }
    let st = this.#groups.get(group)
    if (!st) {
      st = { blocks: new Array(groupDataCount(group, layout) + layout.m).fill(null), available: 0 }
      this.#groups.set(group, st)
    }
    if (st.blocks[index]) return
    const area = this.#verified(sequence, frame, role)
    if (!area) return
    st.blocks[index] = area
    st.available++
  }

  /**
   * The verified payload (true length for metadata/control, the full area for data and parity, since
   * parity covers the padding), or null after
   * recording the block as corrupt. Checks both integrity and that the block belongs exactly here.
   */
  #verified(sequence: number, frame: Uint8Array, role: BlockRole): Uint8Array | null {
    const layout = this.#layout!
    return this.#guard(sequence, () => {
      const { header, area } = verifyBlock(frame, layout.blockSize)
      const where = `block ${sequence}`
      check(
        header.type === role.kind && header.sequence === sequence,
        'stream.misplaced-block',
        `${where}: wrong type or sequence`,
      )
      check(header.streamTag === this.#tag, 'stream.misplaced-block', `${where}: belongs to another stream`)
      if (role.kind === 'data' || role.kind === 'parity') {
        check(
          header.group === role.group && header.indexInGroup === role.index,
          'stream.misplaced-block',
          `${where}: wrong group slot`,
        )
      } else {
        // Metadata and control blocks belong to no group: the format has these fields 0.
        check(
          header.group === 0 && header.indexInGroup === 0,
          'stream.misplaced-block',
          `${where}: a group slot on a ${role.kind} block`,
        )
      }
      // The final flag marks the last data block only; every other block has no flag.
      if (role.kind !== 'data')
        check(header.flags === 0, 'stream.bad-block', `${where}: flags on a ${role.kind} block`)
      if (role.kind === 'data') {
        const final = role.dataIndex === layout.dataBlocks - 1 ? FLAG_FINAL_DATA : 0
        check(header.flags === final, 'stream.bad-block', `${where}: wrong flags`)
        check(
          header.payloadLength === dataLengthOf(role.dataIndex, layout),
          'stream.bad-block',
          `${where}: wrong length`,
        )
        // Parity is computed over zero padding: a block padded otherwise (its CRC may still match) would
        // turn the repair of another block of its group into a sha256 mismatch, so it is an erasure.
        check(
          area.subarray(header.payloadLength).every((b) => b === 0),
          'stream.bad-block',
          `${where}: padding is not zero`,
        )
      }
      if (role.kind === 'parity')
        check(header.payloadLength === layout.blockSize, 'stream.bad-block', `${where}: wrong length`)
      // Copy: the frame may be the caller's buffer.
      return area.slice(
        0,
        role.kind === 'data' || role.kind === 'parity' ? layout.blockSize : header.payloadLength,
      )
    })
  }

  #guard<T>(sequence: number, fn: () => T): T | null {
    try {
      return fn()
    } catch (e) {
      if (!(e instanceof DeltaFormatError)) throw e
      this.#corrupt.add(sequence)
      return null
    }
  }

  #handleMetadata(frame: Uint8Array): void {
    if (this.#metaSeen) return
    const area = this.#verified(0, frame, { kind: 'metadata' })
    if (!area) return
    // A verified block 0 that disagrees with the metadata we were given means we are mixing streams.
    const theirs = JSON.stringify(decodeMetadata(area))
    check(
      theirs === JSON.stringify(this.#meta),
      'stream.metadata-mismatch',
      'block 0 disagrees with the given metadata',
    )
    this.#metaSeen = true
  }

  /**
   * Forgets partial blocks that lie before group `group` (written groups, block 0, control blocks): they
   * can produce nothing any more. A response cut off mid-block is retried from its start, so its carry
   * is never continued; kept, every cut-off left up to a framed block behind until the transfer ended.
   * A response still streaming through such a block just resumes at the next block boundary.
   */
  #releaseCarriesBefore(group: number): void {
    const layout = this.#layout!
    const end = group < layout.groups ? groupFirstBlock(group, layout) * layout.framedSize : layout.totalBytes
    for (const [key, carry] of this.#carries) if (carry.start < end) this.#carries.delete(key)
  }

  async #drain(): Promise<void> {
    const layout = this.#layout!
    while (this.#nextGroup < layout.groups) {
      const g = this.#nextGroup
      const st = this.#groups.get(g)
      const kk = groupDataCount(g, layout)
      if (!st || st.available < kk) return
      let lost = 0
      for (let j = 0; j < kk; j++) if (!st.blocks[j]) lost++
      const data = lost > 0 ? reconstruct(st.blocks, kk, layout.m) : (st.blocks.slice(0, kk) as Uint8Array[])
      this.#recovered += lost
      this.#groups.delete(g)
      this.#nextGroup++
      this.#releaseCarriesBefore(this.#nextGroup)
      for (let j = 0; j < kk; j++) {
        const length = dataLengthOf(g * layout.k + j, layout)
        const bytes = data[j]!.subarray(0, length)
        if (this.#hashing) this.#hash.update(bytes)
        await this.#sink.write(bytes)
        this.#bytesWritten += length
      }
    }
    if (!this.#verifiedPayload && this.#hashing) {
      // Every block passed its checks, so a mismatch here means the sender framed the wrong payload.
      const actual = this.#hash.digestHex()
      check(
        actual === this.#meta!.sha256,
        'stream.sha256-mismatch',
        `payload sha256 ${actual} != ${this.#meta!.sha256}`,
      )
      this.#verifiedPayload = true
    }
  }
}
