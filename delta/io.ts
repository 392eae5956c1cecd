/**
 * The codec's only view of the outside world. Keeping I/O behind these small interfaces is what lets
 * delta/ stay pure: the agent backs them with files, the edge with R2 ranges, tests with arrays.
 */

/** Random access to a source the codec copies from (the installed version). */
export interface RandomAccessReader {
  readonly size: number
  /** Returns exactly `length` bytes at `offset`; callers never read past `size`. */
  read(offset: number, length: number): Promise<Uint8Array>
}

/** Where decoded output goes, in order. */
export interface ByteSink {
  write(chunk: Uint8Array): Promise<void>
}

/** A source of delta bytes read front to back, in chunks of whatever size the transport delivers. */
export type ByteSource = AsyncIterable<Uint8Array>

export function readerFromBytes(bytes: Uint8Array): RandomAccessReader {
  return {
    size: bytes.length,
    read: async (offset, length) => bytes.subarray(offset, offset + length),
  }
}

/** Collects everything written into one array; for tests and small in-memory applies. */
export function collectingSink(): ByteSink & { bytes(): Uint8Array } {
  const chunks: Uint8Array[] = []
  let total = 0
  return {
    write: async (chunk) => {
      chunks.push(chunk.slice())
      total += chunk.length
    },
    bytes: () => {
      const out = new Uint8Array(total)
      let at = 0
      for (const c of chunks) {
        out.set(c, at)
        at += c.length
      }
      return out
    },
  }
}

export async function* sourceFromBytes(bytes: Uint8Array, chunkSize = 64 * 1024): ByteSource {
  for (let at = 0; at < bytes.length; at += chunkSize) yield bytes.subarray(at, at + chunkSize)
}

/** Joins byte arrays into one (the codecs' and the edge's one copy of this loop). */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  let total = 0
  for (const p of parts) total += p.length
  const out = new Uint8Array(total)
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.length
  }
  return out
}
