import { createHash } from 'node:crypto'
import { constants, createReadStream } from 'node:fs'
import { access, lstat, open, rm, stat } from 'node:fs/promises'
import { setTimeout as sleep } from 'node:timers/promises'
import { AgentError, namingPath, systemError } from './errors.ts'
import { writeFully } from './fs/file-io.ts'
import { unlessMissing } from './fs/missing.ts'
import { removeTree } from './fs/remove-tree.ts'
import { isTransient, MAX_RETRY_WAIT_MS, retryWaitMs } from './transfer/backoff.ts'
import { assertRangeAsked } from './transfer/content-range.ts'
import {
  DEFAULT_TRANSFER_BOUND,
  type TransferBound,
  transferDeadlineMs,
  withDeadline,
} from './transfer/deadline.ts'
import { errorFromResponse, retryAfterMs } from './transfer/error-response.ts'
import { withHeaderTimeout } from './transfer/header-timeout.ts'
import { RateCap } from './transfer/rate-cap.ts'
import { readBody } from './transfer/read-body.ts'

export interface DownloadProgress {
  received: number
  total: number
  resumedFrom: number
}

export interface DownloadRequest {
  url: string
  /** Partial file; kept across runs so an interrupted download resumes where it stopped. */
  partialPath: string
  size: number
  sha256: string
  fetchImpl?: typeof fetch
  signal?: AbortSignal
  onProgress?: (progress: DownloadProgress) => void
  /** Bytes per second; 0 = unlimited. */
  bandwidthCapBps?: number
  /** Failed attempts in a row (none of them moving the file forward) before the download fails. */
  retries?: number
  /** Silence that counts as a stalled answer (headers or body); readBody's 30 s by default. */
  stallMs?: number
  /**
   * The whole call's bound (the config's `transferMinRateBps`, `transferGraceSeconds`): past it the
   * download fails as `network`, the partial kept for the next run. DEFAULT_TRANSFER_BOUND by default.
   */
  bound?: TransferBound
}

/** What a verified download moved: where it resumed, the bytes fetched, a discarded partial. */
export interface DownloadOutcome {
  resumedFrom: number
  fetched: number
  /**
   * Set when the resumed file did not verify: the partial's bytes (this many) were damaged, so they
   * were thrown away and the whole file downloaded again from byte 0 within the same call.
   */
  restartedAfter?: number
}

/**
 * Downloads to `partialPath`, resuming with `Range` + `If-Range` (the content hash is the ETag, so a
 * changed object restarts cleanly instead of splicing). Returns only after the whole file is fsynced
 * and its sha256 matches. On a mismatch the partial file is deleted; if bytes of an earlier run were
 * kept (a resume), they are the likely culprit (a crash, a disk error), so the download starts over
 * from byte 0 once before the mismatch is reported: a damaged partial costs one download, not a failed
 * command.
 */
export async function downloadVerified(request: DownloadRequest): Promise<DownloadOutcome> {
  const bound = request.bound ?? DEFAULT_TRANSFER_BOUND
  return withDeadline(
    transferDeadlineMs(request.size, bound, request.bandwidthCapBps),
    request.signal,
    (ms) =>
      `the download of ${request.size} bytes did not finish within ${Math.round(ms / 1000)} s (transferGraceSeconds ${bound.graceSeconds} plus its size at transferMinRateBps ${bound.minRateBps} B/s); the next run resumes from the bytes kept`,
    (signal) => downloadWithin({ ...request, ...(signal ? { signal } : {}) }),
  )
}

async function downloadWithin(request: DownloadRequest): Promise<DownloadOutcome> {
  await discardUnresumable(request.partialPath)
  const first = await downloadOnce(request)
  if (first.verified) return { resumedFrom: first.resumedFrom, fetched: first.fetched }
  await rm(request.partialPath, { force: true })
  if (first.keptFromPartial === 0) throw mismatch(first.actual, request)
  const again = await downloadOnce(request)
  if (!again.verified) {
    await rm(request.partialPath, { force: true })
    throw mismatch(again.actual, request)
  }
  return { resumedFrom: 0, fetched: first.fetched + again.fetched, restartedAfter: first.keptFromPartial }
}

function mismatch(actual: string, request: DownloadRequest): AgentError {
  return new AgentError(
    'integrity-mismatch',
    `downloaded bytes hash to ${actual}, expected ${request.sha256}`,
  )
}

