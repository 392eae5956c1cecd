import { check } from '../errors.ts'
import { type RandomAccessReader, readFully } from '../io.ts'
import { COPY } from './code-table.ts'
import { E } from './errors.ts'
import type { OpBatch, SegmentReader } from './window.ts'

/** Source bytes per cached page. */
export const PAGE_SIZE = 64 * 1024
/**
 * Copies at least this long skip the cache: their source bytes are read straight into the target
 * window (one read, no intermediate copy). Shorter copies touch at most two pages, so every run of
 * instructions can be split into parts whose pages all fit in the cache at once.
 */
export const DIRECT_COPY = PAGE_SIZE

/**
 * The streaming decoder's view of the source: fixed pages read on demand and kept in LRU order
 * across batches and windows. Encoders scatter short COPYs over the whole source (esbuild 0.24.0→1:
 * 125k source copies, most under 64 bytes), so reading exactly what each batch touches meant
 * thousands of small reads; whole pages read once and reused cost a few dozen. Memory is bounded by
 * limits.maxSourceCache, whatever the delta asks for.
 */
export class SourcePages implements SegmentReader {
  private readonly reader: RandomAccessReader
  private readonly pageCount: number
  private readonly capacity: number
  /** Page p's slot, or -1 when not resident. */
  private readonly slotOfPage: Int32Array
  /** Slot s's page, or -1 when empty. */
  private readonly pageOfSlot: Int32Array
  /** Last use of each slot (run number): the smallest is evicted first. */
  private readonly lastUse: Float64Array
  /** Run number that last marked a page as needed (indexed by page). */
  private readonly wanted: Float64Array
  /**
   * One buffer for the target window (first `room` bytes) and the pages after it, so copies from a
   * page into the window are `copyWithin` (a memmove) rather than a `set` that needs a fresh
   * subarray object per copy: 125k such copies per window kept the young generation busy.
   */
  private all: Uint8Array = new Uint8Array(0)
  private room = 0
  private hasPages = false
  private run = 0
  /** The whole current segment is in the pages (beginWindow read it): nothing to load or skip. */
  private resident = false
  /** Absolute source position of the current window's segment (set by beginWindow). */
  private base = 0

  /** `cacheBytes` (limits.maxSourceCache) bounds the pages held at once; at least two are. */
  constructor(reader: RandomAccessReader, cacheBytes: number) {
    this.reader = reader
    this.pageCount = Math.ceil(reader.size / PAGE_SIZE)
    this.capacity = Math.max(2, Math.min(Math.floor(cacheBytes / PAGE_SIZE) || 0, this.pageCount))
    this.slotOfPage = new Int32Array(this.pageCount).fill(-1)
    this.pageOfSlot = new Int32Array(this.capacity).fill(-1)
    this.lastUse = new Float64Array(this.capacity)
    this.wanted = new Float64Array(this.pageCount)
  }

  /**
   * The buffer for a target window of `n` bytes (its contents are undefined), valid until the next
   * call: sinks are done with a chunk once write() resolves, and the history keeps its own copy.
   * Source copies land in it without allocating once the pages exist (`fromSource` allocates them).
   */
  window(n: number, fromSource: boolean): Uint8Array {
    const pages = this.hasPages || fromSource
    if (n > this.room || pages !== this.hasPages) {
      this.resize(n > this.room ? Math.max(n, Math.ceil(this.room * 1.5)) : this.room, pages)
    }
    return this.all.subarray(0, n)
  }

  /** Reallocates for a `room`-byte window (and the pages, once needed), keeping what both hold. */
  private resize(room: number, pages: boolean): void {
    const next = new Uint8Array(room + (pages ? this.capacity * PAGE_SIZE : 0))
    next.set(this.all.subarray(0, this.room))
    if (this.hasPages) next.set(this.all.subarray(this.room), room)
    this.all = next
    this.room = room
    this.hasPages = pages
  }

  /**
   * Starts a window whose segment is source[position, position + length). A segment that fits in the
   * cache is read whole, up front, in a few large reads (the usual case below 16 MiB of source): the
   * batches then never wait for the reader, and every copy, long ones included, comes from the pages.
   * Larger segments are paged in on demand by load().
   */
  async beginWindow(position: number, length: number): Promise<void> {
    this.base = position
    this.resident = false
    if (length === 0) return
    const p0 = Math.floor(position / PAGE_SIZE)
    const p1 = Math.floor((position + length - 1) / PAGE_SIZE)
    if (p1 - p0 + 1 > this.capacity) return
    const run = ++this.run
    const missing: number[] = []
    for (let p = p0; p <= p1; p++) {
      this.wanted[p] = run
      const slot = this.slotOfPage[p]!
      if (slot >= 0) this.lastUse[slot] = run
      else missing.push(p)
    }
    await Promise.all(this.fetch(missing, run))
    this.resident = true
  }

