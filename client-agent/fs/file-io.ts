import { type FileHandle, open, rename, rm, stat } from 'node:fs/promises'
import { dirname } from 'node:path'
import type { ByteSink, ByteSource, RandomAccessReader } from '../../delta/io.ts'
import { AgentError, namingPath } from '../errors.ts'
import { forgetTemp, fsyncDir, openTempFor } from './atomic.ts'

/**
 * Writes all of `bytes` at `position`. A write may store fewer bytes than asked without an error (the
 * kernel's short write: a disk with room for part of the chunk fills up), and it is only the next write
 * that fails with ENOSPC; ignoring the count lost the rest of the chunk silently, and the file then
 * failed its sha256 (`integrity-mismatch`, as if tampered with) instead of being a full disk.
 */
export async function writeFully(handle: FileHandle, bytes: Uint8Array, position: number): Promise<void> {
  let done = 0
  while (done < bytes.length) {
    const { bytesWritten } = await handle.write(bytes, done, bytes.length - done, position + done)
    // Never 0 for a regular file with bytes asked for; guarded so a strange one cannot spin here.
    if (bytesWritten <= 0) throw Object.assign(new Error('write stored nothing'), { code: 'EIO' })
    done += bytesWritten
  }
}

function notARegularFile(path: string): AgentError {
  return new AgentError('io', `${path} is not a regular file`, { path })
}

/** The size of the regular file at `path` (a directory or device is refused as an io error). */
export async function regularFileSize(path: string): Promise<number> {
  const stats = await stat(path)
  if (!stats.isFile()) throw notARegularFile(path)
  return stats.size
}

/** A RandomAccessReader over a file: the codec reads the installed version without loading it whole. */
export async function openFileReader(path: string): Promise<RandomAccessReader & { close(): Promise<void> }> {
  const handle = await open(path, 'r')
  const stats = await handle.stat()
  if (!stats.isFile()) {
    await handle.close()
    throw notARegularFile(path)
  }
  const { size } = stats
  // Fills `into` from `offset` until it is full or the file ends; the count is what was read. At most
  // 1 GiB per read: Node aborts the process on a length past 2^31 - 1 (an archive's whole source).
  const readInto = async (offset: number, into: Uint8Array): Promise<number> => {
    let done = 0
    while (done < into.length) {
      const { bytesRead } = await handle.read(
        into,
        done,
        Math.min(into.length - done, 2 ** 30),
        offset + done,
      )
      if (bytesRead === 0) break
      done += bytesRead
    }
    // The codec was told `size`: a file that ends before it shrank while being read (rewritten in place,
    // truncated), and what it was matching or rebuilding from is gone.
    if (done < Math.min(into.length, size - offset))
      throw new AgentError('io', `${path} changed while it was read: it ends before its ${size} bytes`, {
        path,
      })
    return done
  }
  return {
    size,
    read: async (offset, length) => {
      const buffer = new Uint8Array(length)
      const done = await readInto(offset, buffer)
      return done === length ? buffer : buffer.subarray(0, done)
    },
    // The codec reuses its buffers through this, keeping apply memory flat on big files (delta/io.ts).
    readInto,
    close: () => handle.close(),
  }
}

/** What reads one chunk of a file source: the codec may keep a chunk, so each is a fresh array. */
const SOURCE_CHUNK = 256 * 1024

/**
 * A file's bytes in order, as the codec's ByteSource (a directory or device is refused, named). The
 * caller owns the handle and closes it however the read ends: the codec pulls what it needs and may
 * stop early, on a damaged delta, a sink that fails or a limit, without ever telling its source
 * (applyDeltaStream takes the iterator by hand), so an iterator's return() cannot be relied on.
 */
export async function openFileSource(path: string): Promise<ByteSource & { close(): Promise<void> }> {
  const handle = await open(path, 'r')
  try {
    if (!(await handle.stat()).isFile()) throw notARegularFile(path)
  } catch (error) {
    await handle.close()
    throw error
  }
  let closing: Promise<void> | null = null
  return {
    async *[Symbol.asyncIterator]() {
      for (;;) {
        const chunk = new Uint8Array(SOURCE_CHUNK)
        const { bytesRead } = await handle.read(chunk, 0, chunk.length, null)
        if (bytesRead === 0) return
        yield chunk.subarray(0, bytesRead)
      }
    },
    close: () => {
      closing ??= handle.close()
      return closing
    },
  }
}

/**
 * Runs `work`, closing every file it hands to `own` however `work` ends (a later open failing, the
 * codec throwing): a handle left to the garbage collector holds its file, and a deleted delta's disk
 * space, until a collection that may never come. `own` returns what it was given:
 * `const source = own(await openFileReader(path))`.
 */
export async function closingAll<T>(
  work: (own: <F extends { close(): Promise<void> }>(file: F) => F) => Promise<T>,
): Promise<T> {
  const owned: Array<{ close(): Promise<void> }> = []
  try {
    return await work((file) => {
      owned.push(file)
      return file
    })
  } finally {
    // Read handles: closing one cannot lose data, so its failure must not hide the command's own.
    await Promise.all(owned.map((file) => file.close().catch(() => undefined)))
  }
}

/**
 * A sink that writes to a temp file beside `target` and only on `commit` fsyncs and renames it into
 * place: output that later fails verification never becomes visible.
 */
export async function openAtomicFileSink(
  target: string,
): Promise<ByteSink & { commit(): Promise<void>; discard(): Promise<void>; path: string }> {
  const { temp, handle } = await openTempFor(target)
  let position = 0
  let closed = false
  return {
    path: temp,
    // A full disk surfaces here, on the handle, whose errors name no file: name the output.
    write: async (chunk) => {
      await namingPath(target, writeFully(handle, chunk, position))
      position += chunk.length
    },
    commit: async () => {
      await namingPath(target, handle.sync())
      await handle.close()
      closed = true
      await namingPath(target, rename(temp, target))
      forgetTemp(temp)
      await fsyncDir(dirname(target))
    },
    discard: async () => {
      if (!closed) await handle.close().catch(() => undefined)
      closed = true
      await rm(temp, { force: true })
      forgetTemp(temp)
    },
  }
}
