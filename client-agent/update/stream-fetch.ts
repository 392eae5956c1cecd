import type { FileHandle } from 'node:fs/promises'
import { open, rm, stat, truncate } from 'node:fs/promises'
import { cpus, freemem, loadavg } from 'node:os'
import { setTimeout as sleep } from 'node:timers/promises'
import { DeltaFormatError } from '../../delta/errors.ts'
import { collectingSink } from '../../delta/io.ts'
import {
  type BlockRange,
  blockRangeFor,
  groupBlockRange,
  rangeHeader,
  type StreamLayout,
  type StreamMetadata,
  StreamReassembler,
} from '../../delta/stream/index.ts'
import { hashFile } from '../download.ts'
import { AgentError, namingPath } from '../errors.ts'
import { writeFully } from '../fs/file-io.ts'
import {
  isNetworkFault,
  isTransient,
  MAX_RETRY_WAIT_MS,
  retryWaitMs,
  withRetries,
} from '../transfer/backoff.ts'
import { assertRangeAsked } from '../transfer/content-range.ts'
import {
  type ControllerPrior,
  type ControllerSnapshot,
  type Explanation,
  RangeController,
} from '../transfer/controller.ts'
import { errorFromResponse, retryAfterMs } from '../transfer/error-response.ts'
import { withHeaderTimeout } from '../transfer/header-timeout.ts'
import { type LinkedSignal, linkSignal } from '../transfer/linked-signal.ts'
import { RateCap } from '../transfer/rate-cap.ts'
import { readBody } from '../transfer/read-body.ts'
import { clearJournal, readJournal, type StreamJournal, writeJournal } from './journal.ts'

export interface StreamFetchRequest {
  url: string
  /** The framing the edge used (from the plan step or the stream's headers). */
  blockSize: number
  /** From the signed manifest: the stream must carry exactly this payload. */
  payloadSha256: string
  payloadLength: number
  /** Verified payload goes here; `<payloadPath>.journal` records what is durable. */
  payloadPath: string
  fetchImpl?: typeof fetch
  signal?: AbortSignal
  controller?: RangeController
  /**
   * A warm start for the controller made here (without `controller`): what an earlier transfer from this
   * edge learnt of the link (transfer/link-memory.ts).
   */
  prior?: ControllerPrior
  onProgress?: (progress: StreamProgress) => void
  /** Re-fetch rounds for blocks FEC could not rebuild before giving up. */
  maxRefetchRounds?: number
  /** The device's download cap in bytes per second, shared by all ranges; 0 or none = unlimited. */
  bandwidthCapBps?: number
}

export interface StreamProgress {
  payloadBytes: number
  payloadTotal: number
  wireBytes: number
}

export interface StreamFetchResult {
  wireBytes: number
  recoveredBlocks: number
  corruptBlocks: number
  refetchRounds: number
  resumedAtGroup: number
  ranges: number
  controller: Explanation
  /**
   * The controller's first plan for the stream's blocks (after block 0): in the probe phase with the
   * prior's estimates when it was warm-started, in startup when cold; null when there were no blocks.
   */
  firstPlan: Explanation | null
  /** The controller's state at the end, for the next transfer's warm start. */
  snapshot: ControllerSnapshot
}

/**
 * Downloads a framed delta stream into a verified payload file. Ranges are block aligned, sized and
 * parallelised by the adaptive controller; every block is checked and FEC rebuilds up to m lost or
 * corrupt blocks per group without a round trip; only blocks that stay unrecoverable are fetched
 * again. Durable progress is journaled at group granularity, so a killed agent resumes where it was.
 */
export async function fetchDeltaStream(request: StreamFetchRequest): Promise<StreamFetchResult> {
  try {
    return await fetchStream(request)
  } catch (error) {
    // A connection that failed every try is the network's fault (exit 4, and the update falls back to
    // the full download), not a bug: fetch/undici's bare TypeError said nothing of the kind.
    if (request.signal?.aborted || !isNetworkFault(error)) throw error
    const cause = error instanceof Error && error.cause instanceof Error ? ` (${error.cause.message})` : ''
    throw new AgentError('network', `delta stream ${request.url}: ${(error as Error).message}${cause}`)
  }
}

