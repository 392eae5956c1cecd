/**
 * Checkpoints: places inside a target deflate stream where deflate can be restarted — fed the input
 * from there on, with the 32 KiB before it as a preset dictionary — and still emit the original's bits.
 * zlib starts a new block whenever its symbol buffer fills, so a restart at a block boundary sees the
 * same window and the same block phase; it reproduces the stream at most boundaries (not all: the
 * matcher's state can differ), so every checkpoint is proved at delta time. With checkpoints a
 * rebuild can deflate the pieces on several cores and splice their bits
 * (docs/decisions/0016-native-deflate-engine.md). A decoder that ignores them deflates the whole
 * stream in one go and gets the same bytes.
 */
import { check } from '../errors.ts'
import { blockBoundaries } from './block-boundaries.ts'
import { type DeflateEngine, type DeflateStream, engineFor, pakoEngine } from './deflate-engine.ts'
import { type DeflateParams, searchCostOfLevel } from './recompress.ts'

/** A restart point: input offset in the stream's raw bytes, and the bit offset of its block. */
export interface Checkpoint {
  raw: number
  bit: number
}

/** How much of the preceding input a restart gets as its dictionary (deflate's whole window). */
export const DICTIONARY_BYTES = 32 * 1024
/** Input a restarted piece reads past its end, so matching near the end sees what the original saw. */
export const PIECE_SLACK = 4 * 1024
/**
 * Streams that deflate faster than this much content at level 9 are rebuilt in one piece: splitting
 * would not pay for the set-up, nor for the extra deflate that proves the pieces at delta creation.
 */
export const CHECKPOINT_MIN_RAW = 2 * 1024 * 1024

/**
 * Whether a stream is dear enough to rebuild to be split at checkpoints: at least CHECKPOINT_MIN_RAW of
 * level-9 work (a level-6 stream, a third as dear per byte, from about 5.5 MB).
 */
export function checkpointsPay(rawLength: number, level: number): boolean {
  return rawLength * searchCostOfLevel(level) >= CHECKPOINT_MIN_RAW
}

/** Aim for about this many pieces: enough for the cores of a device, few enough to stay cheap. */
const TARGET_PIECES = 8

/** Bit `i` of a deflate byte stream (deflate packs bits least significant first). */
function bitAt(bytes: Uint8Array, i: number): number {
  return (bytes[i >>> 3]! >>> (i & 7)) & 1
}

/** The byte of `bytes` that starts at bit offset `bit` (bits past the end read as 0). */
function byteAtBit(bytes: Uint8Array, bit: number): number {
  const k = bit >>> 3
  const s = bit & 7
  const lo = bytes[k] ?? 0
  return s === 0 ? lo : ((lo >>> s) | ((bytes[k + 1] ?? 0) << (8 - s))) & 0xff
}

/** Whether `piece`'s first `bits` bits equal `stream`'s bits from `at`. */
export function bitsMatch(stream: Uint8Array, at: number, piece: Uint8Array, bits: number): boolean {
  if (bits > piece.length * 8 || at + bits > stream.length * 8) return false
  const whole = bits >>> 3
  for (let i = 0; i < whole; i++) if (byteAtBit(stream, at + i * 8) !== piece[i]) return false
  for (let i = whole * 8; i < bits; i++) if (bitAt(stream, at + i) !== bitAt(piece, i)) return false
  return true
}

/**
 * Whether `piece` (a restarted deflate run to the end) equals `stream` from bit `at` to its end. Both end
 * with zero bits padding their last byte, and where the piece starts mid-byte the two paddings differ in
 * length, so the shorter side's missing bits must be that padding.
 */
export function endsTheStream(stream: Uint8Array, at: number, piece: Uint8Array): boolean {
  const bits = stream.length * 8 - at
  const have = piece.length * 8
  if (Math.abs(have - bits) >= 8 || !bitsMatch(stream, at, piece, Math.min(bits, have))) return false
  for (let i = have; i < bits; i++) if (bitAt(stream, at + i)) return false
  for (let i = bits; i < have; i++) if (bitAt(piece, i)) return false
  return true
}

/** Appends bit strings into bytes: what a checkpointed rebuild uses to splice its pieces. */
export class BitSplicer {
  private readonly out: Uint8Array
  private bit = 0

  constructor(totalBytes: number) {
    this.out = new Uint8Array(totalBytes)
  }

  /** Appends the first `bits` bits of `piece`; throws RangeError past the declared total. */
  append(piece: Uint8Array, bits: number): void {
    if (bits > piece.length * 8 || this.bit + bits > this.out.length * 8)
      throw new RangeError('splice overflow')
    const s = this.bit & 7
    let k = this.bit >>> 3
    const whole = bits >>> 3
    if (s === 0) {
      this.out.set(piece.subarray(0, whole), k)
      k += whole
    } else {
      for (let i = 0; i < whole; i++) {
        const b = piece[i]!
        this.out[k] = this.out[k]! | ((b << s) & 0xff)
        k++
        this.out[k] = b >>> (8 - s)
      }
    }
    this.bit += whole * 8
    for (let i = whole * 8; i < bits; i++) {
      if (bitAt(piece, i)) this.out[this.bit >>> 3]! |= 1 << (this.bit & 7)
      this.bit++
    }
  }

