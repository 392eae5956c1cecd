/**
 * Inflates one stream into a buffer of exactly the size the block header promised. The buffer is the
 * inflater's own, reused block after block, and decoding stops with an error the moment the stream
 * would write past it, so hostile input can never cost more than the declared output in CPU or memory.
 * The decoder is raw-inflate.ts (pure JS, so it runs the same in Node and workerd); a host may lend a
 * faster one (Node's zlib, through the agent's DeflateEngine), held to the same contract.
 */
import { check, DeltaFormatError } from '../errors.ts'
import { inflateRawInto } from './raw-inflate.ts'

export interface Inflated {
  data: Uint8Array
  /** Bytes of compressed input the deflate stream occupied. */
  consumed: number
}

/** Whoever can lend a raw inflate: DeflateEngine (archive/deflate-engine.ts) is one. */
export interface InflateHost {
  /**
   * Optional faster inflate of the raw deflate stream at the start of `input`: the data and how many
   * input bytes the stream took. Must throw (anything) on damage or when output would pass `maxOutput`.
   */
  inflateRaw?(input: Uint8Array, maxOutput: number): Inflated
}

/** Streams shorter than this inflate in microseconds here; a native call is not worth it. */
const HOST_MIN_INPUT = 4096

/** A raw-DEFLATE decoder plus a growable output buffer, reused for every stream of a decode. */
export class ExactInflater {
  private buf: Uint8Array<ArrayBuffer> = new Uint8Array(0)
  private readonly host: InflateHost | undefined

  constructor(host?: InflateHost) {
    this.host = host
  }

  /**
   * Returns a view of exactly `rawLength` inflated bytes. The view is only valid until the next call
   * on this inflater (callers use one inflater per stream kind).
   */
  inflate(compressed: Uint8Array, rawLength: number, what: string): Uint8Array {
    if (rawLength === 0) {
      check(compressed.length === 0, 'bad-stream', `${what} stream has bytes but nothing to inflate`)
      return this.buf.subarray(0, 0)
    }
    if (this.host?.inflateRaw && compressed.length >= HOST_MIN_INPUT) {
      return this.inflateByHost(this.host.inflateRaw.bind(this.host), compressed, rawLength, what)
    }
    if (this.buf.length < rawLength) this.buf = new Uint8Array(Math.max(rawLength, this.buf.length * 2))
    const out = this.buf.subarray(0, rawLength)
    inflateRawInto(compressed, out, what)
    return out
  }

  /** The host's inflate, held to inflateRawInto's contract: exactly rawLength bytes, all input used. */
  private inflateByHost(
    inflateRaw: NonNullable<InflateHost['inflateRaw']>,
    compressed: Uint8Array,
    rawLength: number,
    what: string,
  ): Uint8Array {
    let out: Inflated
    try {
      out = inflateRaw(compressed, rawLength)
    } catch (err) {
      throw new DeltaFormatError('bad-stream', `${what} stream: bad, truncated or oversized DEFLATE (${err})`)
    }
    check(out.consumed === compressed.length, 'bad-stream', `${what} stream has bytes after its end`)
    check(
      out.data.length === rawLength,
      'bad-stream',
      `${what} stream inflates to ${out.data.length}, expected ${rawLength}`,
    )
    return out.data
  }
}

/** One-shot form for callers without an inflater to reuse; returns a fresh array. */
export function inflateExact(compressed: Uint8Array, rawLength: number, what: string): Uint8Array {
  return new ExactInflater().inflate(compressed, rawLength, what).slice()
}
