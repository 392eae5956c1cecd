/**
 * Who does the deflating when a target archive is rebuilt (apply) or its parameters are proved (create).
 *
 * pako is the reference: pure JavaScript, so it runs in the agent, the publish CLI and workerd, and
 * every delta is defined by what pako produces with the recorded parameters. A host may offer a faster
 * engine — the agent and the publisher pass Node's native zlib (client-agent/codec/native-deflate.ts),
 * about twice as fast at level 9 — which must produce pako's bytes for every parameter set it claims
 * (`handles`); anything it does not claim stays with pako. The rebuilt archive is still checked against
 * the container's CRC-32 and, in the agent, the manifest's sha256, so an engine that broke that promise
 * would fail the update (the agent then falls back to its next plan), never install wrong bytes.
 * docs/decisions/0016-native-deflate-engine.md.
 */
import type { DeflateHost, InflateHost } from '../approx/index.ts'
import { DeltaFormatError } from '../errors.ts'
import { type Inflated, type Inflater, inflateRawPrefix } from './inflate.ts'
import {
  type DeflateParams,
  deflateChunks,
  deflateWhole,
  ENGINE_MIN_INPUT,
  Recompressor,
} from './recompress.ts'

export { ENGINE_MIN_INPUT }

/** Incremental deflate of one stream: bytes in, compressed bytes out, in order. */
export interface DeflateStream {
  push(bytes: Uint8Array): Promise<readonly Uint8Array[]>
  finish(): Promise<readonly Uint8Array[]>
}

/** Its optional inflateRaw (InflateHost) also serves the approx blocks of inner deltas. */
export interface DeflateEngine extends InflateHost {
  readonly name: string
  /** True when this engine's output for `params` is byte-identical to pako's. */
  handles(params: DeflateParams): boolean
  /** Deflates all of `raw` at once (raw deflate, no zlib/gzip wrapper). */
  deflate(raw: Uint8Array, params: DeflateParams): Uint8Array
  open(params: DeflateParams): DeflateStream
  /**
   * Optional restarts for checkpointed rebuilds (checkpoints.ts): deflates `input` as a new stream whose
   * window is preset to `dictionary` (zlib's deflateSetDictionary; none when empty). The async form is
   * what lets a rebuild run pieces on several cores.
   */
  deflateResumedSync?(input: Uint8Array, params: DeflateParams, dictionary: Uint8Array): Uint8Array
  deflateResumed?(input: Uint8Array, params: DeflateParams, dictionary: Uint8Array): Promise<Uint8Array>
}

export const pakoEngine: DeflateEngine = {
  name: 'pako',
  handles: () => true,
  deflate: deflateWhole,
  open(params) {
    const r = new Recompressor(params)
    return {
      push: async (bytes) => r.push(bytes),
      finish: async () => r.finish(),
    }
  },
}

/**
 * The engine as the approx encoder's deflate (DeflateHost): its streams only have to inflate, not to
 * match pako, so any engine will do for any settings. None for pako itself, the encoder's default.
 */
export function deflateHostOf(engine: DeflateEngine | undefined): DeflateHost | undefined {
  if (!engine || engine === pakoEngine) return undefined
  return {
    deflateRaw: (raw, level, memLevel) =>
      engine.deflate(raw, { level, memLevel, windowBits: 15, strategy: 0, legacyHash: false }),
  }
}

/** `preferred` when it handles these parameters and the stream is big enough, else the pako reference. */
export function engineFor(
  preferred: DeflateEngine | undefined,
  params: DeflateParams,
  rawLength: number,
): DeflateEngine {
  return preferred && rawLength >= ENGINE_MIN_INPUT && preferred.handles(params) ? preferred : pakoEngine
}

/** Deflate output as chunks, for the synchronous rebuild: one piece from a whole-buffer engine. */
export function deflatePieces(
  preferred: DeflateEngine | undefined,
  raw: Uint8Array,
  params: DeflateParams,
): Iterable<Uint8Array> {
  const engine = engineFor(preferred, params, raw.length)
  return engine === pakoEngine ? deflateChunks(raw, params) : [engine.deflate(raw, params)]
}

/**
 * The inflater archive expansion uses: the engine's for every stream when it has one, pako otherwise.
 * Small streams too: an agent or publisher expands an archive in a fresh process, where pako's first
 * inflates run cold (a 30 KB tarball: ≈20 ms of its 75 ms delta creation), and even warm a native call
 * costs a third of pako's per small zip entry (11 against 29 µs for 2–3 KB entries).
 * Whatever the engine throws becomes the same DeltaFormatError pako's path would raise.
 */
export function inflaterFor(engine: DeflateEngine | undefined): Inflater {
  const native = engine?.inflateRaw?.bind(engine)
  if (!native) return inflateRawPrefix
  return (input, maxOutput, code, overflowCode = code) => {
    let out: Inflated
    try {
      out = native(input, maxOutput)
    } catch {
      // Damaged, or longer than maxOutput: an engine's errors do not say which in any one way, and the
      // two mean different things to the user (a bad delta, or a limit to raise). The reference
      // inflater tells them apart, on this failure path only, and stops at maxOutput as the engine did.
      return inflateRawPrefix(input, maxOutput, code, overflowCode)
    }
    // Held to pako's contract whatever the engine did.
    if (out.data.length > maxOutput)
      throw new DeltaFormatError(overflowCode, `inflated data exceeds ${maxOutput} bytes`)
    if (out.consumed <= 0 || out.consumed > input.length)
      throw new DeltaFormatError(code, 'inflater reported an impossible stream length')
    return out
  }
}