/** One download to the end of the file (resuming what is there), then its hash. */
async function downloadOnce(request: DownloadRequest): Promise<{
  resumedFrom: number
  fetched: number
  /** Bytes from before this call that the file still holds (0: everything was fetched now). */
  keptFromPartial: number
  verified: boolean
  actual: string
}> {
  const fetchImpl = withHeaderTimeout(request.fetchImpl ?? fetch, request.stallMs)
  const retries = request.retries ?? 4
  const firstOffset = await existingSize(request.partialPath)
  let fetched = 0
  // The lowest start of any answer: an answer (any attempt's) that is a 200 instead of a 206 rewrites
  // the file from byte 0, so none of the partial's bytes are left, whatever earlier attempts kept.
  let keptFromPartial: number | null = null
  let failedInARow = 0
  // Set after an answer that was not the range asked for: the next attempt asks for the whole file,
  // since a 200 leaves no doubt which bytes it carries.
  let wholeFile = false
  for (let attempt = 0; ; attempt++) {
    const offset = await existingSize(request.partialPath)
    if (offset > request.size) await rm(request.partialPath, { force: true })
    if (offset === request.size) {
      // Nothing to fetch; an empty artifact still needs its (empty, durable) file to install.
      if (request.size === 0) await createEmpty(request.partialPath)
      keptFromPartial ??= offset
      break
    }
    // Where the file ends before this attempt (an oversized partial was just deleted).
    const endedAt = offset > request.size ? 0 : offset
    const from = wholeFile ? 0 : endedAt
    const progress: FetchProgress = { start: null, position: 0 }
    try {
      await fetchFrom(from, request, fetchImpl, progress)
      break
    } catch (error) {
      if (request.signal?.aborted || !isTransient(error)) throw wrap(error)
      wholeFile = error instanceof AgentError && error.details.wrongRange === true
      // An attempt that moved the file forward is not a failure of the link as a whole: a long download
      // over a connection that drops every few minutes still finishes. The total stays bounded. Forward
      // means past where the file ended before it: a 200 rewrites from byte 0, and one that drops short
      // of that end again (a server ignoring Range) only fetched the same bytes once more.
      failedInARow = progress.position > endedAt ? 0 : failedInARow + 1
      const waitMs = retryWaitMs(failedInARow, retryAfterMs(error))
      if (failedInARow > retries || attempt + 1 >= MAX_ATTEMPTS || waitMs > MAX_RETRY_WAIT_MS)
        throw wrap(error)
      await sleep(waitMs, undefined, request.signal ? { signal: request.signal } : {})
    } finally {
      if (progress.start !== null) {
        keptFromPartial = Math.min(keptFromPartial ?? firstOffset, progress.start)
        fetched += progress.position - progress.start
      }
    }
  }
  const actual = await hashFile(request.partialPath)
  const kept = keptFromPartial ?? 0
  return {
    // What the finished file kept from before this call: an oversized partial was deleted and a 200
    // rewrote from byte 0, so neither resumed anything, whatever size the partial had.
    resumedFrom: kept,
    fetched,
    keptFromPartial: kept,
    verified: actual === request.sha256,
    actual,
  }
}

/** Attempts at one download, whatever they fetched, before giving up on the link. */
const MAX_ATTEMPTS = 64

/** Where an attempt's answer started writing (null before it answered) and how far it got. */
interface FetchProgress {
  start: number | null
  position: number
}