  /**
   * Makes every page the batch's instructions [first, …) read resident, stopping before the
   * instruction whose pages would no longer fit; long copies are read straight into `target`.
   * Returns the end of the run of instructions that can now execute (always past `first`).
   */
  async load(b: OpBatch, first: number, pos: number, srcLen: number, target: Uint8Array): Promise<number> {
    if (this.resident) return b.count
    const run = ++this.run
    const { types, sizes, addrs } = b
    const wanted = this.wanted
    const direct: Promise<void>[] = []
    const missing: number[] = []
    let pages = 0
    let i = first
    for (; i < b.count; i++) {
      const size = sizes[i]!
      const a = addrs[i]!
      if (types[i] === COPY && a < srcLen) {
        const k = Math.min(size, srcLen - a)
        const abs = this.base + a
        if (k >= DIRECT_COPY) {
          direct.push(this.readDirect(abs, target.subarray(pos, pos + k)))
        } else {
          const p0 = Math.floor(abs / PAGE_SIZE)
          const p1 = Math.floor((abs + k - 1) / PAGE_SIZE)
          const fresh = (wanted[p0] === run ? 0 : 1) + (p1 !== p0 && wanted[p1] !== run ? 1 : 0)
          if (pages + fresh > this.capacity) break
          for (let p = p0; p <= p1; p++) {
            if (wanted[p] === run) continue
            wanted[p] = run
            pages++
            const slot = this.slotOfPage[p]!
            if (slot >= 0) this.lastUse[slot] = run
            else missing.push(p)
          }
        }
      }
      pos += size
    }
    await Promise.all([...direct, ...this.fetch(missing, run)])
    return i
  }

  private async readDirect(abs: number, into: Uint8Array): Promise<void> {
    const got = await readFully(this.reader, abs, into)
    check(got === into.length, E.truncated, 'vcdiff: source reader returned fewer bytes than asked')
  }

  /** Assigns slots to the missing pages (evicting pages this run does not need) and reads them. */
  private fetch(missing: number[], run: number): Promise<void>[] {
    if (missing.length === 0) return []
    // window(…, true) allocated the pages; a caller that skipped it still gets correct (slower) copies.
    if (!this.hasPages) this.resize(this.room, true)
    missing.sort((x, y) => x - y)
    const slots: number[] = []
    for (const p of missing) {
      const slot = this.victim(run)
      const old = this.pageOfSlot[slot]!
      if (old >= 0) this.slotOfPage[old] = -1
      this.pageOfSlot[slot] = p
      this.slotOfPage[p] = slot
      this.lastUse[slot] = run
      slots.push(slot)
    }
    // Consecutive pages that landed in consecutive slots (the usual case while the cache fills)
    // share one read.
    const reads: Promise<void>[] = []
    for (let j = 0; j < missing.length; ) {
      let n = 1
      while (j + n < missing.length && missing[j + n] === missing[j]! + n && slots[j + n] === slots[j]! + n)
        n++
      const start = missing[j]! * PAGE_SIZE
      const len = Math.min(n * PAGE_SIZE, this.reader.size - start)
      const at = this.room + slots[j]! * PAGE_SIZE
      reads.push(this.readDirect(start, this.all.subarray(at, at + len)))
      j += n
    }
    return reads
  }

  /** The empty slot, or the least recently used one this run does not need. */
  private victim(run: number): number {
    let best = -1
    let bestUse = Number.POSITIVE_INFINITY
    for (let s = 0; s < this.capacity; s++) {
      if (this.pageOfSlot[s] === -1) return s
      const use = this.lastUse[s]!
      if (use !== run && use < bestUse) {
        bestUse = use
        best = s
      }
    }
    // load() never marks more pages than there are slots, so some slot is always free to take.
    return best
  }

  /** SegmentReader: copies of the window's segment, served from resident pages. */
  copy(offset: number, len: number, dst: Uint8Array, at: number): void {
    // Unless the segment is resident, long copies were read straight into the target by load().
    if (len >= DIRECT_COPY && !this.resident) return
    const all = this.all
    // dst is the window view window() handed out (offset 0 of `all`) unless a caller passed another.
    const shared = dst.buffer === all.buffer && dst.byteOffset === 0
    let abs = this.base + offset
    while (len > 0) {
      const page = Math.floor(abs / PAGE_SIZE)
      const inPage = abs - page * PAGE_SIZE
      const n = Math.min(len, PAGE_SIZE - inPage)
      const from = this.room + this.slotOfPage[page]! * PAGE_SIZE + inPage
      if (n < 16) for (let k = 0; k < n; k++) dst[at + k] = all[from + k]!
      else if (shared) all.copyWithin(at, from, from + n)
      else dst.set(all.subarray(from, from + n), at)
      abs += n
      at += n
      len -= n
    }
  }
}
