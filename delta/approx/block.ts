/**
 * Decoding one block's three inflated streams into validated copy/literal pieces, and replaying them.
 * Validation happens entirely before any output is written, so a bad block never emits partial garbage,
 * and the replay loops can trust every index.
 */
import { check } from '../errors.ts'
import { addWithCarry } from './arith.ts'
import { ByteReader } from './bytes.ts'
import { type BlockHeader, copyBytes } from './format.ts'
import { inflateExact } from './inflate.ts'

/** Seeks may wander but never this far: keeps positions exact and comfortably inside a double. */
const MAX_ABS_POSITION = 2 ** 47

export interface DecodedBlock {
  /** Flat triples: copyLen, extraLen, srcPos (srcPos meaningful only when copyLen > 0). */
  pieces: number[]
  diff: Uint8Array
  extra: Uint8Array
}

export function decodeBlock(b: BlockHeader, payload: Uint8Array, sourceLength: number): DecodedBlock {
  let at = 0
  const take = (n: number) => {
    at += n
    return payload.subarray(at - n, at)
  }
  const ctrl = inflateExact(take(b.ctrlComp), b.ctrlRaw, 'control')
  const diff = expandSparseDiff(inflateExact(take(b.diffComp), b.diffRaw, 'diff'), copyBytes(b))
  const extra = inflateExact(take(b.extraComp), b.extraRaw, 'extra')

  const r = new ByteReader(ctrl)
  const pieces: number[] = []
  let pos = r.svarint()
  let copied = 0
  let literal = 0
  while (r.remaining > 0) {
    const copyLen = r.varint()
    const extraLen = r.varint()
    const seek = r.svarint()
    check(copyLen + extraLen > 0, 'bad-control', 'control produces no bytes')
    check(copyLen <= diff.length - copied, 'bad-control', 'controls copy more than the diff stream holds')
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
  check(
    copied === diff.length && literal === b.extraRaw,
    'bad-control',
    'controls do not consume the streams',
  )
  return { pieces, diff, extra }
}

/**
 * The diff stream is sparse on the wire: (gap varint, nonzero byte) pairs, where gap counts the zero
 * bytes skipped. Mostly-zero diffs deflate ~15% smaller this way than as raw bytes.
 */
export function expandSparseDiff(sparse: Uint8Array, length: number): Uint8Array {
  const diff = new Uint8Array(length)
  const r = new ByteReader(sparse)
  let at = 0
  while (r.remaining > 0) {
    at += r.varint()
    check(at < length, 'bad-diff', 'diff entry lands past the copied bytes')
    const v = r.u8()
    check(v !== 0, 'bad-diff', 'sparse diff entries must be nonzero')
    diff[at++] = v
  }
  return diff
}

/**
 * Replays a block into `out` at `outAt`, reading source ranges through `read` (synchronous here; the
 * streaming decoder pre-reads and passes them in via the same shape).
 */
export function replayBlock(
  block: DecodedBlock,
  read: (pos: number, len: number) => Uint8Array,
  out: Uint8Array,
  outAt: number,
): void {
  const { pieces, diff, extra } = block
  let d = 0
  let e = 0
  for (let i = 0; i < pieces.length; i += 3) {
    const copyLen = pieces[i]!
    const extraLen = pieces[i + 1]!
    if (copyLen > 0) {
      addWithCarry(read(pieces[i + 2]!, copyLen), diff, d, out, outAt)
      d += copyLen
      outAt += copyLen
    }
    out.set(extra.subarray(e, e + extraLen), outAt)
    e += extraLen
    outAt += extraLen
  }
}
