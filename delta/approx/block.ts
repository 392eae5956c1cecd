/**
 * Decoding one block's three inflated streams into validated copy/literal pieces, and replaying them.
 * Validation happens before output leaves the decoder (controls while decoding, the sparse diff
 * while replaying into the caller's buffer), so a bad block never emits partial garbage.
 *
 * Replay copies each source range with `set` (a memcpy) and then patches only the diff's nonzero bytes
 * straight from the sparse stream, instead of expanding the diff and adding it byte by byte: on
 * executables ≈95% of copied bytes have a zero diff, so this is most of the apply time saved.
 */
import { check, DeltaFormatError } from '../errors.ts'
import { ByteReader } from './bytes.ts'
import { type BlockHeader, copyBytes, maxPieces } from './format.ts'
import { ExactInflater, type InflateHost } from './inflate.ts'

/** Seeks may wander but never this far: keeps positions exact and comfortably inside a double. */
const MAX_ABS_POSITION = 2 ** 47

export interface DecodedBlock {
  /** Flat triples: copyLen, extraLen, srcPos (srcPos meaningful only when copyLen > 0). */
  pieces: number[]
  /** The sparse diff stream as sent: (gap varint, nonzero byte) pairs, already validated. */
  sparse: Uint8Array
  extra: Uint8Array
}

/** One inflater per stream kind: a decoded block's streams stay valid until the next block is decoded. */
export interface BlockInflaters {
  ctrl: ExactInflater
  diff: ExactInflater
  extra: ExactInflater
}

/** `host` may lend a faster raw inflate (inflate.ts). */
export function blockInflaters(host?: InflateHost): BlockInflaters {
  return { ctrl: new ExactInflater(host), diff: new ExactInflater(host), extra: new ExactInflater(host) }
}

/** The returned streams are views into `inflaters`' buffers: use the block before decoding the next. */
export function decodeBlock(
  b: BlockHeader,
  payload: Uint8Array,
  sourceLength: number,
  inflaters: BlockInflaters = blockInflaters(),
): DecodedBlock {
  let at = 0
  const take = (n: number) => {
    at += n
    return payload.subarray(at - n, at)
  }
  const ctrl = inflaters.ctrl.inflate(take(b.ctrlComp), b.ctrlRaw, 'control')
  // Validated as replayBlock consumes it.
  const sparse = inflaters.diff.inflate(take(b.diffComp), b.diffRaw, 'diff')
  const extra = inflaters.extra.inflate(take(b.extraComp), b.extraRaw, 'extra')

  const r = new ByteReader(ctrl)
  const pieces: number[] = []
  const copyTotal = copyBytes(b)
  const pieceLimit = 3 * maxPieces(b.targetBytes)
  let pos = r.svarint()
  let copied = 0
  let literal = 0
  while (r.remaining > 0) {
    const copyLen = r.varint()
    const extraLen = r.varint()
    const seek = r.svarint()
    check(copyLen + extraLen > 0, 'bad-control', 'control produces no bytes')
    check(pieces.length < pieceLimit, 'bad-control', 'block holds more pieces than the format allows')
    check(copyLen <= copyTotal - copied, 'bad-control', 'controls copy more than the diff stream holds')
    check(extraLen <= b.extraRaw - literal, 'bad-control', 'controls take more than the extra stream holds')
    if (copyLen > 0) {
      check(pos >= 0 && pos + copyLen <= sourceLength, 'bad-control', 'copy reaches outside the source')
    }
    pieces.push(copyLen, extraLen, pos)
    copied += copyLen
    literal += extraLen
    pos += copyLen + seek
    check(Math.abs(pos) <= MAX_ABS_POSITION, 'bad-control', 'seek leaves the addressable range')
  }
  check(copied === copyTotal && literal === b.extraRaw, 'bad-control', 'controls do not consume the streams')
  return { pieces, sparse, extra }
}

/** Copies source[pos, pos + len) into dst at `at` (from memory, or from pages a stream decoder read). */
export type CopySource = (pos: number, len: number, dst: Uint8Array, at: number) => void

/**
 * Replays a block into `out` at `outAt`. The diff is added with the carry rule of arith.ts: carries
 * start fresh at every piece and only cross bytes that changed, so a zero diff byte with no carry
 * pending leaves the copied byte alone.
 *
 * The diff stream is sparse on the wire: (gap varint, nonzero byte) pairs, where gap counts the zero
 * bytes skipped (mostly-zero diffs deflate ~15% smaller this way than as raw bytes). It is validated
 * here, as it is consumed, rather than in a pass of its own: a bad entry throws before the caller
 * hands `out` to anyone, and on executables this loop visits a few hundred thousand entries per
 * block, so one pass instead of two matters. Every index stays inside the current piece whatever the
 * stream says.
 */
