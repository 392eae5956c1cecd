/**
 * Node's zlib as a DeflateEngine for the archive method (delta/archive/deflate-engine.ts): rebuilding a
 * .tgz on the device and proving parameters on the publisher are a level-9 deflate of the whole
 * content, which native zlib does in about half pako's time.
 *
 * pako's output is the reference, so the engine only claims what it was seen to reproduce: the probe
 * below (run on first use) deflates a sample at several settings and compares with pako's recorded
 * output, learning which of pako's two hash functions this Node's zlib uses (Node's bundled Chromium zlib matches pako's default; a Node linked against a
 * distribution's classic zlib matches `legacyHash`). If it matches neither, the engine claims nothing
 * and pako does everything. Deflate output does not depend on how the input is chunked (tested), so the
 * streaming form may feed zlib whatever pieces arrive.
 */
import { once } from 'node:events'
import {
  constants,
  createDeflateRaw,
  deflateRaw,
  deflateRawSync,
  inflateRawSync,
  type ZlibOptions,
} from 'node:zlib'
import { crc32 } from '../../delta/archive/crc32.ts'
import type { DeflateEngine, DeflateParams, DeflateStream } from '../../delta/archive/index.ts'

function zlibOptions(params: DeflateParams): ZlibOptions {
  return {
    level: params.level,
    memLevel: params.memLevel,
    windowBits: params.windowBits,
    strategy: params.strategy,
  }
}

function resumedOptions(params: DeflateParams, dictionary: Uint8Array): ZlibOptions {
  return dictionary.length > 0 ? { ...zlibOptions(params), dictionary } : zlibOptions(params)
}

/**
 * Output room for one asynchronous deflate of `inputLength` bytes: more than zlib's deflateBound
 * (input + input/4096 + input/16384 + a few bytes), so the whole piece is one job on the thread pool.
 * With Node's default 16 KiB chunks every full output buffer waits for the main thread to hand zlib the
 * next one, so a main thread busy with synchronous work (the diff, while checkpoints are proved) held
 * each piece at its first chunk: a 22 MB level-9 deflate started before 1.5 s of blocking finished
 * 0.94 s after it, against when it ended with one job (measured on two cores). zlib's output buffer
 * is allocated uninitialised, so only the pages it writes (the compressed size) become resident.
 */
export function oneJobChunkSize(inputLength: number): number {
  return inputLength + (inputLength >>> 8) + 1024
}

/** Node's zlib rejects windowBits 8 for raw deflate (it silently means 9), so those stay with pako. */
function expressible(params: DeflateParams): boolean {
  return params.windowBits >= 9 && params.windowBits <= 15 && params.strategy <= constants.Z_FIXED
}

/**
 * Input zlib may have queued but not yet compressed. Writes return before zlib has finished with them
 * (it works on the thread pool), so the main thread keeps decoding the delta meanwhile; past this much
 * queued input, push waits for zlib to catch up.
 */
const QUEUE_BYTES = 4 * 1024 * 1024

function openStream(params: DeflateParams): DeflateStream {
  // Stream options pass through to the Transform underneath; ZlibOptions just does not list them.
  const options: ZlibOptions & { writableHighWaterMark: number } = {
    ...zlibOptions(params),
    writableHighWaterMark: QUEUE_BYTES,
  }
  const z = createDeflateRaw(options)
  const out: Uint8Array[] = []
  let failure: unknown
  z.on('data', (chunk: Buffer) => out.push(chunk))
  z.on('error', (error: unknown) => {
    failure = error
  })
  const drain = (): readonly Uint8Array[] => {
    if (failure !== undefined) throw failure
    return out.splice(0)
  }
  return {
    async push(bytes) {
      // A copy: the caller may reuse its buffer as soon as push returns, before zlib has read it.
      if (!z.write(bytes.slice())) await once(z, 'drain')
      return drain()
    },
    async finish() {
      z.end()
      await once(z, 'end')
      return drain()
    },
  }
}

/**
 * A sample with long and short repeats at varying distances, so lazy matching, hash chains and several
 * blocks are exercised; a hash or matcher difference would change the output.
 *
 * Built a word or a repeat at a time (`set`, `copyWithin`) rather than a byte at a time: the probe runs
 * once per process before its first archive rebuild, and the byte loop ran cold (interpreted) over
 * all 40 KiB. A repeat that overlaps what it copies (its source starts less than its length back)
 * repeats its period byte by byte, as the byte loop did, so the bytes are the same (PAKO_PROBE's
 * records, which native-deflate.test.ts recomputes with pako, still hold).
 */
