/**
 * Fuzzing the codec's front door, applyDeltaStream (index.ts), where the per-container fuzzers stop:
 * the delta arrives in chunks of any size and the *source reader* misbehaves too — it returns short
 * reads (through `read` or `readInto`), claims a size the bytes behind it do not have, or hands back
 * more than it was asked for. Deltas of every container (VCDIFF, DPAX, DPAR over a small .tgz pair,
 * and VCDIFF and DPAX as createDeltaStream writes them) are applied valid, damaged or as noise. Allowed outcomes: a DeltaFormatError, or output that is
 * exactly the target (required when both the delta and the reader are honest).
 */
import { gzip } from 'pako'
import { createApproxDelta } from './approx/encode.ts'
import { createArchiveDelta } from './archive/create.ts'
import type { DeflateEngine } from './archive/deflate-engine.ts'
import { approxDiffer } from './archive/differs.ts'
import { DeltaFormatError } from './errors.ts'
import { mutateBytes, randomBytes, randomKnownCopies, rng, sourceLikeText } from './fuzz-input.ts'
import { applyDeltaStream } from './index.ts'
import {
  collectingSink,
  concatBytes,
  type RandomAccessReader,
  readerFromBytes,
  sameBytes,
  sourceFromBytes,
} from './io.ts'
import { createDeltaStream } from './stream-create.ts'
import { encodeVcdiff } from './vcdiff/encode.ts'

export interface ApplyStreamFuzzReport {
  iterations: number
  /** Applies that produced the target. */
  applied: number
  rejected: number
  /** Applies whose reader or delta was dishonest and that still produced the target. */
  survived: number
}

const MISBEHAVIOURS = [
  'honest',
  'short-read',
  'short-read-into',
  'size-too-large',
  'size-too-small',
  'long-read',
] as const
type Misbehaviour = (typeof MISBEHAVIOURS)[number]

/** A reader over `bytes` that misbehaves as told, deciding each read's damage with `r`. */
export function hostileReader(bytes: Uint8Array, how: Misbehaviour, r: () => number): RandomAccessReader {
  const clip = (offset: number, length: number) => bytes.subarray(offset, offset + length)
  switch (how) {
    case 'honest':
      return { size: bytes.length, read: async (o, l) => clip(o, l) }
    case 'short-read':
      // `read` only (the readFully fallback), sometimes returning fewer bytes than asked, even none.
      return {
        size: bytes.length,
        read: async (o, l) => clip(o, r() < 0.3 ? Math.floor(r() * l) : l),
      }
    case 'short-read-into':
      return {
        size: bytes.length,
        read: async (o, l) => clip(o, l),
        readInto: async (o, into) => {
          const n = r() < 0.3 ? Math.floor(r() * into.length) : into.length
          const part = clip(o, n)
          into.set(part)
          return part.length
        },
      }
    case 'size-too-large': {
      // A file truncated after its size was taken: reads near the end come back short.
      const size = bytes.length + 1 + Math.floor(r() * 4096)
      return {
        size,
        read: async (o, l) => clip(o, l),
        readInto: async (o, into) => {
          const part = clip(o, into.length)
          into.set(part)
          return part.length
        },
      }
    }
    case 'size-too-small':
      return { size: Math.floor(r() * bytes.length), read: async (o, l) => clip(o, l) }
    case 'long-read':
      // More than asked for, against the interface's contract: decoders must not trust the extra bytes.
      return { size: bytes.length, read: async (o, l) => bytes.subarray(o, o + l + 1 + Math.floor(r() * 64)) }
  }
}

interface Pair {
  source: Uint8Array
  target: Uint8Array
  delta: Uint8Array
}

/** Small .tgz pairs and their archive deltas (inner VCDIFF and inner DPAX), built once per run. */
function archivePairs(): Pair[] {
  const text = sourceLikeText(11, 24_000)
  const edited = concatBytes([text.subarray(0, 9000), sourceLikeText(12, 400), text.subarray(9000)])
  const source = gzip(text, { level: 9 })
  const target = gzip(edited, { level: 9 })
  const pairs: Pair[] = []
  for (const differs of [undefined, [approxDiffer]]) {
    const made = createArchiveDelta(source, target, differs ? { differs } : {})
    if ('delta' in made) pairs.push({ source, target, delta: made.delta })
  }
  return pairs
}

/**
 * Deltas made by createDeltaStream with small windows, so the decoders see what only it writes: VCDIFF
 * windows whose source segments move through a source bigger than the streaming decoder's page cache
 * (when the fuzz limits shrink it to two pages), and DPAX blocks matched against moving source windows.
 */
async function streamedPairs(): Promise<Pair[]> {
  const r = rng(0x57e4)
  const source = randomBytes(r, 400_000)
  // Scattered edits, and a stretch moved further than a source window reaches (sent as new bytes).
  const target = source.slice()
  for (let e = 0; e < 40; e++) target.set(randomBytes(r, 1 + Math.floor(r() * 30)), Math.floor(r() * 399_000))
  target.copyWithin(20_000, 300_000, 340_000)
  const pairs: Pair[] = []
  // Many small windows; windows whose source segments (the span of bytes they copy) outgrow two pages.
  for (const [method, sourceWindow, targetWindow] of [
    ['vcdiff', 96 * 1024, 24 * 1024],
    ['vcdiff', 384 * 1024, 160 * 1024],
    ['approx', 96 * 1024, 16 * 1024],
  ] as const) {
    const sink = collectingSink()
    await createDeltaStream(readerFromBytes(source), readerFromBytes(target), sink, {
      method,
      sourceWindow,
      targetWindow,
    })
    pairs.push({ source, target, delta: sink.bytes() })
  }
  return pairs
}

