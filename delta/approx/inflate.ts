/**
 * Inflates one stream into a buffer of exactly the size the block header promised, through pako's
 * low-level zlib API: the output buffer is the caller's (reused block after block; fflate's streaming
 * Inflate, used before, allocated fresh output and window copies for every 4 KiB of input), and
 * inflate stops by itself when that buffer is full. One spare byte past the declared size tells "too long" from "exactly right",
 * so hostile input can never cost more than the declared output in CPU or memory.
 */
import {
  Z_BUF_ERROR,
  Z_FINISH,
  Z_OK,
  Z_STREAM_END,
  ZStream,
  zlibInflate,
  zlibInflateInit2,
  zlibInflateReset,
} from 'pako'
import { check, DeltaFormatError } from '../errors.ts'

/** A raw-DEFLATE decoder plus a growable output buffer, reused for every stream of a decode. */
export class ExactInflater {
  private readonly strm = new ZStream()
  private buf: Uint8Array<ArrayBuffer> = new Uint8Array(0)
  private started = false

  /**
   * Returns a view of exactly `rawLength` inflated bytes. The view is only valid until the next call
   * on this inflater (callers use one inflater per stream kind).
   */
  inflate(compressed: Uint8Array, rawLength: number, what: string): Uint8Array {
    if (rawLength === 0) {
      check(compressed.length === 0, 'bad-stream', `${what} stream has bytes but nothing to inflate`)
      return this.buf.subarray(0, 0)
    }
    if (this.buf.length < rawLength + 1)
      this.buf = new Uint8Array(Math.max(rawLength + 1, this.buf.length * 2))
    const s = this.strm
    if (this.started) zlibInflateReset(s)
    else {
      check(zlibInflateInit2(s, -15) === Z_OK, 'bad-stream', 'cannot start the DEFLATE decoder')
      this.started = true
    }
    s.input = compressed
    s.next_in = 0
    s.avail_in = compressed.length
    s.output = this.buf
    s.next_out = 0
    s.avail_out = rawLength + 1
    let status: number
    try {
      status = zlibInflate(s, Z_FINISH)
    } catch (e) {
      throw new DeltaFormatError('bad-stream', `${what} stream is not valid DEFLATE: ${String(e)}`)
    }
    const written = s.next_out
    check(written <= rawLength, 'bad-stream', `${what} stream inflates past its declared size`)
    check(
      status === Z_STREAM_END,
      'bad-stream',
      status === Z_BUF_ERROR || status === Z_OK
        ? `${what} stream ends early (truncated DEFLATE)`
        : `${what} stream is not valid DEFLATE: ${s.msg || status}`,
    )
    check(s.avail_in === 0, 'bad-stream', `${what} stream has bytes after its end`)
    check(written === rawLength, 'bad-stream', `${what} stream inflates to ${written}, expected ${rawLength}`)
    return this.buf.subarray(0, rawLength)
  }
}

/** One-shot form for callers without an inflater to reuse; returns a fresh array. */
export function inflateExact(compressed: Uint8Array, rawLength: number, what: string): Uint8Array {
  return new ExactInflater().inflate(compressed, rawLength, what).slice()
}
