import { open, rename, rm, stat } from 'node:fs/promises'
import { dirname } from 'node:path'
import type { ByteSink, ByteSource, RandomAccessReader } from '../../delta/io.ts'
import { AgentError, namingPath } from '../errors.ts'
import { forgetTemp, fsyncDir, openTempFor } from './atomic.ts'

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

/** A file's bytes in order, as the codec's ByteSource (a directory or device is refused, named). */
export async function* fileSource(path: string): ByteSource {
  const handle = await open(path, 'r')
  if (!(await handle.stat()).isFile()) {
    await handle.close()
    throw notARegularFile(path)
  }
  // The stream owns the handle from here and closes it when it ends, fails or is abandoned.
  for await (const chunk of handle.createReadStream({ highWaterMark: 256 * 1024 })) yield chunk as Uint8Array
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
      await namingPath(target, handle.write(chunk, 0, chunk.length, position))
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
