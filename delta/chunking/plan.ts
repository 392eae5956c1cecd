import { check } from '../errors.ts'
import type { ByteSink, RandomAccessReader } from '../io.ts'
import { type ChunkEntry, type ChunkIndex, chunkHash } from './chunk-index.ts'

export interface ByteRange {
  offset: number
  length: number
}

/** Rebuild the target in order: copy from the local artifact, or take bytes from a fetched range. */
export type SyncStep =
  | { kind: 'copy'; from: number; to: number; length: number }
  | { kind: 'fetch'; range: number; from: number; to: number; length: number }

export interface SyncPlan {
  /** Ranges of the remote artifact to request, one request each, in offset order. */
  fetch: ByteRange[]
  /** Every byte of the target in order; `fetch` steps point into `fetch[range]` at offset `from`. */
  steps: SyncStep[]
  /** Remote chunks not found locally (what the ranges exist for). */
  missing: ChunkEntry[]
  fetchBytes: number
  copyBytes: number
  targetLength: number
}

export interface SyncOptions {
  /** Missing chunks separated by at most this many locally-present bytes share one range. */
  gapThreshold?: number
  /** Ranges never grow past this (a single chunk larger than it still gets its own range). */
  maxRangeSize?: number
}

/** Works out how to rebuild `remote` from `local` plus as few, as large-enough range requests as possible. */
export function planChunkSync(local: ChunkIndex, remote: ChunkIndex, options: SyncOptions = {}): SyncPlan {
  const gap = options.gapThreshold ?? 16 * 1024
  const cap = options.maxRangeSize ?? 4 * 1024 * 1024
  check(gap >= 0 && cap >= 1, 'chunking.bad-params', 'gapThreshold >= 0 and maxRangeSize >= 1')
  const have = new Map<string, ChunkEntry>()
  for (const c of local.chunks) if (!have.has(c.hash)) have.set(c.hash, c)

  const missing = remote.chunks.filter((c) => have.get(c.hash)?.length !== c.length)
  const fetch: ByteRange[] = []
  for (const c of missing) {
    const cur = fetch[fetch.length - 1]
    const curEnd = cur ? cur.offset + cur.length : 0
    if (cur && c.offset - curEnd <= gap && c.offset + c.length - cur.offset <= cap)
      cur.length = c.offset + c.length - cur.offset
    else fetch.push({ offset: c.offset, length: c.length })
  }

  const steps: SyncStep[] = []
  const push = (s: SyncStep) => {
    const prev = steps[steps.length - 1]
    const joins =
      prev !== undefined &&
      prev.kind === s.kind &&
      prev.from + prev.length === s.from &&
      (prev.kind === 'copy' || (s.kind === 'fetch' && prev.range === s.range))
    if (joins) prev.length += s.length
    else steps.push(s)
  }
  let r = 0
  let fetchBytes = 0
  for (const c of remote.chunks) {
    while (r < fetch.length && fetch[r]!.offset + fetch[r]!.length <= c.offset) r++
    const range = fetch[r]
    if (range && range.offset <= c.offset) {
      push({ kind: 'fetch', range: r, from: c.offset - range.offset, to: c.offset, length: c.length })
      fetchBytes += c.length
    } else {
      push({ kind: 'copy', from: have.get(c.hash)!.offset, to: c.offset, length: c.length })
    }
  }
  return {
    fetch,
    steps,
    missing,
    fetchBytes,
    copyBytes: remote.totalLength - fetchBytes,
    targetLength: remote.totalLength,
  }
}

/**
 * Executes a plan, fetching each range once when first needed and holding one range at a time.
 * Every chunk of the result is checked against `remote` before it reaches the sink, so a local file
 * that changed since it was indexed, or a bad range response, fails with 'chunking.hash-mismatch'.
 */
export async function applyChunkPlan(
  plan: SyncPlan,
  remote: ChunkIndex,
  local: RandomAccessReader,
  fetchRange: (range: ByteRange) => Promise<Uint8Array>,
  sink: ByteSink,
): Promise<void> {
  const out = verifyingSink(remote, sink)
  let held = -1
  let bytes: Uint8Array = new Uint8Array(0)
  for (const s of plan.steps) {
    if (s.kind === 'copy') {
      check(s.from + s.length <= local.size, 'chunking.bad-plan', 'copy past the end of the local artifact')
      await out.write(await local.read(s.from, s.length))
      continue
    }
    if (held !== s.range) {
      const range = plan.fetch[s.range]!
      bytes = await fetchRange(range)
      check(
        bytes.length === range.length,
        'chunking.bad-range',
        `range ${s.range} returned ${bytes.length} of ${range.length} bytes`,
      )
      held = s.range
    }
    await out.write(bytes.subarray(s.from, s.from + s.length))
  }
  await out.end()
}

/** Cuts the written stream at the index's chunk boundaries and checks each hash before passing it on. */
export function verifyingSink(index: ChunkIndex, sink: ByteSink): ByteSink & { end(): Promise<void> } {
  let i = 0
  let buf: Uint8Array | null = null
  let fill = 0
  const write = async (chunk: Uint8Array): Promise<void> => {
    for (let at = 0; at < chunk.length; ) {
      const entry = index.chunks[i]
      check(entry !== undefined, 'chunking.hash-mismatch', 'output longer than the index')
      buf ??= new Uint8Array(entry.length)
      const n = Math.min(entry.length - fill, chunk.length - at)
      buf.set(chunk.subarray(at, at + n), fill)
      fill += n
      at += n
      if (fill < entry.length) continue
      check(
        (await chunkHash(buf)) === entry.hash,
        'chunking.hash-mismatch',
        `chunk ${i} at ${entry.offset} has the wrong hash`,
      )
      await sink.write(buf)
      buf = null
      fill = 0
      i++
    }
  }
  const end = async (): Promise<void> => {
    check(i === index.chunks.length && fill === 0, 'chunking.hash-mismatch', 'output shorter than the index')
  }
  return { write, end }
}