async function fetchStream(request: StreamFetchRequest): Promise<StreamFetchResult> {
  // No headers within 30 s ends a range like a stalled body does (transfer/header-timeout.ts).
  const fetchImpl = withHeaderTimeout(request.fetchImpl ?? fetch)
  const journalPath = `${request.payloadPath}.journal`
  const controller =
    request.controller ??
    new RangeController({
      blockSize: request.blockSize + 32,
      ...(request.prior ? { prior: request.prior } : {}),
    })
  let wireBytes = 0
  let ranges = 0
  let etag: string | undefined
  /** The stream's length, from its metadata (block 0): what every later range's Content-Range names. */
  let streamBytes: number | null = null
  const cap = new RateCap(request.bandwidthCapBps ?? 0)

  /** `signal`: the request's, or (fetchBlocks) one that also aborts when a sibling range failed for good. */
  const fetchRange = async (
    offset: number,
    length: number,
    into: (at: number, bytes: Uint8Array) => Promise<void>,
    signal = request.signal,
  ) => {
    const startedAt = performance.now()
    ranges++
    let response: Response
    try {
      response = await fetchImpl(request.url, {
        // If-Range with the validator the first range returned: if the stream changed under us the edge
        // answers 200 and we stop, instead of splicing blocks of two different streams.
        headers: { range: rangeHeader({ offset, length }), ...(etag ? { 'if-range': etag } : {}) },
        ...(signal ? { signal } : {}),
      })
    } catch (error) {
      if (!signal?.aborted) controller.onRangeError(performance.now(), 'reset')
      throw error
    }
    if (response.status === 200) {
      // The whole stream for a range: it changed since the first range (If-Range), or a cache in
      // between ignores Range. Either way no range will do; its bytes are no error text to quote.
      controller.onRangeError(performance.now(), 'http')
      await response.body?.cancel().catch(() => undefined)
      throw new AgentError(
        'edge-rejected',
        `delta stream range ${offset}+${length}: HTTP 200 with the whole stream (it changed, or a cache in between ignores Range)`,
        { status: 200 },
      )
    }
    if (response.status !== 206) {
      controller.onRangeError(performance.now(), 'http')
      throw await errorFromResponse(response, `delta stream range ${offset}+${length}`)
    }
    // A 206 is blocks only if its Content-Range is the range asked for (of the stream's size, once block
    // 0 told it): a cache answering with another range is a network fault of this range, retried like a
    // dropped connection, not blocks that fail their checks, which cost re-fetch rounds and then read
    // as a stream that does not verify.
    try {
      await assertRangeAsked(
        response,
        { first: offset, last: offset + length - 1, total: streamBytes },
        'delta stream range: ',
      )
    } catch (error) {
      controller.onRangeError(performance.now(), 'http')
      throw error
    }
    etag ??= response.headers.get('etag') ?? undefined
    const firstByteAt = performance.now()
    let at = offset
    try {
      await readBody(
        response,
        async (bytes) => {
          await into(at, bytes)
          at += bytes.length
          wireBytes += bytes.length
          await cap.received(bytes.length, signal)
        },
        // A 206 carrying more than the range (the rest of the stream, or an endless body before the
        // metadata is checked) is cut at the range's end: it would otherwise all be read, and the
        // block-0 probe collects what it reads in memory.
        { limitBytes: length, ...(signal ? { signal } : {}) },
      )
    } catch (error) {
      if (error instanceof AgentError && !signal?.aborted)
        controller.onRangeError(performance.now(), 'timeout')
      throw error
    }
    controller.onRangeComplete({ bytes: at - offset, startedAt, firstByteAt, finishedAt: performance.now() })
  }

  // Block 0 first: the stream's own description, checked against what the signed manifest promised.
  // Tried like every other range (RANGE_TRIES, with the agent's back-off), each try from scratch.
  const probe = await withRetries(RANGE_TRIES, request.signal, async () => {
    const reassembler = new StreamReassembler(collectingSink())
    await fetchRange(0, 32 + request.blockSize, (at, bytes) => reassembler.push(at, bytes))
    return reassembler
  })
  const metadata = probe.metadata
  if (!metadata) throw new AgentError('integrity-mismatch', 'the delta stream has no readable metadata block')
  assertMatches(metadata, request)
  const layout = probe.layout!
  streamBytes = layout.totalBytes

  const resumeAt = await durableGroups(await readJournal(journalPath), request, layout)
  const bytesDone = groupsBytes(resumeAt, layout)
  // Anything past the journaled point may be a half-written group from a killed run: cut it off.
  if (resumeAt > 0) await truncate(request.payloadPath, bytesDone)
  else await rm(request.payloadPath, { force: true })

  const file = await open(request.payloadPath, resumeAt > 0 ? 'r+' : 'w')
  try {
    const sink = new DurableSink(file, request.payloadPath, bytesDone, layout, async (groupsDone, bytes) => {
      await writeJournal(journalPath, {
        url: request.url,
        payloadSha256: request.payloadSha256,
        groupsDone,
        bytesDone: bytes,
      })
      request.onProgress?.({ payloadBytes: bytes, payloadTotal: layout.payloadLength, wireBytes })
    })
    const reassembler = new StreamReassembler(sink, {
      metadata,
      resumeAtGroup: resumeAt,
      maxBufferedGroups: bufferedGroupsFor(layout),
    })
    const push = (at: number, bytes: Uint8Array) => reassembler.push(at, bytes)

    const first = resumeAt < layout.groups ? groupBlockRange(resumeAt, layout).firstBlock : layout.blockCount
    const firstPlan = await fetchBlocks(
      { firstBlock: first, count: layout.blockCount - first },
      layout,
      controller,
      (offset, length, signal) => fetchRange(offset, length, push, signal),
      request.signal,
    )
    let refetchRounds = 0
    let report = await reassembler.report()
    while (!report.complete) {
      if (refetchRounds >= (request.maxRefetchRounds ?? 3)) {
        throw new AgentError(
          'integrity-mismatch',
          `blocks stayed unrecoverable after ${refetchRounds} re-fetch rounds`,
        )
      }
      refetchRounds++
      // Each re-fetch tried like every other range (RANGE_TRIES, the agent's back-off between tries):
      // one dropped connection or 503 here cost the whole delta plan (the full download followed).
      for (const range of report.minimalRefetch) {
        const bytes = blockRangeFor(range.firstBlock, range.count, layout)
        await withRetries(RANGE_TRIES, request.signal, () => fetchRange(bytes.offset, bytes.length, push))
      }
      report = await reassembler.report()
    }
    await sink.flush()
    const result = {
      wireBytes,
      recoveredBlocks: report.recoveredBlocks,
      corruptBlocks: report.corruptBlocks.length,
      refetchRounds,
      resumedAtGroup: resumeAt,
      ranges,
      controller: controller.explain(),
      firstPlan,
      snapshot: controller.snapshot(),
    }
    await file.close()
    await verifyPayload(request)
    await clearJournal(journalPath)
    return result
  } catch (error) {
    await file.close().catch(() => undefined)
    if (error instanceof DeltaFormatError) {
      // The stream itself is broken (not the transport): nothing of it can be trusted.
      await rm(request.payloadPath, { force: true })
      await clearJournal(journalPath)
      throw new AgentError('integrity-mismatch', `delta stream rejected: ${error.message}`)
    }
    throw error
  }
}

