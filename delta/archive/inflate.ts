/**
 * Raw-deflate decoding that also reports where the stream ended: gzip members and zip entries are
 * followed by more data (a trailer, the next header), and deflate is self-terminating, so the only
 * reliable way to find the end is to let the decoder tell us how much input it consumed.
 */
import { Inflate, type ZStream } from 'pako'
import type { Inflated } from '../approx/inflate.ts'
import { DeltaFormatError } from '../errors.ts'
import { concatBytes } from './bytes.ts'

/**
 * Decodes a raw deflate stream at the start of `input`; see inflateRawPrefix for the contract.
 * `overflowCode` (default `code`) is the error for output past `maxOutput`: a caller whose maxOutput is
 * a memory budget rather than a size the format declared names a limit code there (isLimitError), so
 * an archive too big for the budget is not reported as a damaged one.
 */
export type Inflater = (input: Uint8Array, maxOutput: number, code: string, overflowCode?: string) => Inflated

export type { Inflated }

/** Decodes the raw deflate stream starting at `input[0]`; throws DeltaFormatError `code` on damage. */
export function inflateRawPrefix(
  input: Uint8Array,
  maxOutput: number,
  code: string,
  overflowCode = code,
): Inflated {
  const inflator = new Inflate({ raw: true, chunkSize: 64 * 1024 })
  let strm: ZStream | null = null
  inflator.onStart = (s) => {
    strm = s
  }
  const chunks: Uint8Array[] = []
  let total = 0
  inflator.onData = (chunk) => {
    total += chunk.length
    // Zip-bomb guard: stop as soon as output passes the caller's budget instead of after the fact.
    if (total > maxOutput)
      throw new DeltaFormatError(overflowCode, `inflated data exceeds ${maxOutput} bytes`)
    chunks.push(chunk.slice())
  }
  let finished = false
  inflator.onEnd = (status) => {
    finished = status === 0
  }
  inflator.push(input, false)
  if (!finished || !inflator.ended || strm === null) {
    throw new DeltaFormatError(code, `bad or truncated deflate stream: ${inflator.msg || 'unexpected end'}`)
  }
  const s: ZStream = strm
  return { data: concatBytes(chunks), consumed: s.next_in }
}
