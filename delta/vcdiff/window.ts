import { check, DeltaFormatError } from '../errors.ts'
import type { AddressCache } from './address-cache.ts'
import { adler32 } from './adler32.ts'
import type { CodeTable } from './code-table.ts'
import { ADD, COPY, NOOP, RUN } from './code-table.ts'
import { E } from './errors.ts'
import type { WindowHeader } from './header.ts'
import { VCD_ADLER32 } from './header.ts'
import type { ResolvedLimits } from './limits.ts'
import type { Cursor } from './varint.ts'
import { cursor, readByte, readVarint } from './varint.ts'

/**
 * Instructions are decoded in fixed-size batches: the streaming driver needs to see which source
 * ranges a run of COPYs touches before executing them, and batching keeps that bookkeeping at a
 * constant size however many (possibly tiny, possibly hostile) instructions a window holds.
 */
const BATCH = 16384
/** Longest RFC 3284 integer accepted (as in varint.ts: 8 groups already exceed 2^53). */
const MAX_VARINT_GROUPS = 8

export class OpBatch {
  count = 0
  /** Target offset (within the window) where this batch starts writing. */
  start = 0
  readonly types = new Uint8Array(BATCH)
  readonly sizes = new Int32Array(BATCH)
  /** COPY: address in source+target space; ADD/RUN: offset into the data section. */
  readonly addrs = new Float64Array(BATCH)
}

/**
 * Decodes one window body (the bytes after the delta encoding length) batch by batch, validating
 * as it goes: every size fits the declared target length, every address precedes "here", and
 * finish() checks that every section was consumed exactly.
 */
export class WindowParser {
  targetLength = 0
  sourceLength = 0
  checksum: number | undefined
  data: Uint8Array = new Uint8Array(0)
  private body: Uint8Array = new Uint8Array(0)
  private inst: Cursor = cursor(new Uint8Array(0))
  private addr: Cursor = cursor(new Uint8Array(0))
  private table: CodeTable | undefined
  private cache: AddressCache | undefined
  private pos = 0
  private dataPos = 0

  /** Reads the window's section lengths; `remainingTarget` is what maxTargetSize still allows. */
  begin(
    h: WindowHeader,
    body: Uint8Array,
    table: CodeTable,
    cache: AddressCache,
    limits: ResolvedLimits,
    remainingTarget: number,
  ): void {
    const c = cursor(body)
    const targetLength = readVarint(c, 'target window length')
    check(
      targetLength <= limits.maxWindowSize,
      E.limit,
      `vcdiff: target window of ${targetLength} bytes exceeds maxWindowSize`,
    )
    check(targetLength <= remainingTarget, E.limit, 'vcdiff: output would exceed maxTargetSize')
    const deltaIndicator = readByte(c, 'delta indicator')
    check(deltaIndicator === 0, E.unsupported, 'vcdiff: secondary-compressed sections are not supported')
    const dataLength = readVarint(c, 'data section length')
    const instLength = readVarint(c, 'instruction section length')
    const addrLength = readVarint(c, 'address section length')
    this.checksum = undefined
    if (h.indicator & VCD_ADLER32) {
      check(c.end - c.pos >= 4, E.truncated, 'vcdiff: input ends inside window checksum')
      const b = c.buf
      this.checksum = ((b[c.pos]! << 24) | (b[c.pos + 1]! << 16) | (b[c.pos + 2]! << 8) | b[c.pos + 3]!) >>> 0
      c.pos += 4
    }
    check(
      c.pos + dataLength + instLength + addrLength === body.length,
      E.window,
      'vcdiff: section lengths do not add up to the delta encoding length',
    )
    const dataStart = c.pos
    this.body = body
    this.data = body.subarray(dataStart, dataStart + dataLength)
    this.inst = cursor(body, dataStart + dataLength, dataStart + dataLength + instLength)
    this.addr = cursor(body, this.inst.end, this.inst.end + addrLength)
    this.targetLength = targetLength
    this.sourceLength = h.sourceLength
    this.table = table
    this.cache = cache
    this.pos = 0
    this.dataPos = 0
    cache.reset()
  }

  done(): boolean {
    return this.inst.pos >= this.inst.end
  }