/** The payload bytes `groups` whole groups hold (the last group may be short). */
function groupsBytes(groups: number, layout: StreamLayout): number {
  return Math.min(groups * layout.k * layout.blockSize, layout.payloadLength)
}

/**
 * How many groups of the payload file a journal vouches for, 0 to start over. Only a journal of this
 * very stream counts, and only while the file still holds what it promises: a kill between removing the
 * payload and its journal (verifyPayload, a broken stream) leaves a journal with no file, and resuming
 * that failed every later update; a journal counted in another framing (the edge reframed the stream)
 * would name the wrong bytes.
 */
async function durableGroups(
  journal: StreamJournal | null,
  request: StreamFetchRequest,
  layout: StreamLayout,
): Promise<number> {
  if (!journal || journal.url !== request.url || journal.payloadSha256 !== request.payloadSha256) return 0
  const { groupsDone, bytesDone } = journal
  if (groupsDone > layout.groups || bytesDone !== groupsBytes(groupsDone, layout)) return 0
  const onDisk = await stat(request.payloadPath).catch(() => null)
  return onDisk?.isFile() && onDisk.size >= bytesDone ? groupsDone : 0
}

/** Tries of one range of the stream before the fetch fails (and the update falls back to the next plan). */
const RANGE_TRIES = 5

