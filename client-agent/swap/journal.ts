import { constants } from 'node:fs'
import { type FileHandle, open, rename, rm } from 'node:fs/promises'
import { dirname } from 'node:path'
import { crc32 } from 'node:zlib'
import { JournalRecord, type JournalWrite } from '../../schemas/swap.ts'
import { fsyncDir } from '../fs/atomic.ts'
import { makeDirs } from '../fs/make-dirs.ts'
import { type DecodedPayload, PayloadDecoder } from './journal-payload.ts'

const { O_APPEND, O_CREAT, O_RDWR, O_TRUNC } = constants

/** Frame header: u32 LE payload length, u32 LE CRC-32 of the payload. */
const HEADER = 8
/** Largest payload a frame may claim; anything above is a torn or hostile header, not a record. */
export const MAX_RECORD_BYTES = 128 * 1024 * 1024

/**
 * Frames are read at open through a window this large. A larger frame is read through it in pieces and
 * decoded as it goes (journal-payload.ts), as are the payloads read back and copied later: no frame is
 * ever in memory whole, only a read-back body (decoded, as the service gets it).
 */
export const READ_WINDOW = 1024 * 1024

export interface RecoveredJournal<W = JournalWrite> {
  /** Writes with no `done` record, in journal (= arrival) order. */
  pending: W[]
  /** Highest id seen, so new ids never collide with journaled ones. */
  lastId: number
  /** Bytes of whole, checksummed frames; anything after was a torn tail and has been cut off. */
  validBytes: number
  tornBytes: number
  /** Whole, checksummed frames that did not hold a valid record (skipped, not replayed). */
  skipped: number
}

/** Where a journaled write's body sits in the file, to read it back once it left memory. */
export interface BodyLocation {
  offset: number
  length: number
}

/**
 * A write recovered at open: its record, with its body (base64) only while the bodies kept so far fit
 * `open`'s `bodyBytes`; the others are read back from `location` (the journal's own object, moved by a
 * compaction) when they are needed.
 */
export type RecoveredWrite = Omit<JournalWrite, 'body'> & {
  body: string | null
  /** Decoded body bytes. */
  size: number
  location: BodyLocation
}

/**
 * The swap journal: an append-only file of length-prefixed, CRC-checked JSON records
 * (docs/formats/swap-journal.md). Appends are group-committed: every record queued while an fsync runs
 * goes into the next write + fsync, and each append resolves only once its bytes are durable.
 */
export class SwapJournal {
  readonly path: string
  private handle: FileHandle | null = null
  private size = 0
  private queue: Array<{
    frame: Buffer
    /** The id of a `w` record (owed until its `d` record is appended). */
    write: number | null
    resolve: (at: BodyLocation) => void
    reject: (e: Error) => void
  }> = []
  /** Compactions asked for: done by the flush loop, between batches, never beside an append. */
  private compactions: Array<{ resolve: () => void; reject: (e: Error) => void }> = []
  /**
   * Writes appended (or being appended: no location yet) with no `d` record yet, and where each one's
   * payload sits. A compaction copies exactly these, and moves the location objects (shared with the
   * callers' `BodyLocation`s) to where the copy sits.
   */
  private readonly owed = new Map<number, BodyLocation | null>()
  /** Reads of held writes' bodies under way: a compaction waits for them before it swaps the file. */
  private readonly reads = new Set<Promise<unknown>>()
  /** Set while a compaction swaps the file: reads wait for it. */
  private compacting: Promise<void> | null = null
  private flushing: Promise<void> | null = null
  /**
   * The frame of the `d` record with the highest id appended or read. A compaction that keeps only lower
   * ids copies it too: recovery continues ids above the highest record read, and without it a restart
   * after a compaction handed out again the ids of writes replayed (with that id in x-deltaport-replay)
   * before the compaction, which a service recognising repeats by it would drop as repeats.
   */
  private lastDone: { id: number; frame: Buffer } | null = null
  /** `size` right after the last compaction: nothing appended since, the file is compacted already. */
  private compactedSize: number | null = null
  /** Set when a failed append's bytes could not be cut off the file: nothing more is appended. */
  private unusable: Error | null = null

  constructor(path: string) {
    this.path = path
  }

  /** The file a compaction writes before it is renamed over the journal. */
  get compactPath(): string {
    return `${this.path}.compact`
  }