  get bits(): number {
    return this.bit
  }

  bytes(): Uint8Array {
    return this.out
  }
}

/** The input a restart at `from` needs: its dictionary and its bytes (with slack), as views of `raw`. */
export function pieceInput(
  raw: Uint8Array,
  from: number,
  to: number,
): { dictionary: Uint8Array; input: Uint8Array } {
  return {
    dictionary: raw.subarray(Math.max(0, from - DICTIONARY_BYTES), from),
    input: raw.subarray(from, to >= raw.length ? raw.length : Math.min(raw.length, to + PIECE_SLACK)),
  }
}

/** One proof a checkpoint search needs: the piece restarted at `from` reproduces the stream up to `to`. */
interface PieceProof {
  from: Checkpoint
  to: Checkpoint | null
}

/** Block boundaries about `spacing` apart, the restart points worth proving for a stream this size. */
function checkpointCandidates(raw: Uint8Array, compressed: Uint8Array): Checkpoint[] {
  const spacing = Math.max(CHECKPOINT_MIN_RAW / 2, Math.ceil(raw.length / TARGET_PIECES))
  const candidates: Checkpoint[] = []
  for (const b of blockBoundaries(compressed, raw.length)) {
    const last = candidates.at(-1)?.raw ?? 0
    if (b.raw - last >= spacing && raw.length - b.raw >= spacing / 2) candidates.push(b)
  }
  return candidates
}

/**
 * The search for one stream, written once for both drivers as a coroutine: it yields the proofs it
 * needs — first every piece at once (about one deflate of the stream, which an asynchronous engine runs
 * in parallel), then single repairs — and is sent back whether each held. A failed piece gets one
 * repair: first as if its end were the bad restart point (it absorbs the next piece), then as if its
 * start were (the previous piece absorbs it). Pieces that fail both leave the stream without
 * checkpoints, which only costs parallelism, and keep the search within about two deflates.
 */
function* checkpointSearch(candidates: Checkpoint[]): Generator<PieceProof[], Checkpoint[], boolean[]> {
  const starts: Checkpoint[] = [{ raw: 0, bit: 0 }, ...candidates]
  const good = yield starts.map((from, j) => ({ from, to: starts[j + 1] ?? null }))
  const holds = function* (
    from: Checkpoint,
    to: Checkpoint | null,
  ): Generator<PieceProof[], boolean, boolean[]> {
    const answer = yield [{ from, to }]
    return answer[0] === true
  }
  const kept: Checkpoint[] = [{ raw: 0, bit: 0 }]
  for (let j = 0; j < starts.length; ) {
    if (good[j]) {
      if (j > 0) kept.push(starts[j]!)
      j++
    } else if (j + 2 <= starts.length && (yield* holds(starts[j]!, starts[j + 2] ?? null))) {
      if (j > 0) kept.push(starts[j]!)
      j += 2
    } else if (j > 0 && (yield* holds(kept.at(-1)!, starts[j + 1] ?? null))) {
      j++
    } else return []
  }
  return kept.slice(1)
}

/** Whether a restarted piece's output is the stream's bits from its checkpoint up to the next. */
function pieceHolds(compressed: Uint8Array, proof: PieceProof, out: Uint8Array): boolean {
  return proof.to
    ? bitsMatch(compressed, proof.from.bit, out, proof.to.bit - proof.from.bit)
    : endsTheStream(compressed, proof.from.bit, out)
}

const eligible = (raw: Uint8Array, params: DeflateParams, engine: DeflateEngine | undefined) =>
  checkpointsPay(raw.length, params.level) && engine?.handles(params) === true

/**
 * Checkpoints for one stream that `engine` proves: each piece, restarted at its checkpoint, gives
 * exactly the original's bits up to the next one (the last piece to the end). Returns [] when the
 * engine cannot restart streams, the stream is small, or pieces failed beyond repair. Costs about
 * one deflate of the stream, at most about two.
 */
export function findCheckpoints(
  raw: Uint8Array,
  compressed: Uint8Array,
  params: DeflateParams,
  engine: DeflateEngine | undefined,
): Checkpoint[] {
  const resume = engine?.deflateResumedSync?.bind(engine)
  if (!resume || !eligible(raw, params, engine)) return []
  const search = checkpointSearch(checkpointCandidates(raw, compressed))
  const prove = (proof: PieceProof) => {
    const { dictionary, input } = pieceInput(raw, proof.from.raw, proof.to ? proof.to.raw : raw.length)
    return pieceHolds(compressed, proof, resume(input, params, dictionary))
  }
  let step = search.next([])
  while (!step.done) step = search.next(step.value.map(prove))
  return step.value
}