/**
 * Walks the block range with the controller's plan: ranges of whole blocks, several in flight. A range
 * that fails transiently (isTransient: a broken stream, a DeltaFormatError, does not) goes back on the
 * queue (the controller shrinks what follows) and no range is asked for until the agent's back-off has
 * passed (retryWaitMs: jittered, at least the edge's Retry-After), so an edge that restarts or sheds
 * load is not hammered; it fails for good after RANGE_TRIES tries, at once when it is no transient
 * fault or the edge asks for more than 30 s. A range that fails for good aborts the ranges still in
 * flight (their fetches, body reads and rate-cap waits) and no back-off is waited out: the failure is
 * reported, and the next plan or the full download starts, at once, not after the slowest sibling
 * (a stalled one held the update for its 30 s stall timer). The aborted ranges are settled before this
 * returns, so none writes into the payload file after it is closed, and their rejections are handled.
 * Returns the controller's first plan's explanation (null when there was nothing to fetch).
 */
async function fetchBlocks(
  span: BlockRange,
  layout: StreamLayout,
  controller: RangeController,
  fetchRange: (offset: number, length: number, signal: AbortSignal) => Promise<void>,
  signal: AbortSignal | undefined,
): Promise<Explanation | null> {
  // Aborted with the first failure for good: every range in flight, and the back-off wait, end with it.
  // Linked, not AbortSignal.any, and released when the walk ends (linked-signal.ts).
  const siblings = linkSignal(signal)
  try {
    return await walkBlocks(span, layout, controller, fetchRange, signal, siblings)
  } finally {
    siblings.release()
  }
}

/** fetchBlocks under `siblings`, the signal every range and back-off wait is given. */
async function walkBlocks(
  span: BlockRange,
  layout: StreamLayout,
  controller: RangeController,
  fetchRange: (offset: number, length: number, signal: AbortSignal) => Promise<void>,
  signal: AbortSignal | undefined,
  siblings: LinkedSignal,
): Promise<Explanation | null> {
  let firstPlan: Explanation | null = null
  const rangeSignal = siblings.signal
  const end = span.firstBlock + span.count
  let cursor = span.firstBlock
  const retry: Array<{ firstBlock: number; count: number; attempt: number }> = []
  const inFlight = new Set<Promise<void>>()
  let failure: unknown = null
  /** No range is issued before this (performance.now() ms): the back-off after a failed range. */
  let pausedUntil = 0
  const cores = cpus().length || 1
  const pending = () => cursor < end || retry.length > 0

  while ((pending() || inFlight.size > 0) && failure === null) {
    controller.onHostSample({ loadPerCore: (loadavg()[0] ?? 0) / cores, freeMemBytes: freemem() })
    const plan = controller.next(performance.now())
    firstPlan ??= controller.explain()
    while (
      inFlight.size < plan.parallel &&
      pending() &&
      failure === null &&
      performance.now() >= pausedUntil
    ) {
      if (signal?.aborted) throw signal.reason ?? new Error('aborted')
      const job =
        retry.shift() ??
        (() => {
          const count = Math.max(1, Math.min(Math.floor(plan.rangeBytes / layout.framedSize), end - cursor))
          const next = { firstBlock: cursor, count, attempt: 0 }
          cursor += count
          return next
        })()
      const bytes = blockRangeFor(job.firstBlock, job.count, layout)
      const run: Promise<void> = fetchRange(bytes.offset, bytes.length, rangeSignal)
        .catch((error: unknown) => {
          // Aborted because a sibling failed for good: that failure is the one reported.
          if (failure !== null) return
          const waitMs = retryWaitMs(job.attempt + 1, retryAfterMs(error))
          const final =
            signal?.aborted ||
            job.attempt + 1 >= RANGE_TRIES ||
            !isTransient(error) ||
            waitMs > MAX_RETRY_WAIT_MS
          if (final) {
            failure = error
            siblings.abort(error)
          } else {
            retry.push({ ...job, attempt: job.attempt + 1 })
            pausedUntil = Math.max(pausedUntil, performance.now() + waitMs)
          }
        })
        .finally(() => inFlight.delete(run))
      inFlight.add(run)
    }
    const pauseMs = pausedUntil - performance.now()
    if (failure === null && pending() && pauseMs > 0) {
      // Until the back-off ends or a range in flight settles, whichever is first; the timer goes with it.
      const done = linkSignal(rangeSignal)
      const pause = sleep(pauseMs, undefined, { signal: done.signal }).catch(() => undefined)
      await Promise.race([pause, ...inFlight])
      done.abort()
      if (signal?.aborted && failure === null) failure = signal.reason ?? new Error('aborted')
    } else if (inFlight.size > 0) await Promise.race(inFlight)
  }
  await Promise.allSettled(inFlight)
  if (failure !== null) throw failure
  return firstPlan
}