export function replayBlock(
  block: DecodedBlock,
  copySource: CopySource,
  out: Uint8Array,
  outAt: number,
): void {
  const { pieces, extra } = block
  let copyTotal = 0
  for (let i = 0; i < pieces.length; i += 3) copyTotal += pieces[i]!
  const diff = new SparseDiff(block.sparse, copyTotal)
  let d = 0
  let e = 0
  for (let i = 0; i < pieces.length; i += 3) {
    const copyLen = pieces[i]!
    const extraLen = pieces[i + 1]!
    if (copyLen > 0) {
      copySource(pieces[i + 2]!, copyLen, out, outAt)
      const dEnd = d + copyLen
      if (diff.next < dEnd) patchPiece(out, diff, outAt - d, dEnd, outAt, outAt + copyLen)
      d = dEnd
      outAt += copyLen
    }
    if (extraLen > 0) {
      out.set(extra.subarray(e, e + extraLen), outAt)
      e += extraLen
      outAt += extraLen
    }
  }
  // Pieces consume exactly the block's copy bytes, so an entry still pending lies beyond them.
  if (!diff.exhausted) {
    throw new DeltaFormatError('bad-diff', 'diff entry lands past the copied bytes')
  }
}

/** Reads the sparse diff entry by entry, validating as it goes. */
class SparseDiff {
  readonly sparse: Uint8Array
  /** The block's copy bytes: `next` once the stream is exhausted, past every piece. */
  private readonly end: number
  r = 0
  /**
   * d-space index of the next nonzero diff byte. Kept a small integer (no Infinity sentinel): V8's
   * unoptimised code allocates a heap number for every read of a field holding a double.
   */
  next = -1
  value = 0
  exhausted = false

  constructor(sparse: Uint8Array, end: number) {
    this.sparse = sparse
    this.end = end
    // The first gap counts from d-space index 0, as if an entry had ended at -1.
    this.advance()
  }

  advance(): void {
    const sparse = this.sparse
    let r = this.r
    if (r >= sparse.length) {
      this.next = this.end
      this.exhausted = true
      return
    }
    let gap = sparse[r]!
    if (gap < 0x80) r++
    else {
      gap = readGap(sparse, r)
      r = gapEnd
    }
    this.next += 1 + gap
    this.value = readValue(sparse, r)
    this.r = r + 1
  }
}

/**
 * Adds the diff entries that fall in one copy piece to its bytes, which are already in `out`: d-space
 * index x is out[base + x], the piece ends at d-space `dEnd` (out index `end`), and it starts at out
 * index `j`. Kept apart from replayBlock so V8 optimises this small hot loop early and whole. The
 * carry ripple before the piece's end shares the loop of the ripple before each entry: a separate
 * trailing loop runs rarely enough to lack type feedback when V8 optimises, and on the esbuild
 * binary each first use of it deoptimised the function again (hundreds of times per block).
 */
function patchPiece(out: Uint8Array, diff: SparseDiff, base: number, dEnd: number, j: number, end: number) {
  let carry = 0
  for (;;) {
    const more = diff.next < dEnd
    const k = more ? base + diff.next : end
    // A pending carry ripples through zero-diff bytes only while they are 0xff.
    while (carry !== 0 && j < k) {
      const sb = out[j]!
      out[j] = (sb + 1) & 0xff
      carry = sb === 0xff ? 1 : 0
      j++
    }
    if (!more) return
    const sb = out[k]!
    const sum = sb + diff.value + carry
    const tb = sum & 0xff
    out[k] = tb
    carry = tb !== sb && sum > 0xff ? 1 : 0
    j = k + 1
    diff.advance()
  }
}

/** Where the varint readGap last read ended (a second return value, without allocating). */
let gapEnd = 0

/**
 * A gap varint starting at `r` (at most 7 bytes, like every varint in the container); sets gapEnd.
 * Only gaps of 128 or more come here: SparseDiff reads one-byte gaps itself.
 */
function readGap(sparse: Uint8Array, r: number): number {
  let gap = 0
  let scale = 1
  for (let i = 0; ; i++) {
    if (i === 7 || r >= sparse.length) {
      throw new DeltaFormatError('bad-diff', 'bad or truncated gap varint in the diff')
    }
    const byte = sparse[r++]!
    gap += (byte & 0x7f) * scale
    if (byte < 0x80) {
      gapEnd = r
      return gap
    }
    scale *= 0x80
  }
}

function readValue(sparse: Uint8Array, r: number): number {
  if (r >= sparse.length) throw new DeltaFormatError('truncated', 'diff entry has no value byte')
  const v = sparse[r]!
  if (v === 0) throw new DeltaFormatError('bad-diff', 'sparse diff entries must be nonzero')
  return v
}
