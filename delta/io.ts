/**
 * The codec's only view of the outside world. Keeping I/O behind these small interfaces is what lets
 * delta/ stay pure: the agent backs them with files, the edge with R2 ranges, tests with arrays.
 */

/** Random access to a source the codec copies from (the installed version). */
export interface RandomAccessReader {
  readonly size: number
  /** Returns exactly `length` bytes at `offset`; callers never read past `size`. */
  read(offset: number, length: number): Promise<Uint8Array>
  /**
   * Optional: fills all of `into` with the bytes at `offset` (short only at the end of the source).
   * Streaming decoders then read into buffers they reuse instead of getting a fresh array per read;
   * on a 120 MB apply that is the difference between a few MiB and ~60 MiB of garbage awaiting V8's
   * next collection (which is what peak RSS sees).
   */
  readInto?(offset: number, into: Uint8Array): Promise<number>
}

/**
 * Without readInto, reads go through `read` in pieces of this size: the same bytes, but each fresh
 * array dies young (freed by a cheap scavenge) instead of piling up as megabyte buffers until V8's
 * next full collection.
 */
const FALLBACK_PIECE = 256 * 1024

/** Reads source[offset, offset + into.length) into `into`, with or without the reader's readInto. */
export async function readFully(
  reader: RandomAccessReader,
  offset: number,
  into: Uint8Array,
): Promise<number> {
  if (reader.readInto) return reader.readInto(offset, into)
  let got = 0
  while (got < into.length) {
    const bytes = await reader.read(offset + got, Math.min(FALLBACK_PIECE, into.length - got))
    const n = Math.min(bytes.length, into.length - got)
    into.set(bytes.subarray(0, n), got)
    got += n
    if (n === 0) break
  }
  return got
}

/**
 * Where decoded output goes, in order. A chunk is only valid until the returned promise resolves: the
 * decoders reuse their output buffers, so a sink that keeps bytes must copy them (collectingSink does).
 */
export interface ByteSink {
  write(chunk: Uint8Array): Promise<void>
}

/** A source of delta bytes read front to back, in chunks of whatever size the transport delivers. */
export type ByteSource = AsyncIterable<Uint8Array>

export function readerFromBytes(bytes: Uint8Array): RandomAccessReader {
  return {
    size: bytes.length,
    read: async (offset, length) => bytes.subarray(offset, offset + length),
    readInto: async (offset, into) => {
      const part = bytes.subarray(offset, offset + into.length)
      into.set(part)
      return part.length
    },
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

/** Byte-for-byte equality. */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false
  const n = a.length
  let i = 0
  // Four bytes at a time where both views share an alignment (the usual case), which the delta
  // proofs need on tens of MB.
  if (n >= 64 && (a.byteOffset & 3) === (b.byteOffset & 3)) {
    for (; ((a.byteOffset + i) & 3) !== 0; i++) if (a[i] !== b[i]) return false
    const words = (n - i) >>> 2
    const wa = new Uint32Array(a.buffer, a.byteOffset + i, words)
    const wb = new Uint32Array(b.buffer, b.byteOffset + i, words)
    for (let k = 0; k < words; k++) if (wa[k] !== wb[k]) return false
    i += words * 4
  }
  for (; i < n; i++) if (a[i] !== b[i]) return false
  return true
}