  /**
   * Decodes instructions into `out` until it is nearly full or the section ends. Written for the
   * common case (one-byte sizes, in-bounds instructions) with the checks as plain ifs and the cursor
   * in locals: this runs once per instruction, several hundred thousand times per window, and most
   * of that before V8 has optimised it.
   */
  next(out: OpBatch): void {
    const table = this.table!
    const cache = this.cache!
    const { type1, type2, size1, size2, mode1, mode2 } = table
    const inst = this.inst
    const addr = this.addr
    const body = this.body
    const targetLength = this.targetLength
    const dataLength = this.data.length
    const srcLen = this.sourceLength
    const { types, sizes, addrs } = out
    const iend = inst.end
    let ip = inst.pos
    let pos = this.pos
    let dataPos = this.dataPos
    let n = 0
    out.start = pos
    // Each opcode yields at most two instructions, so stop while two slots remain.
    while (ip < iend && n <= BATCH - 2) {
      const code = body[ip++]!
      for (let half = 0; half < 2; half++) {
        const type = half === 0 ? type1[code]! : type2[code]!
        if (type === NOOP) continue
        let size = half === 0 ? size1[code]! : size2[code]!
        if (size === 0) {
          // An RFC 3284 integer (varint.ts's rules), read inline. One-byte and longer sizes run
          // the same operations, so V8 never meets one here without type feedback (which
          // deoptimises the loop, again and again while it runs from on-stack replacement).
          let byte = 0x80
          let groups = 0
          while (groups < MAX_VARINT_GROUPS && byte >= 0x80) {
            if (ip >= iend)
              throw new DeltaFormatError(E.truncated, 'vcdiff: input ends inside instruction size')
            byte = body[ip++]!
            size = size * 128 + (byte & 0x7f)
            groups++
          }
          if (byte >= 0x80 || size > Number.MAX_SAFE_INTEGER) {
            throw new DeltaFormatError(E.varint, 'vcdiff: instruction size is not a valid 53-bit integer')
          }
        }
        if (size > targetLength - pos) {
          throw new DeltaFormatError(E.instruction, 'vcdiff: instruction overruns the target window')
        }
        let a: number
        if (type !== COPY) {
          // ADD takes `size` data bytes, RUN one (shared code, for the same reason as above).
          const need = type === ADD ? size : 1
          if (need > dataLength - dataPos) {
            const what = type === ADD ? 'ADD' : 'RUN'
            throw new DeltaFormatError(E.truncated, `vcdiff: ${what} overruns the data section`)
          }
          a = dataPos
          dataPos += need
        } else {
          a = cache.decode(addr, half === 0 ? mode1[code]! : mode2[code]!, srcLen + pos)
        }
        // Empty instructions are legal but produce nothing; not storing them keeps a batch's
        // instruction count within its output size.
        if (size === 0) continue
        types[n] = type
        sizes[n] = size
        addrs[n] = a
        n++
        pos += size
      }
    }
    inst.pos = ip
    out.count = n
    this.pos = pos
    this.dataPos = dataPos
  }

  /** Checks that the instructions produced the declared length and consumed every section. */
  finish(): void {
    check(
      this.pos === this.targetLength,
      E.window,
      `vcdiff: window produced ${this.pos} bytes, declared ${this.targetLength}`,
    )
    check(this.dataPos === this.data.length, E.window, 'vcdiff: data section has unused bytes')
    check(this.addr.pos === this.addr.end, E.window, 'vcdiff: address section has unused bytes')
  }
}

/** Copies `len` bytes at `offset` of the window's source segment into `dst` at `at`. */
export interface SegmentReader {
  copy(offset: number, len: number, dst: Uint8Array, at: number): void
}

/**
 * Runs instructions [first, end) of a batch into `target` (the whole window's buffer); `pos` is where
 * instruction `first` writes. Returns where the next instruction writes.
 */
export function executeBatch(
  b: OpBatch,
  data: Uint8Array,
  srcLen: number,
  segment: SegmentReader,
  target: Uint8Array,
  first = 0,
  end = b.count,
  pos = b.start,
): number {
  const { types, sizes, addrs } = b
  for (let i = first; i < end; i++) {
    const size = sizes[i]!
    const a = addrs[i]!
    const type = types[i]!
    if (type === ADD) {
      if (size < 32) for (let k = 0; k < size; k++) target[pos + k] = data[a + k]!
      else target.set(data.subarray(a, a + size), pos)
    } else if (type === RUN) {
      target.fill(data[a]!, pos, pos + size)
    } else {
      let n = size
      let from = a
      let to = pos
      if (from < srcLen) {
        // A COPY may start in the source segment and run on into the target window (RFC 3284 5.3).
        const k = Math.min(n, srcLen - from)
        segment.copy(from, k, target, to)
        from += k
        to += k
        n -= k
      }
      if (n > 0) {
        const t = from - srcLen
        if (t + n <= to && n >= 64) target.copyWithin(to, t, t + n)
        // Overlapping self-copies replicate a pattern, so they must go byte by byte.
        else for (let k = 0; k < n; k++) target[to + k] = target[t + k]!
      }
    }
    pos += size
  }
  return pos
}

/** Verifies xdelta3's adler32 extension when the window carries one. */
export function verifyChecksum(expected: number | undefined, target: Uint8Array): void {
  if (expected === undefined) return
  const actual = adler32(target)
  check(
    actual === expected,
    E.checksum,
    `vcdiff: window adler32 mismatch (expected ${expected.toString(16)}, got ${actual.toString(16)})`,
  )
}