  /**
   * Opens (creating) the journal, drops a torn tail, and returns the writes still owed a replay. A
   * compaction's file left by a crash before its rename is deleted (the journal was not replaced yet).
   * The file is read frame by frame through a bounded window, and only the records' metadata is kept
   * while it is scanned, so memory stays at about one frame however large the journal is. Then the
   * pending writes' bodies are read back, in order, while their decoded sizes fit `bodyBytes` (the
   * buffer's `memoryBytes`); the others come back with `body: null`.
   */
  async open(options: { bodyBytes?: number } = {}): Promise<RecoveredJournal<RecoveredWrite>> {
    const bodyBytes = options.bodyBytes ?? Number.POSITIVE_INFINITY
    await makeDirs(dirname(this.path))
    await rm(this.compactPath, { force: true })
    const handle = await open(this.path, 'a+')
    this.handle = handle
    const scan = new JournalScan<Omit<JournalWrite, 'body'> & { size: number }>(
      ({ body, ...meta }, size) => ({
        ...meta,
        size,
      }),
    )
    const size = (await handle.stat()).size
    const window = Buffer.allocUnsafe(Math.min(READ_WINDOW, size))
    // The window holds the file's bytes [start, start + filled).
    let start = 0
    let filled = 0
    const bytesAt = async (offset: number, n: number): Promise<Buffer> => {
      if (offset >= start && offset + n <= start + filled)
        return window.subarray(offset - start, offset - start + n)
      start = offset
      filled = await readFully(handle, window, Math.min(window.length, size - offset), offset)
      return window.subarray(0, Math.min(n, filled))
    }
    let offset = 0
    while (offset + HEADER <= size) {
      const header = await bytesAt(offset, HEADER)
      if (header.length < HEADER) break
      const length = header.readUInt32LE(0)
      const sum = header.readUInt32LE(4)
      if (length > MAX_RECORD_BYTES || offset + HEADER + length > size) break
      if (length > READ_WINDOW) {
        // Larger than the window: decoded piece by piece through it, its body only counted.
        const decoded = new PayloadDecoder()
        await readPieces(handle, window, offset + HEADER, length, (piece) => decoded.feed(piece))
        start = 0
        filled = 0
        if (!scan.takeDecoded(decoded.finish(), sum, offset + HEADER, length)) break
      } else {
        const payload = await bytesAt(offset + HEADER, length)
        if (payload.length < length || !scan.take(payload, sum, offset + HEADER)) break
      }
      offset += HEADER + length
    }
    const recovered = scan.result(offset, size - offset)
    if (scan.lastDone) this.lastDone = { id: scan.lastDone.id, frame: frameOf(scan.lastDone) }
    if (recovered.tornBytes > 0) {
      await handle.truncate(recovered.validBytes)
      await handle.sync()
    }
    this.size = recovered.validBytes
    const pending: RecoveredWrite[] = []
    let kept = 0
    for (const write of recovered.pending) {
      const location = scan.locations.get(write.id)!
      this.owed.set(write.id, location)
      let body: string | null = null
      if (kept + write.size <= bodyBytes) {
        body = (await this.readWrite(location)).body
        kept += write.size
      }
      pending.push({ ...write, body, location })
    }
    await fsyncDir(dirname(this.path))
    return { ...recovered, pending }
  }

  /** Appends one record; resolves with where its payload sits once it is on disk. */
  append(record: JournalRecord): Promise<BodyLocation> {
    const frame = frameOf(record)
    if (frame.length - HEADER > MAX_RECORD_BYTES)
      return Promise.reject(new RangeError('journal record too large'))
    if (record.t === 'w') this.owed.set(record.id, null)
    else {
      this.owed.delete(record.id)
      if (record.id > (this.lastDone?.id ?? -1)) this.lastDone = { id: record.id, frame }
    }
    return new Promise((resolve, reject) => {
      this.queue.push({ frame, write: record.t === 'w' ? record.id : null, resolve, reject })
      this.startFlushing()
    })
  }

  /**
   * Where an owed write's payload sits (null: not owed, or not written yet). The object is the journal's
   * own: a compaction moves it, so a holder can read the body back later with `readWrite`.
   */
  locationOf(id: number): BodyLocation | null {
    return this.owed.get(id) ?? null
  }

  /**
   * Reads back a record's payload (a write whose body was dropped from memory). `at` is the object its
   * append returned: a compaction moves it with the record.
   */
  async readWrite(at: BodyLocation): Promise<JournalWrite> {
    if (at.length > READ_WINDOW) {
      const { record, body } = await this.readBody(at)
      return { ...record, body: body.toString('base64') }
    }
    while (this.compacting) await this.compacting
    const read = this.readPayload(at)
    this.reads.add(read)
    try {
      const record = JournalRecord.parse(JSON.parse((await read).toString('utf8')))
      if (record.t !== 'w') throw new Error('journal offset does not hold a write')
      return record
    } finally {
      this.reads.delete(read)
    }
  }