/** findCheckpoints on the engine's asynchronous restarts: the first round of pieces deflates in parallel. */
export async function findCheckpointsAsync(
  raw: Uint8Array,
  compressed: Uint8Array,
  params: DeflateParams,
  engine: DeflateEngine | undefined,
): Promise<Checkpoint[]> {
  const resume = engine?.deflateResumed?.bind(engine)
  if (!resume || !eligible(raw, params, engine)) return []
  const search = checkpointSearch(checkpointCandidates(raw, compressed))
  const prove = async (proof: PieceProof) => {
    const { dictionary, input } = pieceInput(raw, proof.from.raw, proof.to ? proof.to.raw : raw.length)
    return pieceHolds(compressed, proof, await resume(input, params, dictionary))
  }
  let step = search.next([])
  while (!step.done) step = search.next(await Promise.all(step.value.map(prove)))
  return step.value
}

/** An engine's async restart (DeflateEngine.deflateResumed). */
type Resume = (input: Uint8Array, params: DeflateParams, dictionary: Uint8Array) => Promise<Uint8Array>

/**
 * Rebuilds one checkpointed stream in pieces: input is gathered as it arrives, each piece is handed to
 * the engine's async restart as soon as its bytes (and slack) are in, so pieces deflate in parallel
 * with each other and with the delta decoding that feeds them; `finish` splices their bits in order.
 * Holds the stream's raw bytes as they arrive (bounded by the container limits) and its output.
 */
export class PiecewiseDeflate implements DeflateStream {
  /** Grown as input arrives (never past rawLength), so a hostile size claim costs nothing up front. */
  private raw: Uint8Array
  private readonly rawLength: number
  private readonly starts: Checkpoint[]
  private readonly pieces: Promise<Uint8Array>[] = []
  private filled = 0
  private readonly resume: Resume
  private readonly params: DeflateParams
  private readonly compressedLength: number

  constructor(
    resume: Resume,
    params: DeflateParams,
    rawLength: number,
    compressedLength: number,
    checkpoints: readonly Checkpoint[],
  ) {
    this.resume = resume
    this.params = params
    this.compressedLength = compressedLength
    this.rawLength = rawLength
    this.raw = new Uint8Array(Math.min(rawLength, 1 << 20))
    this.starts = [{ raw: 0, bit: 0 }, ...checkpoints]
  }

  async push(bytes: Uint8Array): Promise<readonly Uint8Array[]> {
    const end = this.filled + bytes.length
    check(end <= this.rawLength, 'archive-mismatch', 'inner delta produced more than the stream')
    if (end > this.raw.length) {
      // Pieces already handed to the engine keep their views of the old buffer alive; new ones read
      // the new buffer, which holds the same bytes.
      const grown = new Uint8Array(Math.min(this.rawLength, Math.max(end, this.raw.length * 2)))
      grown.set(this.raw.subarray(0, this.filled))
      this.raw = grown
    }
    this.raw.set(bytes, this.filled)
    this.filled += bytes.length
    this.launchReady()
    return []
  }

  async finish(): Promise<readonly Uint8Array[]> {
    check(this.filled === this.rawLength, 'archive-mismatch', 'inner delta ended inside a deflate stream')
    this.launchReady()
    const outs = await Promise.all(this.pieces)
    const splicer = new BitSplicer(this.compressedLength)
    const totalBits = this.compressedLength * 8
    for (const [j, piece] of outs.entries()) {
      const next = this.starts[j + 1]
      const bits = (next?.bit ?? totalBits) - this.starts[j]!.bit
      // The last piece ends the stream; its padding and the stream's may differ by a few zero bits
      // (the splice buffer starts zeroed, so the stream's padding needs no bits of its own).
      const fits = next ? piece.length * 8 >= bits : Math.abs(piece.length * 8 - bits) < 8
      check(fits, 'archive-mismatch', 'a rebuilt piece does not fit its checkpoints')
      splicer.append(piece, Math.min(bits, piece.length * 8))
    }
    return [splicer.bytes()]
  }

  private launchReady(): void {
    while (this.pieces.length < this.starts.length) {
      const j = this.pieces.length
      const to = this.starts[j + 1]
      const needed = to ? Math.min(this.rawLength, to.raw + PIECE_SLACK) : this.rawLength
      if (this.filled < needed) return
      const filled = this.raw.subarray(0, this.filled)
      const { dictionary, input } = pieceInput(filled, this.starts[j]!.raw, to ? to.raw : this.rawLength)
      const piece = this.resume(input, this.params, dictionary)
      // Handled here so a failing piece cannot become an unhandled rejection before finish awaits it.
      piece.catch(() => undefined)
      this.pieces.push(piece)
    }
  }
}

/** The deflate stream a rebuild uses for one segment: in pieces when it has checkpoints and the engine can. */
export function openSegmentDeflate(
  preferred: DeflateEngine | undefined,
  segment: { rawLength: number; compressedLength: number; params: DeflateParams; checkpoints?: Checkpoint[] },
): DeflateStream {
  const engine = engineFor(preferred, segment.params, segment.rawLength)
  const resumed = engine.deflateResumed?.bind(engine)
  if (resumed && engine !== pakoEngine && (segment.checkpoints?.length ?? 0) > 0) {
    return new PiecewiseDeflate(
      resumed,
      segment.params,
      segment.rawLength,
      segment.compressedLength,
      segment.checkpoints ?? [],
    )
  }
  return engine.open(segment.params)
}