/**
 * A random source and an edited copy of it, with a VCDIFF or DPAX delta between them, sometimes made
 * with known-copy hints (right and wrong ones).
 */
function bytePair(r: () => number): Pair {
  const source = randomBytes(r, Math.floor(r() * 4000))
  const target = source.slice()
  for (let e = Math.floor(r() * 6); e > 0; e--) {
    const at = Math.floor(r() * target.length)
    target.set(randomBytes(r, Math.min(1 + Math.floor(r() * 40), target.length - at)), at)
  }
  // Sometimes enough fresh bytes that DPAX's literal stream passes 4 KiB compressed, where an engine's
  // native inflate takes over (approx/inflate.ts).
  const fresh = r() < 0.1 ? 5000 + Math.floor(r() * 3000) : r() < 0.3 ? Math.floor(r() * 500) : 0
  const grown = fresh > 0 ? concatBytes([target, randomBytes(r, fresh)]) : target
  const hints = r() < 0.3 ? { knownCopies: randomKnownCopies(r, source.length, grown.length) } : {}
  const delta =
    r() < 0.5
      ? encodeVcdiff(source, grown, {
          checksum: r() < 0.7,
          ...(r() < 0.3 ? { windowSize: 64 + Math.floor(r() * 1000) } : {}),
          ...hints,
        })
      : createApproxDelta(source, grown, { blockSize: 1 + Math.floor(r() * 2000), ...hints })
  return { source, target: grown, delta }
}

const LIMITS = {
  vcdiff: { maxWindowSize: 1 << 20, maxTargetSize: 4 << 20 },
  approx: { maxTargetSize: 4 << 20, maxBlockSize: 1 << 20 },
  archive: { maxTargetBytes: 1 << 20, maxExpandedBytes: 4 << 20 },
}

/**
 * Applies valid, damaged and random deltas through applyDeltaStream with misbehaving source readers
 * for `seconds`; throws (with the seed that reproduces it) on any outcome but the target or a
 * DeltaFormatError, and when an honest delta and reader fail to produce the target. With `engine` (the
 * agent's, from scripts/fuzz.ts) half the applies inflate and rebuild with it, as the agent does.
 */
export async function fuzzApplyStream(
  seconds: number,
  seed = Date.now(),
  engine?: DeflateEngine,
): Promise<ApplyStreamFuzzReport> {
  const report: ApplyStreamFuzzReport = { iterations: 0, applied: 0, rejected: 0, survived: 0 }
  const archives = archivePairs()
  const streamed = await streamedPairs()
  const deadline = Date.now() + seconds * 1000
  while (Date.now() < deadline) {
    const iterSeed = (seed + report.iterations * 0x632be5ab) | 0
    const r = rng(iterSeed)
    const pick = r()
    const pair =
      pick < 0.15 && archives.length > 0
        ? archives[Math.floor(r() * archives.length)]!
        : pick < 0.3
          ? streamed[Math.floor(r() * streamed.length)]!
          : bytePair(r)
    const how = MISBEHAVIOURS[Math.floor(r() * MISBEHAVIOURS.length)]!
    const kind = r()
    const delta =
      kind < 0.35
        ? pair.delta
        : kind < 0.45
          ? randomBytes(r, Math.floor(r() * 300))
          : mutateBytes(r, pair.delta)
    const honest = how === 'honest' && delta === pair.delta
    const sink = collectingSink()
    const where = `apply-stream fuzz (seed ${iterSeed}, reader ${how}, delta ${delta === pair.delta ? 'valid' : 'damaged'})`
    try {
      await applyDeltaStream(
        hostileReader(pair.source, how, r),
        sourceFromBytes(delta, 1 + Math.floor(r() * 700)),
        sink,
        {
          ...LIMITS,
          // Two 64 KiB pages: VCDIFF source segments larger than that are paged in and out.
          ...(r() < 0.5 ? { vcdiff: { ...LIMITS.vcdiff, maxSourceCache: 2 * 64 * 1024 } } : {}),
          ...(engine && r() < 0.5 ? { deflateEngine: engine } : {}),
        },
      )
      // A damaged VCDIFF without checksums may legitimately decode to other bytes; everything else is
      // checked (DPAX and DPAR by their target CRC, VCDIFF by the unchanged delta).
      const checked = delta === pair.delta || delta[0] !== 0xd6
      if (checked && !sameBytes(sink.bytes(), pair.target)) throw new Error(`${where}: wrong output accepted`)
      if (delta === pair.delta) report.applied++
      if (!honest) report.survived++
    } catch (e) {
      if (!(e instanceof DeltaFormatError)) {
        throw new Error(`${where}: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`)
      }
      if (honest) throw new Error(`${where}: an honest delta and reader were refused: ${e.message}`)
      report.rejected++
    }
    report.iterations++
  }
  return report
}
