import { type FileHandle, open } from 'node:fs/promises'
import { dirname } from 'node:path'
import { crc32 } from 'node:zlib'
import { JournalRecord, type JournalWrite } from '../../schemas/swap.ts'
import { fsyncDir } from '../fs/atomic.ts'
import { makeDirs } from '../fs/make-dirs.ts'

/** Frame header: u32 LE payload length, u32 LE CRC-32 of the payload. */
const HEADER = 8
/** Largest payload a frame may claim; anything above is a torn or hostile header, not a record. */
export const MAX_RECORD_BYTES = 128 * 1024 * 1024

export interface RecoveredJournal {
  /** Writes with no `done` record, in journal (= arrival) order. */
  pending: JournalWrite[]
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
  /** Resets asked for: done by the flush loop, between batches, never beside an append. */
  private resets: Array<{ resolve: () => void; reject: (e: Error) => void }> = []
  /** Writes appended (or being appended) with no `d` record yet: while any is, a reset keeps the file. */
  private readonly owed = new Set<number>()
  private flushing: Promise<void> | null = null

  constructor(path: string) {
    this.path = path
  }

  /** Opens (creating) the journal, drops a torn tail, and returns the writes still owed a replay. */
  async open(): Promise<RecoveredJournal> {
    await makeDirs(dirname(this.path))
    this.handle = await open(this.path, 'a+')
    const bytes = await this.handle.readFile()
    const recovered = parseJournal(bytes)
    if (recovered.tornBytes > 0) {
      await this.handle.truncate(recovered.validBytes)
      await this.handle.sync()
    }
    this.size = recovered.validBytes
    for (const write of recovered.pending) this.owed.add(write.id)
    await fsyncDir(dirname(this.path))
    return recovered
  }

  /** Appends one record; resolves with where its payload sits once it is on disk. */
  append(record: JournalRecord): Promise<BodyLocation> {
    const payload = Buffer.from(JSON.stringify(record))
    if (payload.length > MAX_RECORD_BYTES) return Promise.reject(new RangeError('journal record too large'))
    const frame = Buffer.allocUnsafe(HEADER + payload.length)
    frame.writeUInt32LE(payload.length, 0)
    frame.writeUInt32LE(crc32(payload), 4)
    payload.copy(frame, HEADER)
    if (record.t === 'w') this.owed.add(record.id)
    else this.owed.delete(record.id)
    return new Promise((resolve, reject) => {
      this.queue.push({ frame, write: record.t === 'w' ? record.id : null, resolve, reject })
      this.startFlushing()
    })
  }

  /** Reads back a record's payload (a write whose body was dropped from memory). */
  async readWrite(at: BodyLocation): Promise<JournalWrite> {
    if (!this.handle) throw new Error('journal not open')
    const buffer = Buffer.alloc(at.length)
    await this.handle.read(buffer, 0, at.length, at.offset)
    const record = JournalRecord.parse(JSON.parse(buffer.toString('utf8')))
    if (record.t !== 'w') throw new Error('journal offset does not hold a write')
    return record
  }

  /**
   * Empties the journal once nothing in it is owed a replay (after a swap settled). Done in turn with the
   * appends, after those already asked for, and only if no write appended by then still waits for its
   * `done` record: a write held meanwhile (a crashed service's restart hold can begin at any moment)
   * must neither be cut off with the rest nor be given an offset in a file that is then truncated.
   */
  reset(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.resets.push({ resolve, reject })
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
      else if (this.resets.length > 0) await this.truncateIfNothingOwed()
      else break
    }
    this.flushing = null
  }

  private async truncateIfNothingOwed(): Promise<void> {
    const resets = this.resets
    this.resets = []
    try {
      if (this.handle && this.owed.size === 0) {
        await this.handle.truncate(0)
        await this.handle.sync()
        this.size = 0
      }
      for (const r of resets) r.resolve()
    } catch (error) {
      for (const r of resets) r.reject(error as Error)
    }
  }

  /** Writes and fsyncs every record queued so far as one batch (the group commit). */
  private async writeBatch(): Promise<void> {
    const batch = this.queue
    this.queue = []
    const handle = this.handle
    try {
      if (!handle) throw new Error('journal not open')
      const start = this.size
      const all = Buffer.concat(batch.map((b) => b.frame))
      // 'a+' appends whatever the position argument says; the offsets below follow our own size count.
      await handle.write(all, 0, all.length)
      await handle.sync()
      this.size += all.length
      let at = start
      for (const item of batch) {
        item.resolve({ offset: at + HEADER, length: item.frame.length - HEADER })
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
 * CRC: a crash mid-append leaves exactly such a tail, and everything before it is whole.
 */
export function parseJournal(bytes: Uint8Array): RecoveredJournal {
  const view = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const writes = new Map<number, JournalWrite>()
  let offset = 0
  let lastId = 0
  let skipped = 0
  while (offset + HEADER <= view.length) {
    const length = view.readUInt32LE(offset)
    const sum = view.readUInt32LE(offset + 4)
    if (length > MAX_RECORD_BYTES || offset + HEADER + length > view.length) break
    const payload = view.subarray(offset + HEADER, offset + HEADER + length)
    if (crc32(payload) !== sum) break
    offset += HEADER + length
    // A whole, checksummed frame that is not a record was written on purpose by something else (a
    // future format, a bug): skipped and counted, never a reason to drop the good records after it.
    const record = decodeRecord(payload)
    if (!record) {
      skipped += 1
      continue
    }
    lastId = Math.max(lastId, record.id)
    if (record.t === 'w') writes.set(record.id, record)
    else writes.delete(record.id)
  }
  return {
    pending: [...writes.values()],
    lastId,
    validBytes: offset,
    tornBytes: view.length - offset,
    skipped,
  }
}

function decodeRecord(payload: Buffer): JournalRecord | null {
  try {
    const parsed = JournalRecord.safeParse(JSON.parse(payload.toString('utf8')))
    return parsed.success ? parsed.data : null
  } catch {
    return null
  }
}
