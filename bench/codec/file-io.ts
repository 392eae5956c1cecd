/**
 * delta/io.ts interfaces backed by files, so a streaming apply in the bench child holds neither the
 * source nor the target in memory: positioned reads on a file descriptor, the delta as a read stream,
 * output written straight to a file descriptor.
 */
import { closeSync, createReadStream, fstatSync, openSync, readSync, writeSync } from 'node:fs'
import type { ByteSink, ByteSource, RandomAccessReader } from '../../delta/io.ts'

export interface FileReader extends RandomAccessReader {
  close(): void
}

/** A RandomAccessReader over `path`: each read is one pread (fs.readSync at an offset) into a fresh array. */
export function fileReader(path: string): FileReader {
  const fd = openSync(path, 'r')
  const size = fstatSync(fd).size
  return {
    size,
    read: async (offset, length) => {
      const out = new Uint8Array(Math.max(0, Math.min(length, size - offset)))
      let at = 0
      while (at < out.length) {
        const n = readSync(fd, out, at, out.length - at, offset + at)
        if (n === 0) break
        at += n
      }
      return at === out.length ? out : out.subarray(0, at)
    },
    close: () => closeSync(fd),
  }
}

/** The delta file front to back in 64 KiB chunks, as a transport would deliver it. */
export function fileSource(path: string, chunkSize = 64 * 1024): ByteSource {
  return createReadStream(path, { highWaterMark: chunkSize })
}

export interface FileSink extends ByteSink {
  readonly written: number
  close(): void
}

/** Writes each chunk synchronously to `path` (truncated first); nothing is buffered here. */
export function fileSink(path: string): FileSink {
  const fd = openSync(path, 'w')
  let written = 0
  return {
    get written() {
      return written
    },
    write: async (chunk) => {
      let at = 0
      while (at < chunk.length) at += writeSync(fd, chunk, at, chunk.length - at)
      written += chunk.length
    },
    close: () => closeSync(fd),
  }
}
