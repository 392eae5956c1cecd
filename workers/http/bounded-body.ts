import { concatBytes } from '../../delta/io.ts'
import { Problem } from './problem.ts'

/**
 * Reads a request body that may be gzip-compressed (agents compress telemetry), with a cap on the
 * bytes on the wire and a second cap on the inflated bytes, so a small "decompression bomb" costs the
 * edge no more than `maxInflatedBytes` of memory. Other encodings are refused (415).
 */
export async function readBoundedBody(
  request: Request,
  maxWireBytes: number,
  maxInflatedBytes: number,
): Promise<Uint8Array> {
  const encoding = (request.headers.get('content-encoding') ?? 'identity').trim().toLowerCase()
  if (encoding !== 'identity' && encoding !== 'gzip') {
    throw new Problem(
      415,
      'unsupported-media-type',
      `content-encoding ${encoding.slice(0, 64)} is not accepted (gzip or identity)`,
      // RFC 9110 §12.5.3: says which codings a request may use, so a client can tell this 415 from one
      // about the media type.
      { headers: { 'accept-encoding': 'gzip' } },
    )
  }
  const declared = Number(request.headers.get('content-length') ?? '0')
  if (declared > maxWireBytes) throw tooLarge(maxWireBytes, 'on the wire')
  if (!request.body) throw new Problem(400, 'bad-request', 'missing body')
  const wire = await collect(request.body, maxWireBytes, 'on the wire')
  if (encoding === 'identity') return wire
  try {
    const inflated = new Blob([wire]).stream().pipeThrough(new DecompressionStream('gzip'))
    return await collect(inflated, maxInflatedBytes, 'decompressed')
  } catch (error) {
    if (error instanceof Problem) throw error
    throw new Problem(400, 'bad-request', 'the body is not valid gzip')
  }
}

async function collect(stream: ReadableStream<Uint8Array>, max: number, what: string): Promise<Uint8Array> {
  const reader = stream.getReader()
  const parts: Uint8Array[] = []
  let total = 0
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    total += value.length
    if (total > max) {
      await reader.cancel()
      throw tooLarge(max, what)
    }
    parts.push(value)
  }
  return concatBytes(parts)
}

function tooLarge(max: number, what: string): Problem {
  return new Problem(413, 'payload-too-large', `the body is larger than ${max} bytes ${what}`)
}
