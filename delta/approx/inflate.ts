/**
 * Inflates one stream into a buffer of exactly the size the block header promised. The buffer is the
 * inflater's own, reused block after block, and decoding stops with an error the moment the stream
 * would write past it, so hostile input can never cost more than the declared output in CPU or memory.
 * The decoder is raw-inflate.ts (pure JS, so it runs the same in Node and workerd).
 */
import { check } from '../errors.ts'
import { inflateRawInto } from './raw-inflate.ts'

/** A raw-DEFLATE decoder plus a growable output buffer, reused for every stream of a decode. */
export class ExactInflater {
  private buf: Uint8Array<ArrayBuffer> = new Uint8Array(0)

  /**
   * Returns a view of exactly `rawLength` inflated bytes. The view is only valid until the next call
   * on this inflater (callers use one inflater per stream kind).
   */
  inflate(compressed: Uint8Array, rawLength: number, what: string): Uint8Array {
    if (rawLength === 0) {
      check(compressed.length === 0, 'bad-stream', `${what} stream has bytes but nothing to inflate`)
      return this.buf.subarray(0, 0)
    }
    if (this.buf.length < rawLength) this.buf = new Uint8Array(Math.max(rawLength, this.buf.length * 2))
    const out = this.buf.subarray(0, rawLength)
    inflateRawInto(compressed, out, what)
    return out
  }
}

/** One-shot form for callers without an inflater to reuse; returns a fresh array. */
export function inflateExact(compressed: Uint8Array, rawLength: number, what: string): Uint8Array {
  return new ExactInflater().inflate(compressed, rawLength, what).slice()
}
