import { AgentError } from '../errors.ts'

/**
 * The bytes a request with Range asked for: `first` to `last` (inclusive) of an object of `total`
 * bytes, or of an object whose size is not known yet (null: the first range of a delta stream, which
 * carries the stream's description).
 */
export interface AskedRange {
  first: number
  last: number
  total: number | null
}

/**
 * A 206 is taken as the range asked for only if its Content-Range says it is exactly that range: a
 * cache or proxy in between may answer with another range (or with none), and those bytes taken at the
 * offset asked for would splice the wrong part of the object in. Such an answer is a network fault
 * (`network`, transient: the caller's retries ask again), its body cancelled unread, the message naming
 * the range asked and the Content-Range got (`details.wrongRange`, `details.contentRange`). `what`
 * starts the message (`delta stream range: `), empty for none. The full download and the delta
 * stream's ranges both check here.
 */
export async function assertRangeAsked(response: Response, asked: AskedRange, what = ''): Promise<void> {
  const header = response.headers.get('content-range')
  if (header !== null && namesRange(header, asked)) return
  await response.body?.cancel().catch(() => undefined)
  const got = header === null ? '(none)' : JSON.stringify(header.slice(0, 100))
  throw new AgentError(
    'network',
    `${what}asked for bytes ${asked.first}-${asked.last} of ${asked.total ?? 'the object'}, got a 206 with Content-Range ${got}`,
    { wrongRange: true, contentRange: header === null ? null : header.slice(0, 100) },
  )
}

/** `bytes first-last/total`, exactly; with no total known, any decimal total past `last` will do. */
function namesRange(header: string, asked: AskedRange): boolean {
  const prefix = `bytes ${asked.first}-${asked.last}/`
  if (!header.startsWith(prefix)) return false
  const total = header.slice(prefix.length)
  if (asked.total !== null) return total === String(asked.total)
  // At most 15 digits: a safe integer, so the comparison below is exact.
  return /^[1-9]\d{0,14}$/.test(total) && Number(total) > asked.last
}