  /**
   * Reads back a write's record and its body's bytes. A payload larger than the read window is read in
   * pieces and its base64 decoded as it comes, so the memory it takes is the body's bytes and a piece,
   * not the frame (and its text, and its parsed string) besides.
   */
  async readBody(at: BodyLocation): Promise<{ record: JournalWrite; body: Buffer }> {
    if (at.length <= READ_WINDOW) {
      const record = await this.readWrite(at)
      return { record, body: Buffer.from(record.body, 'base64') }
    }
    while (this.compacting) await this.compacting
    const read = (async () => {
      if (!this.handle) throw new Error('journal not open')
      const into = Buffer.allocUnsafe(Math.floor((at.length * 3) / 4))
      const decoder = new PayloadDecoder(into)
      const piece = Buffer.allocUnsafe(READ_WINDOW)
      await readPieces(this.handle, piece, at.offset, at.length, (bytes) => decoder.feed(bytes))
      const decoded = decoder.finish()
      if (decoded.record?.t !== 'w') throw new Error('journal offset does not hold a write')
      return { record: decoded.record, body: into.subarray(0, decoder.written) }
    })()
    this.reads.add(read)
    try {
      return await read
    } finally {
      this.reads.delete(read)
    }
  }

  private async readPayload(at: BodyLocation): Promise<Buffer> {
    if (!this.handle) throw new Error('journal not open')
    const buffer = Buffer.alloc(at.length)
    const { bytesRead } = await this.handle.read(buffer, 0, at.length, at.offset)
    if (bytesRead !== at.length) throw new Error('journal record cut short')
    return buffer
  }

