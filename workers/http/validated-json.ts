import { toHex } from '../publish/verify-object.ts'
import { etagListMatches } from './range.ts'

/** A strong validator of exactly `text`: 128 bits of its SHA-256, quoted. */
export async function etagOfText(text: string): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(text)))
  return `"${toHex(digest).slice(0, 32)}"`
}

/**
 * A cacheable JSON answer built per request, with a strong ETag over the exact bytes it would send: a
 * request whose If-None-Match names them gets an empty 304 with the same validator and Cache-Control
 * (RFC 9110 §13.1.2, §15.4.5). Because the validator covers every byte, a 304 never stands for an
 * answer that differs in anything, a signed statement inside it included.
 */
export async function validatedJson(request: Request, text: string, cacheControl: string): Promise<Response> {
  const headers = {
    'cache-control': cacheControl,
    'content-type': 'application/json',
    etag: await etagOfText(text),
  }
  const ifNoneMatch = request.headers.get('if-none-match')
  if (ifNoneMatch !== null && etagListMatches(ifNoneMatch, headers.etag))
    return new Response(null, { status: 304, headers })
  return new Response(text, { status: 200, headers })
}
