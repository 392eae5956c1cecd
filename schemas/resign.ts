import { z } from 'zod'
import { ArtifactName, IsoDateTime, Version } from './common.ts'

/** Response of PUT /v1/publish/:name/:version/manifest: the re-signed manifest is in force. */
export const ManifestResigned = z.object({
  name: ArtifactName,
  version: Version,
  expires: IsoDateTime,
  previousExpires: IsoDateTime,
})
export type ManifestResigned = z.infer<typeof ManifestResigned>
