import { Hono } from 'hono'
import { z } from 'zod'
import { ArtifactName, Version } from '../../schemas/common.ts'
import type { ServedIndex } from '../../schemas/index-statement.ts'
import type { AppEnv } from '../app-env.ts'
import { getRuntimeConfig } from '../config/runtime-config.ts'
import { serveImmutable } from '../http/edge-cache.ts'
import { Problem } from '../http/problem.ts'
import { etagListMatches } from '../http/range.ts'
import { IMMUTABLE_OBJECT, serveObject } from '../http/serve-object.ts'
import { valid } from '../http/validate.ts'
import { validatedJson } from '../http/validated-json.ts'
import { signIndex } from '../signing/index-statement.ts'
import { readIndex, requirePublished } from '../storage/artifact-store.ts'
import { keys } from '../storage/keys.ts'
import { withZoneReplica } from '../storage/zone-replicas.ts'

const NameParam = z.object({ name: ArtifactName })
const VersionParam = z.object({ name: ArtifactName, version: Version })

/** Read side for agents: the index, signed manifests, artifact bytes and chunk indexes. */
export const artifactsRouter = new Hono<AppEnv>()
  .get('/:name/:version/manifest', valid('param', VersionParam), async (c) => {
    const { name, version } = c.req.valid('param')
    const stored = await requirePublished(c.env.ARTIFACTS, name, version)
    const headers = {
      etag: stored.etag,
      // Short: only `expires` ever changes (re-signing, routes/resign.ts), and agents must see it soon.
      'cache-control': 'public, max-age=60',
      'content-type': 'application/json',
    }
    const ifNoneMatch = c.req.header('if-none-match')
    if (ifNoneMatch !== undefined && etagListMatches(ifNoneMatch, stored.etag)) {
      return new Response(null, { status: 304, headers })
    }
    return new Response(stored.raw, { status: 200, headers })
  })
  .on(['GET', 'HEAD'], '/:name/:version/blob', valid('param', VersionParam), (c) => {
    const { name, version } = c.req.valid('param')
    // Zone-aware: bytes from the zone's verified replica when the shard plan has one, else the primary.
    return withZoneReplica(c, `${name}@${version}`, (source) =>
      serveImmutable(c, async () => {
        const stored = await requirePublished(c.env.ARTIFACTS, name, version)
        const { size, sha256, mediaType } = stored.envelope.signed
        return serveObject(c.req.raw, source, keys.blob(name, version), size, {
          etag: `"${sha256}"`,
          cacheControl: IMMUTABLE_OBJECT,
          contentType: mediaType,
        })
      }),
    )
  })
  .on(['GET', 'HEAD'], '/:name/:version/chunks', valid('param', VersionParam), (c) =>
    serveImmutable(c, async () => {
      const { name, version } = c.req.valid('param')
      const stored = await requirePublished(c.env.ARTIFACTS, name, version)
      const ref = stored.envelope.signed.chunkIndex
      if (!ref) throw new Problem(404, 'not-found', `${name}@${version} was published without a chunk index`)
      return serveObject(c.req.raw, c.env.ARTIFACTS, keys.chunks(name, version), ref.size, {
        etag: `"${ref.sha256}"`,
        cacheControl: IMMUTABLE_OBJECT,
        contentType: 'application/vnd.deltaport.chunk-index',
      })
    }),
  )
  .get('/:name', valid('param', NameParam), async (c) => {
    const { name } = c.req.valid('param')
    const found = await readIndex(c.env.ARTIFACTS, name)
    if (!found) throw new Problem(404, 'not-found', `no artifact named ${name}`)
    const { index: lifetime } = await getRuntimeConfig(c.env)
    const statement = await signIndex(c.env, found.index, lifetime.statementTtlSeconds)
    const served: ServedIndex = statement ? { ...found.index, statement } : found.index
    // Mutable (a publish or yank changes it), so briefly cacheable, and revalidated by its ETag.
    return validatedJson(c.req.raw, JSON.stringify(served), 'public, max-age=10')
  })
