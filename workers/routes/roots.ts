import type { Context } from 'hono'
import { Hono } from 'hono'
import { z } from 'zod'
import { decimalParam } from '../../schemas/common.ts'
import { MAX_ROOT_BYTES, MAX_ROOT_VERSION, SignedRoot } from '../../schemas/root.ts'
import type { AppEnv } from '../app-env.ts'
import { requireMaintainer } from '../http/auth.ts'
import { readBoundedBody } from '../http/bounded-body.ts'
import { Problem } from '../http/problem.ts'
import { etagListMatches } from '../http/range.ts'
import { parseJsonBody, valid } from '../http/validate.ts'
import { maintainerSetting } from '../publish/maintainer-keys.ts'
import { publishRoot } from '../publish/roots.ts'
import { readLatestRoot, readRoot, type StoredRoot } from '../storage/roots.ts'

const VersionParam = z.object({ version: decimalParam(1, MAX_ROOT_VERSION) })

/** A stored root never changes (storage/roots.ts), so its answer may be kept as long as a blob's. */
const IMMUTABLE = 'public, max-age=31536000, immutable'
/** `latest` moves when a root is published; devices should see a rotation within seconds. */
const LATEST = 'public, max-age=5'

/**
 * Root metadata (ADR 0035). Public reads: `GET /v1/roots/:version` and `GET /v1/roots/latest`, the
 * chain devices follow from the root they ship with. Maintainer write: `PUT /v1/roots/:version`, checked
 * against the chain before it is stored (publish/roots.ts). A missing root is a 404 problem, never cached
 * (problem answers are `no-store`): devices poll for the root after theirs.
 */
export const rootsRouter = new Hono<AppEnv>()
  .get('/latest', async (c) => {
    const stored = await readLatestRoot(c.env.ARTIFACTS)
    if (!stored) throw new Problem(404, 'not-found', 'no root is published on this edge')
    const { version } = stored.envelope.signed
    return serveRoot(c, stored, LATEST, { 'content-location': `/v1/roots/${version}` })
  })
  .get('/:version', valid('param', VersionParam), async (c) => {
    const { version } = c.req.valid('param')
    const stored = await readRoot(c.env.ARTIFACTS, version)
    if (!stored) throw new Problem(404, 'not-found', `root ${version} is not published`)
    return serveRoot(c, stored, IMMUTABLE)
  })
  .put('/:version', requireMaintainer, valid('param', VersionParam), async (c) => {
    const { version } = c.req.valid('param')
    const body = await readBoundedBody(c.req.raw, MAX_ROOT_BYTES, MAX_ROOT_BYTES)
    const envelope = parseJsonBody(body, SignedRoot)
    if (envelope.signed.version !== version)
      throw new Problem(
        400,
        'bad-request',
        `the body is root ${envelope.signed.version}, not root ${version}`,
      )
    const setting = await maintainerSetting(c.env.MAINTAINER_KEYS)
    const pinned = setting && 'rootDigest' in setting ? setting.rootDigest : undefined
    const { outcome, raw } = await publishRoot(c.env.ARTIFACTS, envelope, new Date(), pinned)
    if (outcome === 'created')
      console.log(
        JSON.stringify({ level: 'info', msg: 'root published', version, expires: envelope.signed.expires }),
      )
    return new Response(raw, {
      status: outcome === 'created' ? 201 : 200,
      headers: { 'content-type': 'application/json', location: `/v1/roots/${version}` },
    })
  })

/** The stored bytes as published, with their validator: 304 when If-None-Match names them. */
function serveRoot(
  c: Context<AppEnv>,
  stored: StoredRoot,
  cacheControl: string,
  extra: Record<string, string> = {},
): Response {
  const headers = {
    etag: stored.etag,
    'cache-control': cacheControl,
    'content-type': 'application/json',
    ...extra,
  }
  const ifNoneMatch = c.req.header('if-none-match')
  if (ifNoneMatch !== undefined && etagListMatches(ifNoneMatch, stored.etag))
    return new Response(null, { status: 304, headers })
  return new Response(stored.raw, { status: 200, headers })
}