export function probeSample(): Uint8Array {
  const words = PROBE_WORDS
  const out = new Uint8Array(40 * 1024)
  let seed = 0x2545f491
  let at = 0
  while (at < out.length) {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0
    const pick = seed >>> 16
    if (pick % 5 === 0 && at > 300) {
      // Copy an earlier stretch: a match the deflater must find.
      const len = Math.min(3 + (pick % 200), out.length - at)
      const from = at - 1 - ((pick >>> 3) % Math.min(at - 1, 20_000))
      if (at - from >= len) out.copyWithin(at, from, from + len)
      else for (let i = 0; i < len; i++) out[at + i] = out[from + i]!
      at += len
    } else {
      const word = words[pick % words.length]!
      const n = Math.min(word.length, out.length - at)
      out.set(n === word.length ? word : word.subarray(0, n), at)
      at += n
      if (at < out.length) out[at++] = pick & 0xff
    }
  }
  return out
}

const PROBE_WORDS: readonly Uint8Array[] = [
  'deflate',
  'delta',
  'port',
  'archive',
  'tarball',
  'manifest',
  '{"name":',
  'function ',
  '\n',
].map((w) => new TextEncoder().encode(w))

/**
 * What pako makes of the probe sample at the settings npm, gzip and zip tools use, per hash family
 * (length and CRC-32 of the raw deflate). Recorded rather than recomputed, so the probe costs three
 * native deflates of 40 KiB instead of a cold pako run; native-deflate.test.ts recomputes them with
 * the pako we ship, so a pako upgrade that changed them fails the tests.
 */
export const PAKO_PROBE: readonly {
  legacyHash: boolean
  level: number
  memLevel: number
  length: number
  crc: number
}[] = [
  { legacyHash: false, level: 9, memLevel: 8, length: 3966, crc: 3349160494 },
  { legacyHash: false, level: 6, memLevel: 8, length: 4011, crc: 1901123759 },
  { legacyHash: false, level: 1, memLevel: 9, length: 5786, crc: 2112573578 },
  { legacyHash: true, level: 9, memLevel: 8, length: 3961, crc: 2404089876 },
  { legacyHash: true, level: 6, memLevel: 8, length: 4018, crc: 2717975927 },
  { legacyHash: true, level: 1, memLevel: 9, length: 5950, crc: 1118472910 },
]

/**
 * Which pako hash family Node's zlib reproduces at every probed setting, or null for neither. The
 * cheapest setting is tried first (level 1, then 6, then 9: ≈ 0.2, 0.7 and 2.3 ms on the sample), so a
 * family that does not match is usually ruled out before the level-9 deflate.
 */
export function probeHashFamily(): boolean | null {
  const sample = probeSample()
  for (const legacyHash of [false, true]) {
    const settings = PAKO_PROBE.filter((p) => p.legacyHash === legacyHash).sort((a, b) => a.level - b.level)
    const agrees = settings.every((p) => {
      const params: DeflateParams = { ...p, windowBits: 15, strategy: 0 }
      const native = deflateRawSync(sample, zlibOptions(params))
      return native.length === p.length && crc32(native) === p.crc
    })
    if (agrees) return legacyHash
  }
  return null
}

/** The `{ buffer, engine }` pair zlib's sync calls return with `info: true`. */
function withConsumed(result: unknown): { data: Uint8Array; consumed: number } {
  if (typeof result === 'object' && result !== null && 'buffer' in result && 'engine' in result) {
    const { buffer, engine } = result
    if (
      buffer instanceof Uint8Array &&
      typeof engine === 'object' &&
      engine !== null &&
      'bytesWritten' in engine &&
      typeof engine.bytesWritten === 'number'
    )
      return { data: buffer, consumed: engine.bytesWritten }
  }
  throw new Error('zlib returned no { buffer, engine } for info: true')
}

let family: boolean | null | undefined

/** Probed on first use, once per process (a few ms), so commands that never rebuild pay nothing. */
function hashFamily(): boolean | null {
  if (family === undefined) family = probeHashFamily()
  return family
}

/** Node's zlib; claims only the parameter sets it reproduces (none if the probe fails). */
export const nativeDeflateEngine: DeflateEngine = {
  name: 'node-zlib',
  handles: (params) => {
    const legacyHash = hashFamily()
    return legacyHash !== null && params.legacyHash === legacyHash && expressible(params)
  },
  deflate: (raw, params) => deflateRawSync(raw, zlibOptions(params)),
  open: openStream,
  deflateResumedSync: (input, params, dictionary) =>
    deflateRawSync(input, resumedOptions(params, dictionary)),
  deflateResumed: (input, params, dictionary) =>
    new Promise((resolve, reject) =>
      // The async form runs on libuv's thread pool, so pieces of one stream deflate on several cores.
      deflateRaw(
        input,
        { ...resumedOptions(params, dictionary), chunkSize: oneJobChunkSize(input.length) },
        (error, out) => (error ? reject(error) : resolve(out)),
      ),
    ),
  inflateRaw(input, maxOutput) {
    // `info` reports how much input zlib consumed: deflate is self-terminating and gzip members and zip
    // entries carry more bytes after it. Output past maxOutputLength is refused inside zlib (a RangeError).
    // @types/node has no overload for `info`, so the result is checked rather than asserted.
    const result: unknown = inflateRawSync(input, { info: true, maxOutputLength: Math.max(1, maxOutput) })
    return withConsumed(result)
  },
}