  /**
   * Drops every settled record (at the end of each swap): the journal is then exactly the writes still
   * owed a replay, so it is bounded by what is held, however many swaps end with writes still held.
   * Nothing owed: truncated to zero bytes. Otherwise the owed `w` records (a write sent and unanswered,
   * which may have been applied, among them) are copied, in their order, to a new file that is fsynced
   * and renamed over the journal (a crash leaves the old journal or the new one, each holding every
   * owed write). Done in turn with the appends, after those already asked for; a write appended
   * meanwhile is owed too and kept where its (moved) location says.
   */
  compact(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.compactions.push({ resolve, reject })
      this.startFlushing()
    })
  }

  async close(): Promise<void> {
    await this.flushing
    await this.handle?.close()
    this.handle = null
  }

  private startFlushing(): void {
    if (!this.flushing) this.flushing = this.flushLoop()
  }

  private async flushLoop(): Promise<void> {
    for (;;) {
      if (this.queue.length > 0) await this.writeBatch()
      else if (this.compactions.length > 0) await this.runCompaction()
      else break
    }
    this.flushing = null
  }

  private async runCompaction(): Promise<void> {
    const asked = this.compactions
    this.compactions = []
    let done: () => void = () => undefined
    this.compacting = new Promise<void>((resolve) => {
      done = resolve
    })
    try {
      await this.compactNow()
      for (const c of asked) c.resolve()
    } catch (error) {
      for (const c of asked) c.reject(error as Error)
    } finally {
      this.compacting = null
      done()
    }
  }

  /** Between batches (or at open): no append runs, every owed write has its location. */
  private async compactNow(): Promise<void> {
    const handle = this.handle
    if (!handle) throw new Error('journal not open')
    await Promise.allSettled([...this.reads])
    // An owed write with no location yet is queued, appended after this (to the new file): the flush
    // loop runs one batch or one compaction at a time, and sets a location as soon as its batch is written.
    const owed = [...this.owed].filter((e): e is [number, BodyLocation] => e[1] !== null)
    const kept = owed.map(([, at]) => at).sort((a, b) => a.offset - b.offset)
    const keptBytes = kept.reduce((sum, at) => sum + HEADER + at.length, 0)
    if (keptBytes === this.size || this.compactedSize === this.size) return
    // Nothing owed and no id ever settled: empty. Otherwise the settled record with the highest id stays
    // (alone, when nothing is owed), so ids continue above it after a restart.
    if (kept.length === 0 && this.lastDone === null) {
      await handle.truncate(0)
      await handle.sync()
      this.size = 0
      return
    }
    // After the owed writes: the settled record with the highest id, when above theirs.
    const highestOwed = Math.max(...owed.map(([id]) => id))
    const marker = this.lastDone && this.lastDone.id > highestOwed ? this.lastDone.frame : null
    // Opened for appending: once renamed it is the journal, and this handle appends to it.
    const out = await open(this.compactPath, O_RDWR | O_CREAT | O_TRUNC | O_APPEND)
    const moved: number[] = []
    let size = 0
    try {
      // One piece at a time: memory stays at one read window, however large a record or the backlog.
      const largest = kept.reduce((max, at) => Math.max(max, HEADER + at.length), 0)
      const piece = Buffer.allocUnsafe(Math.min(READ_WINDOW, largest))
      for (const at of kept) {
        await readPieces(handle, piece, at.offset - HEADER, HEADER + at.length, async (bytes) => {
          await writeFully(out, bytes)
        })
        moved.push(size + HEADER)
        size += HEADER + at.length
      }
      if (marker) {
        await writeFully(out, marker)
        size += marker.length
      }
      await out.sync()
      await rename(this.compactPath, this.path)
    } catch (error) {
      await out.close()
      await rm(this.compactPath, { force: true })
      throw error
    }
    // Renamed: the new file is the journal from here, whatever follows.
    this.handle = out
    this.size = size
    this.compactedSize = size
    kept.forEach((at, i) => {
      at.offset = moved[i]!
    })
    await handle.close().catch(() => undefined)
    await fsyncDir(dirname(this.path))
  }

  /**
   * After a failed batch: cuts off whatever part of it reached the file. Left there, it is a torn frame in
   * the middle once the next batch is appended behind it, and recovery, which stops at the first torn
   * frame, would drop every record after it, durable ones included. When even that fails, the file is no
   * longer what `size` says, and every later append is refused rather than placed behind it.
   */
  private async cutBackTo(handle: FileHandle, size: number): Promise<void> {
    try {
      await handle.truncate(size)
      await handle.sync()
    } catch (error) {
      this.unusable = new Error(
        `swap journal unusable: a failed append could not be cut off (${(error as Error).message})`,
      )
    }
  }

  /** Writes and fsyncs every record queued so far as one batch (the group commit). */
  private async writeBatch(): Promise<void> {
    const batch = this.queue
    this.queue = []
    const handle = this.handle
    try {
      if (!handle) throw new Error('journal not open')
      if (this.unusable) throw this.unusable
      const start = this.size
      const all = Buffer.concat(batch.map((b) => b.frame))
      try {
        // 'a+' appends whatever the position argument says; the offsets below follow our own size count.
        // A write may be cut short (a full disk, a file size limit): the rest is written, or it fails.
        await writeFully(handle, all)
        await handle.sync()
      } catch (error) {
        await this.cutBackTo(handle, start)
        throw error
      }
      this.size += all.length
      this.compactedSize = null
      let at = start
      for (const item of batch) {
        const location = { offset: at + HEADER, length: item.frame.length - HEADER }
        // Still owed (no `d` record asked for meanwhile): a compaction copies it from here.
        if (item.write !== null && this.owed.has(item.write)) this.owed.set(item.write, location)
        item.resolve(location)
        at += item.frame.length
      }
    } catch (error) {
      for (const item of batch) {
        // Never written, so never owed a replay.
        if (item.write !== null) this.owed.delete(item.write)
        item.reject(error as Error)
      }
    }
  }
}

/**
 * Decodes a journal image. Stops at the first frame that is short, claims an absurd length or fails its
 * CRC: a crash mid-append leaves exactly such a tail, and everything before it is whole. (`open` applies
 * the same rule reading the file frame by frame.)
 */
export function parseJournal(bytes: Uint8Array): RecoveredJournal {
  const view = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const scan = new JournalScan<JournalWrite>((record) => record)
  let offset = 0
  while (offset + HEADER <= view.length) {
    const length = view.readUInt32LE(offset)
    const sum = view.readUInt32LE(offset + 4)
    if (length > MAX_RECORD_BYTES || offset + HEADER + length > view.length) break
    const payload = view.subarray(offset + HEADER, offset + HEADER + length)
    if (!scan.take(payload, sum, offset + HEADER)) break
    offset += HEADER + length
  }
  return scan.result(offset, view.length - offset)
}

