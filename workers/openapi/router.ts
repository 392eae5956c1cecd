import { Hono } from 'hono'
import type { AppEnv } from '../app-env.ts'
import { etagListMatches } from '../http/range.ts'
import { etagOfText } from '../http/validated-json.ts'
import { buildOpenApiDocument } from './document.ts'

/** The document's text and its strong validator (a digest of the text), built once per isolate. */
let cached: Promise<{ text: string; etag: string }> | null = null

async function openApiDocument(): Promise<{ text: string; etag: string }> {
  const text = JSON.stringify(buildOpenApiDocument())
  return { text, etag: await etagOfText(text) }
}

/**
 * GET /openapi.json: the routes and schemas are static, so the document only changes with a deploy.
 * Cacheable for five minutes, and with a validator, so a client (or cache) that kept it revalidates
 * with If-None-Match and gets a 304 instead of the whole document again.
 */
export const openapiRouter = new Hono<AppEnv>().get('/', async (c) => {
  cached ??= openApiDocument()
  const { text, etag } = await cached
  const headers = { 'cache-control': 'public, max-age=300', 'content-type': 'application/json', etag }
  const ifNoneMatch = c.req.header('if-none-match')
  if (ifNoneMatch !== undefined && etagListMatches(ifNoneMatch, etag))
    return new Response(null, { status: 304, headers })
  return new Response(text, { status: 200, headers })
})
