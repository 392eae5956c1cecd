import { createHash } from 'node:crypto'
import { constants, createReadStream } from 'node:fs'
import { access, lstat, open, rm, stat } from 'node:fs/promises'
import { setTimeout as sleep } from 'node:timers/promises'
import { AgentError, namingPath, systemError } from './errors.ts'
import { unlessMissing } from './fs/missing.ts'
import { removeTree } from './fs/remove-tree.ts'
import { errorFromResponse } from './transfer/error-response.ts'
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
  retries?: number
}

/**
 * Downloads to `partialPath`, resuming with `Range` + `If-Range` (the content hash is the ETag, so a
 * changed object restarts cleanly instead of splicing). Returns only after the whole file is fsynced
 * and its sha256 matches; on mismatch the partial file is deleted.
 */
export async function downloadVerified(
  request: DownloadRequest,
): Promise<{ resumedFrom: number; fetched: number }> {
  const fetchImpl = withHeaderTimeout(request.fetchImpl ?? fetch)
  const retries = request.retries ?? 4
  await discardUnresumable(request.partialPath)
  const firstOffset = await existingSize(request.partialPath)
  let fetched = 0
  for (let attempt = 0; ; attempt++) {
    const offset = await existingSize(request.partialPath)
    if (offset > request.size) await rm(request.partialPath, { force: true })
    if (offset === request.size) {
      // Nothing to fetch; an empty artifact still needs its (empty, durable) file to install.
      if (request.size === 0) await createEmpty(request.partialPath)
      break
    }
    try {
      fetched += await fetchFrom(offset > request.size ? 0 : offset, request, fetchImpl)
      break
    } catch (error) {
      if (request.signal?.aborted || error instanceof AgentError || attempt >= retries) throw wrap(error)
      await sleep(Math.min(250 * 2 ** attempt, 5000))
    }
  }
  const actual = await hashFile(request.partialPath)
  if (actual !== request.sha256) {
    await rm(request.partialPath, { force: true })
    throw new AgentError(
      'integrity-mismatch',
      `downloaded bytes hash to ${actual}, expected ${request.sha256}`,
    )
  }
  return { resumedFrom: firstOffset, fetched }
}

async function fetchFrom(offset: number, request: DownloadRequest, fetchImpl: typeof fetch): Promise<number> {
  const headers: Record<string, string> = {}
  if (offset > 0) {
    headers.range = `bytes=${offset}-`
    headers['if-range'] = `"${request.sha256}"`
  }
  const response = await fetchImpl(request.url, {
    headers,
    ...(request.signal ? { signal: request.signal } : {}),
  })
  if (response.status !== 200 && response.status !== 206) throw await errorFromResponse(response, 'download')
  const start = response.status === 206 ? offset : 0
  // File errors (a full disk, no permission) are the device's, not the network's: typed and named
  // here, so the retry loop below does not retry them as a dropped connection.
  const partial = request.partialPath
  const file = await namingPath(partial, open(partial, start === 0 ? 'w' : 'r+'))
  let position = start
  const cap = new RateCap(request.bandwidthCapBps ?? 0)
  try {
    await readBody(
      response,
      async (bytes) => {
        if (position + bytes.length > request.size) {
          throw new AgentError(
            'integrity-mismatch',
            `the edge sent more than the manifest's ${request.size} bytes`,
          )
        }
        await namingPath(partial, file.write(bytes, 0, bytes.length, position))
        position += bytes.length
        request.onProgress?.({ received: position, total: request.size, resumedFrom: offset })
        await cap.received(bytes.length, request.signal)
      },
      request.signal ? { signal: request.signal } : {},
    )
    await namingPath(partial, file.sync())
  } finally {
    await file.close()
  }
  if (position !== request.size) throw new Error(`connection ended at ${position} of ${request.size} bytes`)
  return position - start
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