/** The record rules of a scan, fed one whole frame at a time; `keep` picks what is kept of a write. */
class JournalScan<W extends { id: number }> {
  private readonly writes = new Map<number, W>()
  /** Where each pending write's payload sits. */
  readonly locations = new Map<number, BodyLocation>()
  private lastId = 0
  private skipped = 0
  /** The `d` record with the highest id. */
  lastDone: JournalRecord | null = null
  /** What is kept of a write, given its record (its body '' when it was decoded in pieces) and body size. */
  private readonly keep: (record: JournalWrite, size: number) => W

  constructor(keep: (record: JournalWrite, size: number) => W) {
    this.keep = keep
  }

  /** False when the payload fails its CRC: the journal ends before this frame. */
  take(payload: Buffer, sum: number, offset: number): boolean {
    if (crc32(payload) !== sum) return false
    const record = decodeRecord(payload)
    const size = record?.t === 'w' ? Buffer.byteLength(record.body, 'base64') : 0
    this.takeRecord(record, size, offset, payload.length)
    return true
  }

  /** `take` for a payload decoded in pieces (journal-payload.ts). */
  takeDecoded(decoded: DecodedPayload, sum: number, offset: number, length: number): boolean {
    if (decoded.crc !== sum) return false
    this.takeRecord(decoded.record, 'size' in decoded ? decoded.size : 0, offset, length)
    return true
  }

  private takeRecord(record: JournalRecord | null, size: number, offset: number, length: number): void {
    // A whole, checksummed frame that is not a record was written on purpose by something else (a
    // future format, a bug): skipped and counted, never a reason to drop the good records after it.
    if (!record) {
      this.skipped += 1
      return
    }
    this.lastId = Math.max(this.lastId, record.id)
    if (record.t === 'w') {
      // A second record of an id replaces the first in the first one's place (a Map keeps the order).
      this.writes.set(record.id, this.keep(record, size))
      this.locations.set(record.id, { offset, length })
    } else {
      this.writes.delete(record.id)
      this.locations.delete(record.id)
      if (record.id > (this.lastDone?.id ?? -1)) this.lastDone = record
    }
  }

  result(validBytes: number, tornBytes: number): RecoveredJournal<W> {
    return {
      pending: [...this.writes.values()],
      lastId: this.lastId,
      validBytes,
      tornBytes,
      skipped: this.skipped,
    }
  }
}

/**
 * Reads `length` bytes at `position` through `piece`, handing each piece read to `take` (which must be done
 * with it before it resolves: the buffer is reused). A file shorter than that is an error.
 */
async function readPieces(
  handle: FileHandle,
  piece: Buffer,
  position: number,
  length: number,
  take: (bytes: Buffer) => void | Promise<void>,
): Promise<void> {
  let done = 0
  while (done < length) {
    const got = await readFully(handle, piece, Math.min(piece.length, length - done), position + done)
    if (got === 0) throw new Error('journal record cut short')
    await take(piece.subarray(0, got))
    done += got
  }
}

/** Writes all of `bytes` (the handle appends). */
async function writeFully(handle: FileHandle, bytes: Buffer): Promise<void> {
  let done = 0
  while (done < bytes.length) {
    const { bytesWritten } = await handle.write(bytes, done, bytes.length - done)
    done += bytesWritten
  }
}

/** Reads `n` bytes at `position` (fewer only at the end of the file). */
async function readFully(handle: FileHandle, into: Buffer, n: number, position: number): Promise<number> {
  let got = 0
  while (got < n) {
    const { bytesRead } = await handle.read(into, got, n - got, position + got)
    if (bytesRead === 0) break
    got += bytesRead
  }
  return got
}

/** A record's frame: u32 LE payload length, u32 LE CRC-32 of the payload, the payload (JSON). */
function frameOf(record: JournalRecord): Buffer {
  const payload = Buffer.from(JSON.stringify(record))
  const frame = Buffer.allocUnsafe(HEADER + payload.length)
  frame.writeUInt32LE(payload.length, 0)
  frame.writeUInt32LE(crc32(payload), 4)
  payload.copy(frame, HEADER)
  return frame
}

function decodeRecord(payload: Buffer): JournalRecord | null {
  if (payload.length > READ_WINDOW) {
    // The same rule as a frame decoded in pieces at open: too much besides the body is no record.
    const decoded = new PayloadDecoder()
    decoded.feed(payload)
    if (!decoded.finish().record) return null
  }
  try {
    const parsed = JournalRecord.safeParse(JSON.parse(payload.toString('utf8')))
    return parsed.success ? parsed.data : null
  } catch {
    return null
  }
}
