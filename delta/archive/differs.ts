/**
 * Inner byte-level differs run over (reference, expanded target). The container records the differ's
 * id, so ids are part of the wire format: never reuse one for a different encoding.
 */
import {
  applyApproxDelta,
  applyApproxDeltaStream,
  createApproxDelta,
  type DeflateHost,
  type InflateHost,
} from '../approx/index.ts'
import type { ByteSink, ByteSource, RandomAccessReader } from '../io.ts'
import type { KnownCopy } from '../known-copies.ts'
import { decodeVcdiff, decodeVcdiffStream, encodeVcdiff } from '../vcdiff/index.ts'

export interface InnerDiffer {
  readonly id: string
  /**
   * `knownCopies`: the target's unchanged entries, for the differ to copy without searching. `host`
   * may lend a faster deflate (the publisher's DeflateEngine, through deflateHostOf).
   */
  create(
    source: Uint8Array,
    target: Uint8Array,
    knownCopies?: readonly KnownCopy[],
    host?: DeflateHost,
  ): Uint8Array
  /**
   * `expectedLength` is what the container promises; differs use it as an output ceiling. `host` may
   * lend a faster raw inflate (the agent's DeflateEngine).
   */
  apply(source: Uint8Array, delta: Uint8Array, expectedLength?: number, host?: InflateHost): Uint8Array
  /** Optional streaming apply: output goes to `sink` in order, so the target is never held whole. */
  applyStream?(
    source: RandomAccessReader,
    delta: ByteSource,
    sink: ByteSink,
    expectedLength?: number,
    host?: InflateHost,
  ): Promise<void>
}

export const vcdiffDiffer: InnerDiffer = {
  id: 'vcdiff',
  create: (source, target, knownCopies) => encodeVcdiff(source, target, knownCopies ? { knownCopies } : {}),
  apply: (source, delta, expectedLength) =>
    decodeVcdiff(source, delta, expectedLength === undefined ? {} : { maxTargetSize: expectedLength }),
  applyStream: (source, delta, sink, expectedLength) =>
    decodeVcdiffStream(
      source,
      delta,
      sink,
      expectedLength === undefined ? {} : { maxTargetSize: expectedLength },
    ),
}

/** bsdiff-class: wins on binaries whose code shifted (executables inside tarballs). */
export const approxDiffer: InnerDiffer = {
  id: 'approx',
  create: (source, target, knownCopies, host) =>
    createApproxDelta(source, target, {
      ...(knownCopies ? { knownCopies } : {}),
      ...(host ? { deflateHost: host } : {}),
    }),
  apply: (source, delta, expectedLength, host) =>
    applyApproxDelta(
      source,
      delta,
      expectedLength === undefined ? {} : { maxTargetSize: expectedLength },
      host,
    ),
  applyStream: (source, delta, sink, expectedLength, host) =>
    applyApproxDeltaStream(
      source,
      delta,
      sink,
      expectedLength === undefined ? {} : { maxTargetSize: expectedLength },
      host,
    ),
}

/** What createArchiveDelta tries (keeping the smallest) and what applyArchiveDelta can decode. */
export const defaultDiffers: readonly InnerDiffer[] = [vcdiffDiffer, approxDiffer]
