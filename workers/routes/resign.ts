import { Hono } from 'hono'
import { bodyLimit } from 'hono/body-limit'
import { z } from 'zod'
import { ArtifactName, Version } from '../../schemas/common.ts'
import { MAX_MANIFEST_BYTES, SignedManifest } from '../../schemas/manifest.ts'
import type { ManifestResigned } from '../../schemas/resign.ts'
import type { AppEnv } from '../app-env.ts'
import { requireMaintainer } from '../http/auth.ts'
import { Problem } from '../http/problem.ts'
import { identityBody } from '../http/upload-body.ts'
import { valid } from '../http/validate.ts'
import { assertMaintainerSigned } from '../publish/maintainer-keys.ts'
import { resignManifest } from '../storage/resign-manifest.ts'

const VersionParam = z.object({ name: ArtifactName, version: Version })

/** `PUT /v1/publish/:name/:version/manifest`: extend (or shorten) a published version's expiry. */
export const resignRouter = new Hono<AppEnv>().put(
  '/:name/:version/manifest',
  requireMaintainer,
  identityBody,
  bodyLimit({
    maxSize: MAX_MANIFEST_BYTES,
    onError: () => {
      throw new Problem(413, 'payload-too-large', 'the request body is too large')
    },
  }),
  valid('param', VersionParam),
  valid('json', SignedManifest),
  async (c) => {
    const { name, version } = c.req.valid('param')
    const envelope = c.req.valid('json')
    await assertMaintainerSigned(c.env, envelope, `the re-signed manifest of ${name}@${version}`)
    const result = await resignManifest(c.env.ARTIFACTS, name, version, envelope, new Date())
    const body: ManifestResigned = { name, version, ...result }
    return c.json(body)
  },
)
