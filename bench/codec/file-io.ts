/**
 * The bench's output sink: each chunk written straight to a file descriptor, nothing buffered. The
 * source is read through the agent's own reader (client-agent/fs/file-io.ts).
 * The delta stream is the agent's openFileSource, so apply runs the way a device does.
 */
import { closeSync, openSync, writeSync } from 'node:fs'
import type { ByteSink } from '../../delta/io.ts'

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