/** Fetches from `offset` (or from 0 if the edge answers 200) to the end, keeping `progress` current. */
async function fetchFrom(
  offset: number,
  request: DownloadRequest,
  fetchImpl: typeof fetch,
  progress: FetchProgress,
): Promise<void> {
  const headers: Record<string, string> = {}
  if (offset > 0) {
    headers.range = `bytes=${offset}-`
    headers['if-range'] = `"${request.sha256}"`
  }
  const response = await fetchImpl(request.url, {
    headers,
    ...(request.signal ? { signal: request.signal } : {}),
  })
  if (response.status === 416 && offset > 0) {
    // The edge never refuses a range inside the signed size: a cache in between holding a shorter or
    // other copy does. Failing here would fail every later run too (the partial stays); the whole file
    // needs no range.
    await response.body?.cancel().catch(() => undefined)
    throw new AgentError(
      'network',
      `asked for bytes ${offset}-${request.size - 1} of ${request.size}, got 416`,
      {
        wrongRange: true,
      },
    )
  }
  if (response.status !== 200 && response.status !== 206) throw await errorFromResponse(response, 'download')
  // A 206 is written at the offset asked for only if its Content-Range says it is that range: the rest
  // of the file, `offset`-(size-1) of `size`. Another range (or none) spliced at the offset would make a
  // file that fails its sha256 only after the whole download, or overrun the signed size and fail the
  // command. Such an answer is a network fault: nothing of it is written, and downloadOnce asks for the
  // whole file next.
  if (response.status === 206)
    await assertRangeAsked(response, { first: offset, last: request.size - 1, total: request.size })
  const start = response.status === 206 ? offset : 0
  // File errors (a full disk, no permission) are the device's, not the network's: typed and named
  // here, so the retry loop below does not retry them as a dropped connection.
  const partial = request.partialPath
  // A partial that cannot be opened leaves the answer unread: cancelled, so its connection (and the
  // link to the caller's signal the header timeout holds until the body is done with) ends here.
  const file = await namingPath(partial, open(partial, start === 0 ? 'w' : 'r+')).catch(
    async (error: unknown) => {
      await response.body?.cancel().catch(() => undefined)
      throw error
    },
  )
  progress.start = start
  progress.position = start
  const cap = new RateCap(request.bandwidthCapBps ?? 0)
  try {
    await readBody(
      response,
      async (bytes) => {
        const position = progress.position
        if (position + bytes.length > request.size) {
          throw new AgentError(
            'integrity-mismatch',
            `the edge sent more than the manifest's ${request.size} bytes`,
          )
        }
        await namingPath(partial, writeFully(file, bytes, position))
        progress.position = position + bytes.length
        request.onProgress?.({ received: progress.position, total: request.size, resumedFrom: start })
        await cap.received(bytes.length, request.signal)
      },
      {
        ...(request.signal ? { signal: request.signal } : {}),
        ...(request.stallMs !== undefined ? { stallMs: request.stallMs } : {}),
      },
    )
    await namingPath(partial, file.sync())
  } finally {
    await file.close()
  }
  // A network fault the agent names (isTransient retries no bare Error): wrap() keeps its wording.
  if (progress.position !== request.size)
    throw new AgentError(
      'network',
      `download failed: connection ended at ${progress.position} of ${request.size} bytes`,
    )
}

/**
 * A resumable partial must be a regular file this process can read and write. Anything else (a folder,
 * a link, a device, a file it may not open) cannot be resumed and never heals by retrying, so it is
 * discarded and the download starts over; one that cannot even be removed is an io error naming it.
 */
async function discardUnresumable(path: string): Promise<void> {
  const info = await unlessMissing(lstat(path), null)
  if (info === null) return
  if (
    info.isFile() &&
    (await access(path, constants.R_OK | constants.W_OK).then(
      () => true,
      () => false,
    ))
  )
    return
  try {
    await removeTree(path)
  } catch (error) {
    throw new AgentError(
      'io',
      `the partial download ${path} cannot be resumed (not a regular file it can read and write) and could not be removed: ${systemError(error)?.reason ?? String(error)}; delete it by hand`,
      { path },
    )
  }
}

async function createEmpty(path: string): Promise<void> {
  const file = await open(path, 'w')
  try {
    await file.sync()
  } finally {
    await file.close()
  }
}

async function existingSize(path: string): Promise<number> {
  try {
    return (await stat(path)).size
  } catch {
    return 0
  }
}

/**
 * Whether the file at `path` has exactly the signed bytes (size first, so a wrong length costs no
 * hashing); false for a missing file or anything but a regular file.
 */
export async function fileHasBytes(
  path: string,
  expected: { size: number; sha256: string },
): Promise<boolean> {
  const info = await stat(path).catch(() => null)
  if (!info?.isFile() || info.size !== expected.size) return false
  return (await hashFile(path)) === expected.sha256
}

export async function hashFile(path: string): Promise<string> {
  const hash = createHash('sha256')
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer)
  return hash.digest('hex')
}

function wrap(error: unknown): Error {
  if (error instanceof AgentError) return error
  if (error instanceof Error && error.name === 'AbortError') return error
  return new AgentError('network', `download failed: ${(error as Error).message}`)
}