/** Enough look-ahead for every range in flight, bounded so memory stays a few groups' worth. */
function bufferedGroupsFor(layout: StreamLayout): number {
  const groupBytes = (layout.k + layout.m) * layout.framedSize
  return Math.min(256, Math.max(4, Math.ceil((8 * 8 * 1024 * 1024) / groupBytes) + 2))
}

/**
 * Appends payload bytes and makes them durable group by group: after each fsync it reports how many
 * whole groups are on disk, which is what the journal may promise.
 */
class DurableSink {
  readonly #file: FileHandle
  readonly #path: string
  readonly #groupBytes: number
  readonly #payloadLength: number
  readonly #onDurable: (groupsDone: number, bytes: number) => Promise<void>
  #position: number
  #lastSync = Date.now()
  #unsynced = 0

  constructor(
    file: FileHandle,
    path: string,
    position: number,
    layout: StreamLayout,
    onDurable: (groupsDone: number, bytes: number) => Promise<void>,
  ) {
    this.#file = file
    this.#path = path
    this.#position = position
    this.#groupBytes = layout.k * layout.blockSize
    this.#payloadLength = layout.payloadLength
    this.#onDurable = onDurable
  }

  async write(chunk: Uint8Array): Promise<void> {
    // A full disk here names the payload file (no-space), as the other writers of an update do.
    await namingPath(this.#path, writeFully(this.#file, chunk, this.#position))
    this.#position += chunk.length
    this.#unsynced += chunk.length
    // Sync about every 1 MiB or 500 ms: a crash costs at most that much, and fsyncs stay rare.
    if (this.#unsynced >= 1024 * 1024 || Date.now() - this.#lastSync > 500) await this.flush()
  }

  async flush(): Promise<void> {
    if (this.#unsynced === 0) return
    await this.#file.sync()
    this.#unsynced = 0
    this.#lastSync = Date.now()
    const groupsDone =
      this.#position >= this.#payloadLength
        ? Math.ceil(this.#payloadLength / this.#groupBytes)
        : Math.floor(this.#position / this.#groupBytes)
    await this.#onDurable(groupsDone, Math.min(groupsDone * this.#groupBytes, this.#payloadLength))
  }
}

function assertMatches(metadata: StreamMetadata, request: StreamFetchRequest): void {
  if (metadata.sha256 !== request.payloadSha256 || metadata.payloadLength !== request.payloadLength) {
    throw new AgentError(
      'integrity-mismatch',
      `the delta stream carries ${metadata.payloadLength} bytes with sha256 ${metadata.sha256}; the signed manifest promised ${request.payloadLength} bytes, ${request.payloadSha256}`,
    )
  }
  if (metadata.blockSize !== request.blockSize) {
    throw new AgentError(
      'integrity-mismatch',
      `block size ${metadata.blockSize} differs from the announced ${request.blockSize}`,
    )
  }
}

/** The whole payload against the signed hash: the only check that covers a resumed prefix too. */
async function verifyPayload(request: StreamFetchRequest): Promise<void> {
  const { size } = await stat(request.payloadPath)
  const actual = await hashFile(request.payloadPath)
  if (size !== request.payloadLength || actual !== request.payloadSha256) {
    await rm(request.payloadPath, { force: true })
    await clearJournal(`${request.payloadPath}.journal`)
    throw new AgentError(
      'integrity-mismatch',
      `assembled delta hashes to ${actual}, expected ${request.payloadSha256}`,
    )
  }
}
